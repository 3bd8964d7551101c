"""The lock order (reservations, then GPUs, then jobs) holds on every path, because no service that
locks runs inside someone else's transaction: real PostgreSQL, real threads."""

from datetime import timedelta

import pytest
from django.db import transaction

from reservations import services
from reservations.errors import BookingConflict
from reservations.models import Reservation

from ..support import NEXT_SLOT, SLOT, at_once, book, client_for, iso, overlapping_live_pairs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("frozen")]
ROUNDS = 30


@pytest.mark.parametrize(
    "service",
    [
        lambda owner, gpus, reservation: services.reservation_create(
            user=owner, gpu_ids=[gpus[1].pk], start=NEXT_SLOT, slots=1
        ),
        lambda owner, gpus, reservation: services.reservation_cancel(reservation_id=reservation.pk, actor=owner),
        lambda owner, gpus, reservation: services.reservation_move(
            reservation_id=reservation.pk, actor=owner, start=NEXT_SLOT + SLOT, slots=1
        ),
        lambda owner, gpus, reservation: services.waitlist_promote(),
        lambda owner, gpus, reservation: services.reservation_reclaim(reservation_id=reservation.pk),
        lambda owner, gpus, reservation: services.reservation_release_early(reservation_id=reservation.pk, reason="x"),
    ],
    ids=["create", "cancel", "move", "waitlist", "reclaim", "release"],
)
def test_a_locking_service_refuses_to_run_inside_another_transaction(cluster, owner, service):
    gpus = cluster["node1"]
    reservation = book(owner, gpus[:1])
    book(owner, gpus[:1], waitlist=True)  # something for the waitlist sweep to look at

    with pytest.raises(RuntimeError, match="durable"), transaction.atomic():
        service(owner, gpus, reservation)

    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CONFIRMED and reservation.start == NEXT_SLOT
    assert Reservation.objects.count() == 2


def test_an_idempotent_preempting_booking_racing_a_move_of_its_victim_never_deadlocks(
    cluster, owner, high_booker
):
    """Before the fix, the idempotent create's outer transaction kept the GPU lock of its first
    attempt while the preemption then locked the victim; a move of the victim locks the victim and
    then its GPU: the two waited on each other until PostgreSQL broke the deadlock with an error."""
    gpu = cluster["node1"][0]
    preemptor, victim_owner = client_for(high_booker), owner
    outcomes = []
    for round_ in range(ROUNDS):
        start = NEXT_SLOT + timedelta(hours=4) + round_ * 2 * SLOT
        victim = book(victim_owner, [gpu], start=start, priority="low")

        def preempt(start=start, round_=round_):
            return preemptor.post(
                "/api/v1/reservations/",
                {"gpus": [gpu.pk], "start": iso(start), "slots": 1, "priority": "high"},
                format="json",
                HTTP_IDEMPOTENCY_KEY=f"nightly-{round_}",
            )

        def move(victim=victim, start=start):
            try:
                services.reservation_move(reservation_id=victim.pk, actor=victim_owner, start=start + SLOT, slots=1)
                return "moved"
            except BookingConflict:
                return "conflict"

        response, moved = at_once([preempt, move])

        assert response.status_code == 201, response.content
        outcomes.append(moved)
        victim.refresh_from_db()
        assert victim.status == Reservation.Status.CONFIRMED  # moved, by its owner or by the preemption
        assert not victim.allocations.filter(gpu=gpu, start__lt=start + SLOT, end__gt=start).exists()
    assert overlapping_live_pairs() == 0
    assert Reservation.objects.filter(priority="high").count() == ROUNDS
    assert "moved" in outcomes
