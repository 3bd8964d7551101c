"""Input that once answered 500 (or Django's HTML 400): each is a 4xx in the API's JSON that says what
was wrong, and nothing is written."""

import json

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from reservations.api.parsers import MAX_JSON_DEPTH
from reservations.models import Reservation

from ..support import NEXT_SLOT, client_for, iso, page_client

pytestmark = pytest.mark.usefixtures("frozen")
URL = "/api/v1/reservations/"

# The first two are free slot boundaries in UTC, so only the offset itself can be refused.
BAD_DATETIMES = [
    pytest.param("2030-01-07T13:48:00-20:12", id="offset-postgresql-cannot-hold"),
    pytest.param("2030-01-08T02:00:00+16:00", id="offset-one-past-postgresql"),
    pytest.param("9999-12-31T20:00:00-14:00", id="overflows-after-year-9999"),
    pytest.param("0001-01-01T02:00:00+14:00", id="overflows-before-year-1"),
    # Holds in UTC, but adding slots to it would overflow.
    pytest.param("9999-12-31T22:00:00Z", id="no-room-after-it"),
]


@pytest.fixture
def roots(tmp_path, settings):
    data_root, model_root = tmp_path / "datasets", tmp_path / "models"
    data_root.mkdir()
    model_root.mkdir()
    (data_root / "data.yaml").write_text("path: .\n")
    settings.TRAINING_DATA_ROOTS = [data_root.resolve()]
    settings.MODEL_ROOTS = [model_root.resolve()]
    return tmp_path


@pytest.fixture(params=["token", "session"])
def caller(request, owner):
    """`owner` through the API by token, or from a browser signed in to the site (a session, with
    the CSRF cookie and header the site's scripts send)."""
    if request.param == "token":
        return client_for(owner)
    client = APIClient(enforce_csrf_checks=True, HTTP_X_CSRFTOKEN="c" * 32)
    client.cookies["csrftoken"] = "c" * 32
    client.force_login(owner)
    return client


def ten_megabytes(cluster):
    """A booking whose title makes it 10 MB."""
    body = {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "title": "x" * (10 << 20)}
    return json.dumps(body).encode()


def nested_list(depth):
    return "[" * depth + "]" * depth


def post_raw(api, body):
    return api.generic("POST", URL, body, content_type="application/json")


@pytest.mark.parametrize("moment", BAD_DATETIMES)
def test_it_rejects_a_start_out_of_range_and_books_nothing(api, cluster, moment):
    response = api.post(URL, {"gpus": [cluster["node1"][0].pk], "start": moment, "slots": 1}, format="json")

    assert response.status_code == 400, response.content
    assert list(response.json()) == ["start"]
    assert Reservation.objects.count() == 0


@pytest.mark.parametrize("moment", BAD_DATETIMES)
@pytest.mark.parametrize(
    "path, parameter",
    [
        ("/api/v1/reservations/", "start"),
        ("/api/v1/reservations/", "end"),
        ("/api/v1/availability/", "after"),
        ("/api/v1/audit/", "since"),
    ],
)
def test_it_rejects_a_query_datetime_out_of_range_naming_the_parameter(staff, cluster, path, parameter, moment):
    response = client_for(staff).get(path, {parameter: moment})

    assert response.status_code == 400, response.content
    assert list(response.json()) == [parameter]


def test_it_reads_a_query_datetime_with_a_far_offset_as_the_same_instant_in_utc(api, cluster):
    booked = api.post(URL, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1}, format="json")
    assert booked.status_code == 201, booked.content

    # The booking is 10:00-12:00Z; `start` keeps bookings that end after it. 01:59+15:59 next day is
    # 10:00Z (it matches), 04:00+15:59 is 12:01Z (it does not).
    inside = api.get(URL, {"start": "2030-01-08T01:59:00+15:59"})
    after = api.get(URL, {"start": "2030-01-08T04:00:00+15:59"})

    assert [row["id"] for row in inside.json()["results"]] == [booked.json()["id"]]
    assert after.json()["results"] == []


def test_it_rejects_a_body_nested_a_thousand_deep_and_books_nothing(api, cluster):
    response = post_raw(api, nested_list(1000))

    assert response.status_code == 400, response.content
    assert "nested" in response.json()["detail"]
    assert Reservation.objects.count() == 0


def test_it_rejects_a_job_cache_nested_a_thousand_deep_and_books_nothing(api, cluster, roots):
    body = json.dumps(
        {
            "gpus": [cluster["node1"][0].pk],
            "start": iso(NEXT_SLOT),
            "slots": 1,
            "job": {"model": "yolov8n.yaml", "data": str(roots / "datasets/data.yaml"), "cache": "@"},
        }
    ).replace('"@"', nested_list(1000))

    response = post_raw(api, body)

    assert response.status_code == 400, response.content
    assert "nested" in response.json()["detail"]
    assert Reservation.objects.count() == 0


