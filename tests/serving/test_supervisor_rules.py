"""The replica supervisor's decisions, read from the database as each agent pass makes them: when a
device is free for a replica, when a preempted booking drains, when it stops restarting a crashing
replica, what a lost node means. Starting a process is recorded instead (the real starts, drains and
restarts are in test_replica_lifecycle.py)."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import OperationalError, transaction
from django.utils import timezone

from reservations.errors import BookingError
from reservations.models import Allocation, Node, Reservation
from serving import services
from serving.models import Replica, Serving
from serving.supervisor import RESTARTS, ReplicaSupervisor
from trainer.services import nodes_mark_lost

from ..support import make_user

pytestmark = pytest.mark.django_db
SPEC = {"models": ["defects"], "preload": [], "max_batch": 8, "max_delay_ms": 10, "memory_budget_mb": None}


class Recording(ReplicaSupervisor):
    """The supervisor, recording the replicas it would start."""

    def __init__(self, node):
        super().__init__(SimpleNamespace(node=node, busy_gpu_ids=set))
        self.started = []

    def _start(self, serving, gpu):
        self.started.append((serving.pk, gpu.pk))


def serving_on(owner, gpus, *, start, end, **fields):
    reservation = Reservation.objects.create(
        user=owner, team=owner.teams.first(), start=start, end=end, gpu_count=len(gpus), status="active", **fields
    )
    for gpu in gpus:
        Allocation.objects.create(reservation=reservation, gpu=gpu, start=start, end=end)
    with transaction.atomic():
        services.serving_create(reservation=reservation, spec=SPEC, now=timezone.now())
    return Serving.objects.get(reservation=reservation)


def replica_of(serving, gpu, state, **fields):
    return Replica.objects.create(
        serving=serving, gpu=gpu, node=gpu.node, device="cpu", address=f"127.0.0.1:{9500 + Replica.objects.count()}",
        token="t", state=state, memory_budget=1, **fields,
    )


@pytest.fixture
def gpu(cluster):
    return cluster["node1"][0]


def test_a_serving_waits_while_the_replica_before_it_on_its_gpu_drains(owner, gpu, defects):
    now = timezone.now()
    before = serving_on(owner, [gpu], start=now - timedelta(hours=1), end=now)
    replica_of(before, gpu, "draining")
    after = serving_on(owner, [gpu], start=now, end=now + timedelta(hours=1))
    supervisor = Recording(gpu.node)

    supervisor.reconcile(now=now + timedelta(seconds=1))

    assert supervisor.started == []  # no second live replica on the GPU (and no IntegrityError)
    Replica.objects.filter(serving=before).update(state="stopped")
    supervisor.reconcile(now=now + timedelta(seconds=2))
    assert supervisor.started == [(after.pk, gpu.pk)]


def test_a_preempted_serving_serves_on_until_its_reclaim_not_its_cut_end(owner, gpu, defects, high_booker):
    now = timezone.now()
    serving = serving_on(owner, [gpu], start=now - timedelta(hours=1), end=now - timedelta(minutes=1))
    preemptor = Reservation.objects.create(
        user=high_booker, team=high_booker.teams.first(), start=now - timedelta(minutes=1), end=now + timedelta(hours=1),
        gpu_count=1, status="confirmed", priority="high",
    )
    Reservation.objects.filter(pk=serving.reservation_id).update(preempted_by=preemptor, reclaim_at=now + timedelta(minutes=5))
    replica_of(serving, gpu, "ready")
    supervisor = Recording(gpu.node)

    supervisor.reconcile(now=now)

    assert Serving.objects.get(pk=serving.pk).status == "queued"  # not drained at the cut end
    Reservation.objects.filter(pk=serving.reservation_id).update(status="preempted")
    supervisor.reconcile(now=now)
    assert Serving.objects.get(pk=serving.pk).status in ("draining", "stopped")


def test_a_crashing_replica_is_given_up_after_a_few_recent_failures_only(owner, gpu, defects):
    now = timezone.now()
    serving = serving_on(owner, [gpu], start=now - timedelta(hours=1), end=now + timedelta(hours=1))
    Serving.objects.filter(pk=serving.pk).update(status="serving")
    for minutes in (60, 50, 40):  # long ago: they do not count
        replica_of(serving, gpu, "failed", ended_at=now - timedelta(minutes=minutes))
    supervisor = Recording(gpu.node)

    supervisor.reconcile(now=now)
    assert supervisor.started == [(serving.pk, gpu.pk)]

    for seconds in (300, 200, 100):
        replica_of(serving, gpu, "failed", ended_at=now - timedelta(seconds=seconds))
    supervisor.started.clear()
    supervisor.reconcile(now=now)

    assert supervisor.started == []
    failed = Serving.objects.get(pk=serving.pk)
    assert failed.status == "failed" and f"failed {RESTARTS} times" in failed.reason


def test_a_lost_node_fails_its_replicas_and_stops_a_serving_that_was_draining(owner, gpu, defects, frozen):
    now = timezone.now()
    serving = serving_on(owner, [gpu], start=now - timedelta(hours=1), end=now + timedelta(hours=1))
    Serving.objects.filter(pk=serving.pk).update(status="draining")
    replica = replica_of(serving, gpu, "draining")
    Node.objects.filter(pk=gpu.node_id).update(online=True, last_heartbeat=now - timedelta(minutes=5))

    nodes_mark_lost(now=now)

    replica.refresh_from_db()
    assert replica.state == "failed" and "heartbeats" in replica.reason
    assert Serving.objects.get(pk=serving.pk).status == "stopped"


def test_a_model_deleted_after_the_check_refuses_the_booking_as_it_is_written(owner, gpu, defects):
    now = timezone.now()
    reservation = Reservation.objects.create(
        user=owner, team=owner.teams.first(), start=now, end=now + timedelta(hours=1), gpu_count=1, status="confirmed"
    )
    defects.versions.all().delete()

    with pytest.raises(BookingError, match="no model 'defects'|has no version"), transaction.atomic():
        services.serving_create(reservation=reservation, spec=SPEC, now=now)
    assert not Serving.objects.exists()


def test_a_supervision_failure_of_one_serving_does_not_stop_the_others(owner, gpu, cluster, defects, monkeypatch):
    now = timezone.now()
    broken = serving_on(owner, [gpu], start=now - timedelta(hours=1), end=now + timedelta(hours=1))
    other_gpu = cluster["node1"][1]
    fine = serving_on(make_user("second-owner", owner.teams.first()), [other_gpu], start=now - timedelta(hours=1), end=now + timedelta(hours=1))
    supervisor = Recording(gpu.node)
    original = supervisor._keep_up

    def keep_up(serving, reservation, when):
        if serving.pk == broken.pk:
            raise RuntimeError("a database hiccup")
        return original(serving, reservation, when)

    monkeypatch.setattr(supervisor, "_keep_up", keep_up)
    supervisor.reconcile(now=now)

    assert supervisor.started == [(fine.pk, other_gpu.pk)]


def test_a_passing_database_error_at_the_slot_start_leaves_the_serving_for_the_next_pass(owner, gpu, defects, monkeypatch):
    now = timezone.now()
    serving = serving_on(owner, [gpu], start=now - timedelta(minutes=1), end=now + timedelta(hours=1))
    supervisor = Recording(gpu.node)

    def database_away(team, refs, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "resolve_models", database_away)
    supervisor.reconcile(now=now)

    assert Serving.objects.get(pk=serving.pk).status == "queued" and supervisor.started == []
    monkeypatch.undo()
    supervisor.reconcile(now=now)
    assert Serving.objects.get(pk=serving.pk).status == "starting" and supervisor.started == [(serving.pk, gpu.pk)]


def test_a_model_deleted_before_the_slot_start_fails_its_serving_for_good(owner, gpu, defects):
    now = timezone.now()
    serving = serving_on(owner, [gpu], start=now - timedelta(minutes=1), end=now + timedelta(hours=1))
    defects.versions.all().delete()
    supervisor = Recording(gpu.node)

    supervisor.reconcile(now=now)

    failed = Serving.objects.get(pk=serving.pk)
    assert failed.status == "failed" and failed.reason.startswith("Cannot serve:") and "defects" in failed.reason
    assert supervisor.started == []
