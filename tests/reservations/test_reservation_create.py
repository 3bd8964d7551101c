import json

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from reservations.models import Allocation, AuditEntry, Membership, Reservation

from ..support import NEXT_SLOT, SLOT, book, client_for, iso

pytestmark = pytest.mark.usefixtures("frozen")
URL = "/api/v1/reservations/"


def post(client, body, **headers):
    return client.post(URL, body, format="json", **headers)


def nothing_written():
    return not Reservation.objects.exists() and not Allocation.objects.exists() and not AuditEntry.objects.exists()


def test_it_books_named_gpus_and_returns_the_contract_shape(api, cluster, owner):
    gpus = cluster["node1"][:2]
    response = post(api, {"gpus": [g.pk for g in gpus], "start": iso(NEXT_SLOT), "slots": 2, "title": "run 1"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {
        "id", "user", "team", "title", "gpus", "gpu_names", "start", "end", "slots", "priority",
        "preemptible", "borrowed", "status", "waitlist_position", "created", "preempted_by", "reclaim_at", "auto_rebook", "rebook_of",
        "series", "occurrence", "job", "serve",
        "warnings",
    }
    assert body["warnings"] == []
    assert body["gpus"] == [g.pk for g in gpus]
    assert body["gpu_names"] == ["node1/gpu0", "node1/gpu1"]
    assert body["start"] == "2030-01-07T10:00:00Z"
    assert body["end"] == "2030-01-07T14:00:00Z"
    assert (body["slots"], body["status"], body["user"], body["team"]) == (2, "confirmed", "owner", "vision")
    assert (body["priority"], body["preemptible"]) == ("normal", False)


def test_it_writes_an_audit_entry_with_the_booking(api, cluster, owner):
    response = post(api, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1})

    entry = AuditEntry.objects.get(reservation_id=response.json()["id"])
    assert (entry.action, entry.actor, entry.before) == ("create", owner, None)
    assert entry.after["gpus"] == [cluster["node1"][0].pk]
    assert entry.after["status"] == "confirmed"


def test_it_accepts_an_offset_and_answers_in_utc(api, cluster):
    response = post(api, {"gpus": [cluster["node1"][0].pk], "start": "2030-01-07T11:00:00+01:00", "slots": 1})

    assert response.status_code == 201, response.content
    assert response.json()["start"] == "2030-01-07T10:00:00Z"


def test_gpu_count_picks_gpus_on_one_node(api, cluster, owner):
    # node1 keeps only two GPUs free, node2 all four: a request for three must land on node2.
    book(owner, cluster["node1"][:2])
    response = post(api, {"gpu_count": 3, "start": iso(NEXT_SLOT), "slots": 1})

    assert response.status_code == 201, response.content
    assert response.json()["gpu_names"] == ["node2/gpu0", "node2/gpu1", "node2/gpu2"]


def test_gpu_count_prefers_the_fullest_node_that_fits(api, cluster, owner):
    book(owner, cluster["node2"][:3])
    response = post(api, {"gpu_count": 1, "start": iso(NEXT_SLOT), "slots": 1})

    assert response.json()["gpu_names"] == ["node2/gpu3"]


def test_gpu_count_spans_nodes_only_when_allowed(api, cluster, owner):
    book(owner, cluster["node1"][:2])
    book(owner, cluster["node2"][:2])

    refused = post(api, {"gpu_count": 4, "start": iso(NEXT_SLOT), "slots": 1})
    allowed = post(api, {"gpu_count": 4, "start": iso(NEXT_SLOT), "slots": 1, "allow_multi_node": True})

    assert refused.status_code == 409
    assert allowed.status_code == 201, allowed.content
    assert sorted(allowed.json()["gpu_names"]) == ["node1/gpu2", "node1/gpu3", "node2/gpu2", "node2/gpu3"]


def test_earliest_books_the_nearest_free_window(api, cluster, owner):
    gpu = cluster["node1"][0]
    book(owner, [gpu], start=NEXT_SLOT, slots=2)

    response = post(api, {"gpus": [gpu.pk], "start": "earliest", "slots": 1})

    assert response.status_code == 201, response.content
    assert response.json()["start"] == iso(NEXT_SLOT + 2 * SLOT)


def test_earliest_with_gpu_count_takes_the_first_slot_with_room(api, cluster, owner):
    book(owner, cluster["node1"] + cluster["node2"], start=NEXT_SLOT)

    response = post(api, {"gpu_count": 4, "start": "earliest", "slots": 1})

    assert response.json()["start"] == iso(NEXT_SLOT + SLOT)


def test_a_conflict_is_a_409_with_the_conflicts_and_nearest_suggestions(api, cluster, teammate):
    gpu = cluster["node1"][0]
    taken = book(teammate, [gpu], start=NEXT_SLOT, slots=1)

    response = post(api, {"gpus": [gpu.pk], "start": iso(NEXT_SLOT), "slots": 1})

    assert response.status_code == 409
    body = response.json()
    assert body["conflicts"] == [
        {"id": taken.pk, "gpu": gpu.pk, "start": iso(NEXT_SLOT), "end": iso(NEXT_SLOT + SLOT),
         "priority": "normal", "user": "teammate"}
    ]
    suggestions = body["suggestions"]
    assert 1 <= len(suggestions) <= 5
    # Nearest first: other GPUs at the very same time come before the same GPU later.
    assert suggestions[0]["start"] == iso(NEXT_SLOT) and suggestions[0]["gpus"] != [gpu.pk]
    assert {"gpus": [gpu.pk], "start": iso(NEXT_SLOT + SLOT), "end": iso(NEXT_SLOT + 2 * SLOT)} in suggestions
    starts = [s["start"] for s in suggestions]
    assert starts == sorted(starts)
    assert Reservation.objects.count() == 1


def test_a_partial_overlap_is_a_conflict(api, cluster, teammate):
    gpu = cluster["node1"][0]
    book(teammate, [gpu], start=NEXT_SLOT + SLOT, slots=1)

    response = post(api, {"gpus": [gpu.pk, cluster["node1"][1].pk], "start": iso(NEXT_SLOT), "slots": 2})

    assert response.status_code == 409


def test_back_to_back_bookings_do_not_conflict(api, cluster, teammate):
    gpu = cluster["node1"][0]
    book(teammate, [gpu], start=NEXT_SLOT, slots=1)

    response = post(api, {"gpus": [gpu.pk], "start": iso(NEXT_SLOT + SLOT), "slots": 1})

    assert response.status_code == 201


@pytest.mark.parametrize(
    "body, field",
    [
        ({"start": "2030-01-07T10:00:00", "slots": 1}, "start"),  # naive
        ({"start": "2030-01-07T11:00:00Z", "slots": 1}, "start"),  # not on a boundary
        ({"start": "2030-01-07T10:30:00Z", "slots": 1}, "start"),  # not on a boundary
        ({"start": "2030-01-07T08:00:00Z", "slots": 1}, "start"),  # in the past
        ({"start": "2030-02-10T00:00:00Z", "slots": 1}, "slots"),  # beyond the 28-day horizon
        ({"start": "2030-01-07T10:00:00Z", "slots": 400}, "slots"),  # ends beyond the horizon
        ({"start": "2030-01-07T10:00:00Z", "slots": 0}, "slots"),
        ({"start": "2030-01-07T10:00:00Z", "slots": -2}, "slots"),
        ({"start": "2030-01-07T10:00:00Z", "slots": "two"}, "slots"),
        ({"start": "2030-01-07T10:00:00Z", "slots": 1.5}, "slots"),
        ({"start": "tomorrow", "slots": 1}, "start"),
        ({"start": 12, "slots": 1}, "start"),
        ({"slots": 1}, "start"),
        ({"start": "2030-01-07T10:00:00Z"}, "slots"),
        ({"start": "2030-01-07T10:00:00Z", "slots": 1, "priority": "urgent"}, "priority"),
        ({"start": "2030-01-07T10:00:00Z", "slots": 1, "title": "x" * 201}, "title"),
        ({"start": "2030-01-07T10:00:00Z", "slots": 1, "team": "nope"}, "team"),
        ({"start": "2030-01-07T10:00:00Z", "slots": 1, "gpu_cnt": 2}, "gpu_cnt"),
        ({"start": "2030-01-07T10:00:00Z", "slots": 1, "job": {"model": "yolov8n.yaml"}}, "job"),
    ],
)
def test_bad_window_and_fields_are_400_with_the_field_and_nothing_written(api, cluster, body, field):
    response = post(api, {"gpus": [cluster["node1"][0].pk], **body})

    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert nothing_written()


@pytest.mark.parametrize(
    "selection, field",
    [
        ({}, "gpus"),  # neither gpus nor gpu_count
        ({"gpus": [1], "gpu_count": 1}, "gpus"),  # both
        ({"gpus": []}, "gpus"),
        ({"gpus": [999999]}, "gpus"),  # unknown
        ({"gpus": "1"}, "gpus"),  # wrong type
        ({"gpus": ["a"]}, "gpus"),
        ({"gpus": [0]}, "gpus"),
        ({"gpu_count": 0}, "gpu_count"),
        ({"gpu_count": -1}, "gpu_count"),
        ({"gpu_count": 5}, "gpu_count"),  # more than any one node has
        ({"gpu_count": 9, "allow_multi_node": True}, "gpu_count"),  # more than the cluster has
        ({"gpu_count": "many"}, "gpu_count"),
    ],
)
def test_bad_gpu_selection_is_a_400_with_the_field(api, cluster, selection, field):
    response = post(api, {"start": iso(NEXT_SLOT), "slots": 1, **selection})

    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert nothing_written()


def test_duplicate_gpus_are_refused(api, cluster):
    gpu = cluster["node1"][0]
    response = post(api, {"gpus": [gpu.pk, gpu.pk], "start": iso(NEXT_SLOT), "slots": 1})

    assert response.status_code == 400
    assert "more than once" in response.json()["gpus"][0]
    assert nothing_written()


def test_an_unhealthy_gpu_cannot_be_booked(api, cluster):
    gpu = cluster["node1"][0]
    gpu.healthy = False
    gpu.save()

    response = post(api, {"gpus": [gpu.pk], "start": iso(NEXT_SLOT), "slots": 1})

    assert response.status_code == 400
    assert "node1/gpu0" in response.json()["gpus"][0]


def test_malformed_json_is_a_400(api, cluster):
    response = api.post(URL, '{"gpus": [1', content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert nothing_written()


def test_a_body_that_is_not_an_object_is_a_400(api, cluster):
    response = api.post(URL, "[1, 2]", content_type="application/json")

    assert response.status_code == 400
    assert nothing_written()


@override_settings(API_MAX_BODY_BYTES=2048)
def test_an_oversize_body_is_a_413(api, cluster):
    body = json.dumps({"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "title": "x" * 4000})

    response = api.post(URL, body, content_type="application/json")

    assert response.status_code == 413
    assert "larger than 2048 bytes" in response.json()["detail"]
    assert nothing_written()


def test_anonymous_requests_get_401(cluster):
    response = APIClient().post(URL, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1}, format="json")

    assert response.status_code == 401
    assert nothing_written()


def test_high_priority_needs_the_permission(api, cluster):
    response = post(api, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "priority": "high"})

    assert response.status_code == 403
    assert "detail" in response.json()
    assert nothing_written()


def test_a_user_with_the_permission_books_high_and_it_is_never_preemptible(cluster, high_booker):
    client = client_for(high_booker)
    ok = post(client, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "priority": "high"})
    refused = post(
        client,
        {"gpus": [cluster["node1"][1].pk], "start": iso(NEXT_SLOT), "slots": 1, "priority": "high", "preemptible": True},
    )

    assert ok.status_code == 201 and ok.json()["preemptible"] is False
    assert refused.status_code == 400 and "preemptible" in refused.json()


def test_low_priority_is_preemptible_unless_said_otherwise(api, cluster):
    default = post(api, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "priority": "low"})
    explicit = post(
        api, {"gpus": [cluster["node1"][1].pk], "start": iso(NEXT_SLOT), "slots": 1, "priority": "low", "preemptible": False}
    )

    assert default.json()["preemptible"] is True
    assert explicit.json()["preemptible"] is False


def test_a_user_cannot_charge_another_teams_budget(api, cluster, other_team):
    response = post(api, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "team": "nlp"})

    assert response.status_code == 400
    assert "not a member" in response.json()["team"][0]


def test_a_user_in_several_teams_must_name_one(api, cluster, owner, other_team):
    Membership.objects.create(team=other_team, user=owner)
    unnamed = post(api, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1})
    named = post(api, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "team": "nlp"})

    assert unnamed.status_code == 400 and "team" in unnamed.json()
    assert named.status_code == 201 and named.json()["team"] == "nlp"



def test_earliest_with_an_unknown_gpu_names_the_gpu(api, cluster):
    response = post(api, {"gpus": [999999], "start": "earliest", "slots": 1})

    assert response.status_code == 400
    assert "No such GPU" in response.json()["gpus"][0]
