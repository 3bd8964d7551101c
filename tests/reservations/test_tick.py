"""The clock: bookings become active at their start and complete at their end, audited; beat's
task does it on a real Celery worker over Redis."""

from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from reservations import policy, services
from reservations.models import Allocation, AuditEntry, Reservation
from reservations.tasks import tick
from scheduler.celery import app

from ..support import NEXT_SLOT, SLOT, book, wait_for


def test_bookings_become_active_at_their_start_and_complete_at_their_end(cluster, owner, frozen):
    reservation = book(owner, cluster["node1"][:1], slots=1)

    frozen.move_to(NEXT_SLOT + timedelta(minutes=1))
    services.reservations_advance()
    reservation.refresh_from_db()
    assert reservation.status == "active"

    frozen.move_to(NEXT_SLOT + SLOT)
    services.reservations_advance()
    reservation.refresh_from_db()
    assert reservation.status == "completed"
    assert list(AuditEntry.objects.filter(reservation=reservation).order_by("id").values_list("action", "actor")) == [
        ("create", owner.pk), ("activate", None), ("complete", None)
    ]
    assert reservation.allocations.get().live  # the time it held stays recorded as taken


def test_advancing_twice_changes_nothing_more(cluster, owner, frozen):
    book(owner, cluster["node1"][:1])
    frozen.move_to(NEXT_SLOT + timedelta(minutes=1))

    assert services.reservations_advance() == 1
    assert services.reservations_advance() == 0
    assert AuditEntry.objects.filter(action="activate").count() == 1


@pytest.mark.django_db(transaction=True)
def test_beats_tick_runs_on_a_real_worker_and_starts_a_due_booking(cluster, owner, team):
    # A booking whose start has just passed (made directly: the service refuses past starts).
    start = policy.floor_to_slot(timezone.now())
    reservation = Reservation.objects.create(
        user=owner, team=team, start=start, end=start + SLOT, gpu_count=1, status="confirmed"
    )
    Allocation.objects.create(reservation=reservation, gpu=cluster["node1"][0], start=start, end=start + SLOT)

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        tick.delay()
        wait_for(lambda: Reservation.objects.get(pk=reservation.pk).status == "active", 30, "the tick to start it")

    assert AuditEntry.objects.filter(action="activate", reservation=reservation).exists()
