"""POST /api/v1/series/ and its actions, as a CI pipeline calls them (docs/api.md, "Series")."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reservations.models import AuditEntry, Reservation, Series

from ..support import FROZEN_NOW, NEXT_SLOT, SLOT, book, client_for, iso

pytestmark = pytest.mark.usefixtures("frozen")
URL = "/api/v1/series/"
DAY = timedelta(days=1)
NIGHT = NEXT_SLOT + 7 * SLOT  # 00:00 UTC, Tuesday 8 January 2030


def body(gpus, **extra):
    return {
        "gpus": [g.pk for g in gpus], "start": iso(NIGHT), "slots": 2, "title": "nightly fine-tune",
        "recurrence": "FREQ=DAILY;COUNT=30", **extra,
    }


def test_one_request_books_every_night_within_the_horizon_and_says_which(api, cluster):
    response = api.post(URL, body(cluster["node1"]), format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["recurrence"] == "FREQ=DAILY;COUNT=30" and data["timezone"] == "UTC"
    assert data["description"] == "every day at 00:00 UTC, 30 times"
    statuses = [o["status"] for o in data["occurrences"]]
    # A 28-day horizon from Monday 09:17: the nights up to 4 February are booked, the rest later.
    assert statuses.count("confirmed") == 28 and statuses.count("later") == 2
    assert len(data["booked"]) == 28 and data["skipped"] == [] and data["waitlisted"] == []
    first = Reservation.objects.get(pk=data["occurrences"][0]["reservation"])
    assert first.series_id == data["id"] and first.start == NIGHT
    shown = api.get(f"/api/v1/reservations/{first.pk}/").json()
    assert shown["series"] == data["id"] and shown["occurrence"] == iso(NIGHT)


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"recurrence": "FREQ=SECONDLY;COUNT=3"}, "recurrence"),
        ({"recurrence": "FREQ=DAILY"}, "recurrence"),
        ({"recurrence": "FREQ=DAILY;COUNT=400"}, "recurrence"),
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"start": iso(NIGHT + timedelta(minutes=30))}, "start"),
        ({"start": "earliest"}, "start"),
        ({"on_conflict": "maybe"}, "on_conflict"),
        ({"waitlist": True}, "waitlist"),
        ({"slots": 13}, "slots"),
    ],
)
def test_what_a_series_may_not_be_is_a_400_naming_the_field(api, cluster, extra, field):
    response = api.post(URL, body(cluster["node1"][:1], **extra), format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()
    assert not Series.objects.exists()


def test_fail_is_a_409_listing_each_taken_night_with_its_conflicts_and_suggestions(api, cluster, teammate):
    gpus = cluster["node1"][:1]
    taken = [book(teammate, gpus, start=NIGHT + n * DAY) for n in (2, 5)]
    response = api.post(URL, body(gpus, recurrence="FREQ=DAILY;COUNT=7"), format="json")
    assert response.status_code == 409
    data = response.json()
    assert data["code"] == "series_conflict" and "nothing was booked" in data["detail"]
    assert [o["start"] for o in data["occurrences"]] == [iso(NIGHT + 2 * DAY), iso(NIGHT + 5 * DAY)]
    assert [o["conflicts"][0]["id"] for o in data["occurrences"]] == [r.pk for r in taken]
    assert all(o["state"] == "taken" and o["suggestions"] for o in data["occurrences"])
    assert not Reservation.objects.filter(series__isnull=False).exists()


def test_skip_answers_which_nights_it_got_and_which_not(api, cluster, teammate):
    gpus = cluster["node1"][:1]
    book(teammate, gpus, start=NIGHT + DAY)
    data = api.post(URL, body(gpus, recurrence="FREQ=DAILY;COUNT=3", on_conflict="skip"), format="json").json()
    assert [o["start"] for o in data["booked"]] == [iso(NIGHT), iso(NIGHT + 2 * DAY)]
    assert [o["start"] for o in data["skipped"]] == [iso(NIGHT + DAY)]
    assert "already booked" in data["skipped"][0]["reason"]
    assert [o["status"] for o in data["occurrences"]] == ["confirmed", "skipped", "confirmed"]


def test_cancel_change_and_transfer_through_the_api(api, cluster, owner, teammate):
    data = api.post(URL, body(cluster["node1"][:1], recurrence="FREQ=WEEKLY;BYDAY=TU,FR;COUNT=6"), format="json").json()
    url = f"{URL}{data['id']}/"
    second = data["occurrences"][1]["start"]
    response = api.post(url + "cancel/", {"scope": "one", "occurrence": second}, format="json")
    assert response.status_code == 200
    assert [o["status"] for o in response.json()["occurrences"]][:3] == ["confirmed", "cancelled", "confirmed"]
    assert api.post(url + "cancel/", {"scope": "one"}, format="json").json() == {
        "occurrence": ["Name the occurrence (its start) to cancel."]
    }
    assert "occurrence" in api.post(url + "cancel/", {"scope": "one", "occurrence": iso(NIGHT + SLOT)}, format="json").json()
    response = api.post(url + "change/", {"title": "weekly eval", "priority": "low"}, format="json")
    assert response.status_code == 200 and response.json()["title"] == "weekly eval"
    assert set(Reservation.objects.filter(series_id=data["id"], status="confirmed").values_list("title", flat=True)) == {"weekly eval"}
    assert api.post(url + "change/", {}, format="json").status_code == 400
    response = api.post(url + "transfer/", {"to": teammate.username}, format="json")
    assert response.status_code == 200 and response.json()["user"] == teammate.username
    # The owner now is the teammate: the former owner may no longer change it.
    assert api.post(url + "cancel/", {"scope": "all"}, format="json").status_code == 403
    response = client_for(teammate).post(url + "cancel/", {"scope": "following", "occurrence": data["occurrences"][3]["start"]}, format="json")
    assert [o["status"] for o in response.json()["occurrences"]] == ["confirmed", "cancelled", "confirmed"] + ["cancelled"] * 3
    actions = list(AuditEntry.objects.filter(target=f"series:{data['id']}").order_by("id").values_list("action", flat=True))
    assert actions == ["series_create", "series_cancel", "series_change", "series_change", "series_cancel"]


def test_a_series_made_before_the_most_occurrences_was_lowered_still_reads(api, cluster, settings, admin_client):
    made = api.post(URL, body(cluster["node1"][:1], recurrence="FREQ=DAILY;COUNT=5"), format="json").json()
    settings.SERIES_MAX_OCCURRENCES = 3

    shown = api.get(f"{URL}{made['id']}/")
    assert shown.status_code == 200 and len(shown.json()["occurrences"]) == 5
    assert shown.json()["description"] == "every day at 00:00 UTC, 5 times"
    assert admin_client.get("/admin/reservations/series/").status_code == 200
    cancel = api.post(f"{URL}{made['id']}/cancel/", {"scope": "one", "occurrence": iso(NIGHT + 4 * DAY)}, format="json")
    assert cancel.status_code == 200 and cancel.json()["occurrences"][4]["status"] == "cancelled"
    # A new series is held to the new most.
    refused = api.post(URL, body(cluster["node1"][1:2], recurrence="FREQ=DAILY;COUNT=5"), format="json")
    assert refused.status_code == 400 and "recurrence" in refused.json()


def test_a_retry_with_the_same_key_gets_the_same_series(api, cluster):
    headers = {"HTTP_IDEMPOTENCY_KEY": "nightly-2030-01"}
    first = api.post(URL, body(cluster["node1"][:1], recurrence="FREQ=DAILY;COUNT=3"), format="json", **headers)
    again = api.post(URL, body(cluster["node1"][:1], recurrence="FREQ=DAILY;COUNT=3"), format="json", **headers)
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]
    # The same answer: which nights it got.
    assert again.json()["booked"] == first.json()["booked"] and len(again.json()["booked"]) == 3
    assert Series.objects.count() == 1 and Reservation.objects.count() == 3
    other = api.post(URL, body(cluster["node1"][:1], recurrence="FREQ=DAILY;COUNT=4"), format="json", **headers)
    assert other.status_code == 422


def test_the_list_is_the_callers_teams_and_the_job_template_is_theirs_only(api, cluster, outsider, training_data):
    job = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 3, "imgsz": 64, "batch": 4}
    data = api.post(URL, body(cluster["node1"][:1], recurrence="FREQ=DAILY;COUNT=2", job=job), format="json").json()
    assert data["job"]["epochs"] == 3
    stranger = client_for(outsider)
    assert stranger.get(URL).json()["results"] == []
    shown = stranger.get(f"{URL}{data['id']}/").json()
    assert shown["job"] is None and len(shown["occurrences"]) == 2
    assert api.get(URL).json()["results"][0]["id"] == data["id"]


def test_a_series_reads_the_same_number_of_queries_at_3_occurrences_as_at_28(api, cluster):
    counts = []
    for count, gpu in ((3, cluster["node1"][0]), (28, cluster["node1"][1])):
        data = api.post(URL, body([gpu], recurrence=f"FREQ=DAILY;COUNT={count}", on_conflict="skip"), format="json").json()
        api.get(f"{URL}{data['id']}/")  # warm the token and session caches
        with CaptureQueriesContext(connection) as queries:
            assert len(api.get(f"{URL}{data['id']}/").json()["occurrences"]) == count
        counts.append(len(queries))
    assert counts[0] == counts[1]
    with CaptureQueriesContext(connection) as queries:
        assert len(api.get(URL).json()["results"]) == 2
    assert len(queries) <= counts[0]


def test_a_teammates_list_of_series_reads_the_same_queries_at_2_series_as_at_6(api, cluster, teammate):
    mate = client_for(teammate)
    counts = []
    for gpus in (cluster["node1"][:2], cluster["node1"][2:] + cluster["node2"][:2]):
        for gpu in gpus:
            api.post(URL, body([gpu], recurrence="FREQ=DAILY;COUNT=2"), format="json")
        mate.get(URL)  # warm the token and session caches
        with CaptureQueriesContext(connection) as queries:
            listed = mate.get(URL).json()
        assert all(s["job"] is None and s["user"] == "owner" for s in listed["results"])
        counts.append((len(listed["results"]), len(queries)))
    assert [n for n, _ in counts] == [2, 6] and counts[0][1] == counts[1][1]
    assert "count" not in listed and listed["next"] is None  # keyset pages: no count of every series
