"""Moving a booking that has not begun onto other GPUs (off one the health check took out): the
service, and POST /api/v1/reservations/{id}/move/."""

import pytest

from reservations import services
from reservations.errors import BookingConflict, BookingError
from reservations.models import AuditEntry, GPU

from ..support import NEXT_SLOT, SLOT, book, iso

pytestmark = pytest.mark.usefixtures("frozen")


def gpus_of(reservation):
    return sorted(reservation.allocations.values_list("gpu_id", flat=True))


def test_a_booking_moves_whole_onto_other_gpus_and_the_audit_says_from_where(owner, cluster):
    reservation = book(owner, cluster["node1"][:2])
    target = [g.pk for g in cluster["node2"][:2]]

    services.reservation_move(
        reservation_id=reservation.pk, actor=owner, start=NEXT_SLOT + SLOT, slots=1, gpu_ids=target, reason="off gpu0"
    )

    reservation.refresh_from_db()
    assert gpus_of(reservation) == target and reservation.start == NEXT_SLOT + SLOT
    assert set(reservation.allocations.values_list("start", "end")) == {(NEXT_SLOT + SLOT, NEXT_SLOT + 2 * SLOT)}
    entry = AuditEntry.objects.get(reservation=reservation, action="move")
    assert entry.before["gpus"] == [g.pk for g in cluster["node1"][:2]] and entry.after["gpus"] == target


def test_a_move_needs_as_many_healthy_free_gpus_as_it_holds(owner, outsider, cluster):
    reservation = book(owner, cluster["node1"][:2])
    book(outsider, cluster["node2"][1:2])
    GPU.objects.filter(pk=cluster["node2"][3].pk).update(healthy=False)

    def move(gpus):
        services.reservation_move(
            reservation_id=reservation.pk, actor=owner, start=NEXT_SLOT, slots=1, gpu_ids=[g.pk for g in gpus]
        )

    with pytest.raises(BookingError, match="as many GPUs as it holds"):
        move(cluster["node2"][:1])
    with pytest.raises(BookingError, match="Not healthy"):
        move(cluster["node2"][2:4])
    with pytest.raises(BookingConflict):
        move(cluster["node2"][:2])
    assert gpus_of(reservation) == [g.pk for g in cluster["node1"][:2]]


def test_the_api_moves_a_booking_to_the_gpus_and_start_given(api, owner, cluster):
    reservation = book(owner, cluster["node1"][:1])

    response = api.post(
        f"/api/v1/reservations/{reservation.pk}/move/",
        {"start": iso(NEXT_SLOT + SLOT), "slots": 2, "gpus": [cluster["node2"][0].pk]}, format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["gpus"], body["start"], body["slots"]) == ([cluster["node2"][0].pk], iso(NEXT_SLOT + SLOT), 2)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"slots": 1}, "start"), ({"start": "2030-01-07T10:00:00", "slots": 1}, "start"), ({"start": "x", "slots": 0}, "slots"),
     ({"start": "2030-01-07T10:00:00Z", "slots": 1, "gpus": []}, "gpus"), ({"start": "2030-01-07T10:00:00Z", "slots": 1, "x": 1}, "x")],
)
def test_a_bad_move_is_a_400_naming_the_field(api, owner, cluster, body, field):
    reservation = book(owner, cluster["node1"][:1])

    response = api.post(f"/api/v1/reservations/{reservation.pk}/move/", body, format="json")

    assert response.status_code == 400 and field in response.json()
