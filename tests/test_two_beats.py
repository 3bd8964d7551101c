"""Beat must run once, but a second one (a failover that overlapped, two `celery beat` started by
mistake) must do no harm: every step of tick and reconcile is level-triggered and changes a row only
from the state it read (a compare-and-set), so two clocks firing at once still move each booking
once. Real processes: two `celery beat` ticking every second and a central worker, against the
test's PostgreSQL and Redis."""

import time
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from reservations import policy, services
from reservations.services import Device, node_register
from reservations.models import Allocation, AuditEntry, Node, Notice, Reservation
from trainer.models import TrainingJob
from trainer.services import job_create

from .support import make_user, wait_for
from .workers import Beat, Worker, purge_central_queue

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]
FAST = {"TICK_SECONDS": "1", "RECONCILE_SECONDS": "1"}


@pytest.fixture
def clocks(tmp_path):
    """A central worker and two beats, started together so that their ticks land at the same moments."""
    purge_central_queue()
    processes = [
        Worker(tmp_path / "worker.log", ["celery"], "central", **FAST),
        Beat(tmp_path / "beat-1.log", tmp_path / "beat-1-schedule", **FAST),
        Beat(tmp_path / "beat-2.log", tmp_path / "beat-2-schedule", **FAST),
    ]
    yield processes
    for process in processes:
        process.stop()


def booked(user, team, gpus, start, end, status=Reservation.Status.CONFIRMED):
    """A booking made directly: the clock reads only its window and status (and these windows are not
    on the slot grid, so the test need not wait for a boundary)."""
    reservation = Reservation.objects.create(
        user=user, team=team, start=start, end=end, gpu_count=len(gpus), status=status
    )
    for gpu in gpus:
        Allocation.objects.create(reservation=reservation, gpu=gpu, start=start, end=end)
    return reservation


def test_two_beats_move_every_booking_once_and_send_every_notice_once(clocks, cluster, team, tmp_path):
    owner = make_user("clock-owner", team)
    # An away node with many GPUs: its bookings' jobs wait, and each owner is told once when the slot
    # begins. Many bookings make each reconcile pass long enough for the two clocks' passes to overlap.
    away = node_register(
        hostname="away", devices=[Device(index=i, model="A100", memory_mb=81920, uuid=f"away-{i}") for i in range(16)]
    )
    Node.objects.filter(pk=away.pk).update(online=False, last_heartbeat=None)
    now = timezone.now()
    spec = {"model": "yolov8n.yaml", "data": str(tmp_path / "data.yaml"), "epochs": 1}
    # Short bookings on node1 whose jobs run (as their node would record it): each owner is told
    # once that the slot ends soon.
    short = [
        booked(owner, team, [gpu], now + timedelta(seconds=4 + i), now + timedelta(seconds=9 + i))
        for i, gpu in enumerate(cluster["node1"][1:])
    ]
    for reservation in short:
        job_create(reservation=reservation, spec=spec, now=now)
    TrainingJob.objects.filter(reservation__in=short).update(status="running", node=Node.objects.get(hostname="node1"))
    waiting_jobs = []
    for gpu in away.gpus.all():
        reservation = booked(owner, team, [gpu], now + timedelta(seconds=4), now + timedelta(hours=1))
        job_create(reservation=reservation, spec=spec, now=now)
        waiting_jobs.append(reservation)
    # A request waits behind a blocker on node1's first GPU in the next slot; the blocker then goes
    # (as an admin would delete it), so only the clocks' waitlist sweep can confirm the request.
    next_slot = policy.ceil_to_slot(now + timedelta(minutes=2))  # not begun before the test ends
    blocker = booked(owner, team, [cluster["node1"][0]], next_slot, next_slot + policy.slot_length())
    request = services.reservation_create(
        user=owner, gpu_ids=[cluster["node1"][0].pk], start=next_slot, slots=1, waitlist=True
    )
    assert request.status == Reservation.Status.WAITLISTED
    blocker.delete()

    for process in clocks:
        process.start()
    wait_for(
        lambda: Reservation.objects.filter(pk__in=[r.pk for r in short], status="completed").count() == len(short),
        60, "the short bookings to complete",
    )
    wait_for(lambda: Reservation.objects.get(pk=request.pk).status == "confirmed", 30, "the waitlist promotion")
    wait_for(
        lambda: Notice.objects.filter(kind="node_offline", data__at="slot_start").count() >= len(waiting_jobs),
        30, "the node-away notices",
    )
    time.sleep(4)  # a few more ticks from both clocks, which must change nothing
    for process in clocks:
        process.stop()

    for name in ("beat-1.log", "beat-2.log"):  # both clocks really ticked
        assert "Sending due task reservations-tick" in (tmp_path / name).read_text()
    entries = AuditEntry.objects.filter(action__in=["activate", "complete", "promote"])
    per_booking = {(e["reservation_id"], e["action"]): e["n"] for e in entries.values("reservation_id", "action").annotate(n=Count("id"))}
    expected = {(r.pk, "activate"): 1 for r in short + waiting_jobs}
    expected.update({(r.pk, "complete"): 1 for r in short})
    expected[(request.pk, "promote")] = 1
    assert per_booking == expected
    notices = Notice.objects.values("reservation_id", "kind", "data__at").annotate(n=Count("id"))
    assert {n["n"] for n in notices} == {1}, list(notices)
    assert Notice.objects.filter(kind="waitlist_confirmed", reservation=request).count() == 1
    assert Notice.objects.filter(kind="slot_ending").count() == len(short)
