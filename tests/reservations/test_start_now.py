"""`"start": "now"`: the rest of the current slot plus any further slots, when free."""

from datetime import timedelta

import pytest

from reservations import services
from reservations.errors import BookingError
from reservations.models import Reservation

from ..support import FROZEN_NOW, NEXT_SLOT, SLOT, book, iso

pytestmark = pytest.mark.usefixtures("frozen")
URL = "/api/v1/reservations/"


def test_a_booking_from_now_runs_to_the_end_of_the_current_slot(api, cluster):
    response = api.post(URL, {"gpus": [cluster["node1"][0].pk], "start": "now", "slots": 1}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["start"], body["end"], body["slots"]) == (iso(FROZEN_NOW), iso(NEXT_SLOT), 1)
    services.reservations_advance()
    assert Reservation.objects.get(pk=body["id"]).status == "active"


def test_further_slots_follow_the_current_one(api, cluster):
    response = api.post(URL, {"gpu_count": 2, "start": "now", "slots": 3}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["start"], body["end"], len(body["gpus"])) == (iso(FROZEN_NOW), iso(NEXT_SLOT + 2 * SLOT), 2)


def test_a_booking_from_now_on_taken_gpus_is_a_409_with_what_is_in_the_way(api, cluster, teammate):
    gpu = cluster["node1"][0]
    taken = services.reservation_create(  # the slot in progress, booked before it began
        user=teammate, gpu_ids=[gpu.pk], start=NEXT_SLOT - SLOT, slots=1, now=FROZEN_NOW - timedelta(hours=2)
    )

    response = api.post(URL, {"gpus": [gpu.pk], "start": "now", "slots": 2}, format="json")

    assert response.status_code == 409
    assert [c["id"] for c in response.json()["conflicts"]] == [taken.pk]
    assert response.json()["suggestions"]
    assert Reservation.objects.count() == 1


def test_a_booking_from_now_never_preempts(cluster, owner, high_booker, api):
    gpu = cluster["node1"][0]
    low = book(owner, [gpu], start=NEXT_SLOT, priority="low")

    from_now = api.post(URL, {"gpus": [gpu.pk], "start": "now", "slots": 2, "priority": "normal"}, format="json")

    assert from_now.status_code == 409
    low.refresh_from_db()
    assert low.preempted_by is None and low.status == "confirmed"


def test_the_horizon_still_bounds_a_booking_from_now(api, cluster):
    response = api.post(URL, {"gpus": [cluster["node1"][0].pk], "start": "now", "slots": 12 * 28 + 1}, format="json")

    assert response.status_code == 400 and "slots" in response.json()


def test_a_booking_from_now_cannot_be_moved_once_begun(api, cluster, owner):
    body = api.post(URL, {"gpus": [cluster["node1"][0].pk], "start": "now", "slots": 1}, format="json").json()

    with pytest.raises(BookingError) as refused:
        services.reservation_move(reservation_id=body["id"], actor=owner, start=NEXT_SLOT + SLOT, slots=1)

    assert refused.value.field == "start"
    assert Reservation.objects.get(pk=body["id"]).start == FROZEN_NOW