def test_it_reads_a_body_nested_to_the_limit_and_answers_for_the_field(api, cluster):
    body = json.dumps({"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1})
    at_limit = body.replace('"slots": 1', '"slots": ' + nested_list(MAX_JSON_DEPTH - 1))  # in an object
    past_limit = body.replace('"slots": 1', '"slots": ' + nested_list(MAX_JSON_DEPTH))

    assert list(post_raw(api, at_limit).json()) == ["slots"]
    assert "nested" in post_raw(api, past_limit).json()["detail"]


def test_it_counts_brackets_in_strings_as_text_not_nesting(api, cluster):
    title = '[{"\\' * 20
    body = json.dumps({"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "title": title})

    response = post_raw(api, body)

    assert response.status_code == 201, response.content
    assert response.json()["title"] == title


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('{"gpu_count": 1, "start": "%s", "slots": 1, "title": "\\ud800"}', id="in-a-value"),
        pytest.param('{"gpu_count": 1, "start": "%s", "slots": 1, "\\udc00": 1}', id="in-an-unknown-key"),
        pytest.param('{"gpu_count": 1, "start": "%s", "slots": 1, "priority": "\\ud800"}', id="in-a-choice"),
    ],
)
def test_it_rejects_half_a_surrogate_pair_and_books_nothing(api, cluster, body):
    response = post_raw(api, body % iso(NEXT_SLOT))

    assert response.status_code == 400, response.content
    assert "surrogate" in response.json()["detail"]
    assert Reservation.objects.count() == 0


def test_it_accepts_a_whole_surrogate_pair(api, cluster):
    body = '{"gpu_count": 1, "start": "%s", "slots": 1, "title": "\\ud83d\\ude80"}' % iso(NEXT_SLOT)

    response = post_raw(api, body)

    assert response.status_code == 201, response.content
    assert response.json()["title"] == "\N{ROCKET}"


@pytest.mark.parametrize(
    "make_path, message",
    [
        pytest.param(lambda root, suffix: root / ("a" * 300 + suffix), "too long", id="name-too-long"),
        pytest.param(lambda root, suffix: root / ("loop" + suffix), "symlink loop", id="symlink-loop"),
        pytest.param(lambda root, suffix: root / "loop" / ("data" + suffix), "symlink loop", id="through-a-loop"),
    ],
)
@pytest.mark.parametrize("key, folder, suffix", [("data", "datasets", ".yaml"), ("model", "models", ".pt")])
def test_it_rejects_a_job_path_the_file_system_cannot_resolve_and_books_nothing(
    api, cluster, roots, make_path, message, key, folder, suffix
):
    root = roots / folder
    (root / "loop").symlink_to(root / "loop")
    (root / ("loop" + suffix)).symlink_to(root / ("loop" + suffix))
    spec = {"model": "yolov8n.yaml", "data": str(roots / "datasets/data.yaml")}
    spec[key] = str(make_path(root, suffix))

    response = api.post(
        URL, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "job": spec}, format="json"
    )

    assert response.status_code == 400, response.content
    assert list(response.json()) == ["job"]
    assert message in response.json()["job"][key][0]
    assert Reservation.objects.count() == 0


def test_a_10_mb_json_body_is_a_413_in_json_and_books_nothing(caller, cluster):
    response = caller.generic("POST", URL, ten_megabytes(cluster), content_type="application/json")

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes."}
    assert Reservation.objects.count() == 0


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=b"])
def test_a_10_mb_form_body_is_a_415_in_json_and_books_nothing(caller, cluster, content_type):
    response = caller.generic("POST", URL, ten_megabytes(cluster), content_type=content_type)

    assert response.status_code == 415
    assert response["Content-Type"] == "application/json"
    assert "Unsupported media type" in response.json()["detail"]
    assert Reservation.objects.count() == 0


def test_a_10_mb_body_to_the_token_endpoint_is_a_413_in_json(db):
    body = json.dumps({"username": "owner", "password": "x" * (10 << 20)})

    response = APIClient().generic("POST", "/api/v1/auth/token/", body, content_type="application/json")

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "larger than" in response.json()["detail"]


# Past a signed 64-bit integer: SQLite cannot compare a column with it at all.
HUGE_ID = "99999999999999999999"


@pytest.mark.parametrize(
    "path, parameter", [("/api/v1/reservations/", "gpu"), ("/api/v1/audit/", "reservation")]
)
def test_it_rejects_an_id_filter_larger_than_any_id_naming_the_parameter(staff, cluster, path, parameter):
    response = client_for(staff).get(path, {parameter: HUGE_ID})

    assert response.status_code == 400
    assert parameter in response.json()


@pytest.mark.parametrize(
    "path", [f"/api/v1/{name}/{HUGE_ID}/" for name in ("reservations", "gpus", "nodes", "notices", "audit", "jobs",
                                                       "replicas", "models")],
)
def test_an_id_in_the_api_path_larger_than_any_id_is_no_such_thing(staff, cluster, path):
    assert client_for(staff).get(path).status_code == 404


@pytest.mark.parametrize("path", [f"/bookings/{HUGE_ID}/", f"/bookings/{HUGE_ID}/job/", f"/bookings/{HUGE_ID}/checkpoint/"])
def test_an_id_in_a_page_path_larger_than_any_id_is_no_such_booking(staff, cluster, path):
    assert page_client(staff).get(path).status_code == 404
