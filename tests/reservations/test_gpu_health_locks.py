"""The health check follows the lock order too: an alert about a GPU whose booking its owner is
changing at that moment never deadlocks with the change (real PostgreSQL, real threads)."""

from datetime import timedelta

import pytest

from reservations import services
from reservations.models import GpuAlert, Notice, Reservation
from trainer.hardware import Telemetry

from ..support import NEXT_SLOT, SLOT, at_once, book

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("frozen")]
ROUNDS = 20


def readings(temperature):
    return [
        Telemetry(index=i, utilization_pct=50.0, memory_used_mb=1000, memory_free_mb=80000,
                  temperature_c=temperature if i == 0 else 50.0, ecc_errors=0, xid_errors=0)
        for i in range(4)
    ]


def test_a_hot_gpu_reading_racing_a_move_of_the_booking_using_it_never_deadlocks(cluster, owner, staff):
    """Before the fix the health check held the GPU's lock while its notice to the booking's owner
    took a key-share lock on the booking; a move locks the booking, then its GPUs: PostgreSQL broke
    the cycle by killing one of them with a deadlock error."""
    gpu = cluster["node1"][0]
    node = gpu.node
    for round_ in range(ROUNDS):
        start = NEXT_SLOT + round_ * 2 * SLOT
        during = start + timedelta(minutes=10)
        booking = book(owner, [gpu], start=start)

        def hot(during=during):
            return services.gpu_readings_record(node=node, readings=readings(90.0), now=during)

        def move(booking=booking, start=start):
            return services.reservation_move(reservation_id=booking.pk, actor=owner, start=start + SLOT, slots=1)

        at_once([hot, move])  # a deadlock error in either is raised here

        booking.refresh_from_db()
        assert booking.start == start + SLOT and booking.status == Reservation.Status.CONFIRMED
        assert Notice.objects.filter(user=staff, kind=Notice.Kind.GPU_ALERT).count() == round_ + 1
        services.gpu_readings_record(node=node, readings=readings(40.0), now=during + timedelta(seconds=5))
    assert GpuAlert.objects.filter(ended=None).count() == 0
