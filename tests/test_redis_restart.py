"""Redis restarted while a job trains. Redis holds only messages (here with no persistence at all:
whatever was queued is gone), never state: bookings, jobs and notices are in PostgreSQL, the node
agent works from the database and heartbeats there, so training goes on through the outage and a
stop after it still happens. (test_slot_lifecycle.py covers a start that falls while Redis is down.)
Tasks sent after the restart do not reach a worker that was connected before it: the second test
pins that known problem."""

import time
from datetime import timedelta

import pytest
from celery import Celery

from reservations import services
from reservations.models import GPU, AuditEntry, Node, Notice, Reservation
from reservations.queue import NOTICE_EMAIL
from trainer.dataset import make_dataset
from trainer.models import TrainingJob

from .support import make_user, wait_for
from .trainer.test_slot_lifecycle import booking_now, job
from .workers import NodeWorker, RedisServer, kill_training_children

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]
HOST = "redis-restart-node"


@pytest.fixture
def training_data(tmp_path, settings, monkeypatch):
    for name, value in (("TRAINING_DATA_ROOTS", tmp_path / "data"), ("TRAINING_RUNS_DIR", tmp_path / "runs")):
        monkeypatch.setenv(name, str(value))
    settings.TRAINING_DATA_ROOTS = [(tmp_path / "data").resolve()]
    settings.TRAINING_RUNS_DIR = (tmp_path / "runs").resolve()
    return make_dataset(tmp_path / "data" / "demo", images=32, size=64)


@pytest.fixture
def own_redis(tmp_path):
    """A Redis for this test alone: stopping the shared one would break every other worker and test."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def worker(tmp_path, training_data, own_redis):
    """The node's worker, also taking the central queue, on `own_redis` (it stops before Redis does)."""
    process = NodeWorker(tmp_path / "worker.log", HOST, central=True, CELERY_BROKER_URL=own_redis.url)
    yield process
    process.stop()
    kill_training_children()


def send(redis_url, name, *args, queue):
    """A task through `redis_url`, as the web process or beat would send it there."""
    app = Celery("probe", broker=redis_url)
    try:
        app.send_task(name, args=list(args), queue=queue)
    finally:
        app.close()


def resend_until(effect, resend, what, timeout=60, every=5):
    """Send with `resend` (again every `every` s: both tasks are idempotent) until `effect` holds."""
    deadline, sent_at = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline:
        value = effect()
        if value:
            return value
        if time.monotonic() - sent_at >= every:
            resend()
            sent_at = time.monotonic()
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rows():
    return {
        model.__name__: set(model.objects.values_list("pk", "updated" if model is not Notice else "created"))
        for model in (Reservation, Notice)
    } | {"AuditEntry": set(AuditEntry.objects.values_list("pk", flat=True))}


def test_a_redis_restart_while_a_job_trains_loses_nothing_and_the_job_still_stops_with_a_checkpoint(
    worker, own_redis, team, training_data, tmp_path
):
    owner = make_user("redis-owner", team, email="redis-owner@example.com")
    worker.start()
    gpu = GPU.objects.filter(node__hostname=HOST).order_by("index").first()
    spec = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 200, "imgsz": 64, "batch": 4}
    reservation, training = booking_now(owner, team, [gpu], starts_in=timedelta(seconds=1), length=timedelta(hours=1), spec=spec)
    notice = Notice.objects.create(user=owner, kind=Notice.Kind.SLOT_ENDING, reservation=reservation, message="ends soon")
    wait_for(lambda: job(training.pk).checkpoint_epoch, 120, "the job's first checkpoint")
    before = rows()

    own_redis.stop()
    log = tmp_path / "worker.log"
    wait_for(lambda: "Connection to broker lost" in log.read_text(errors="replace"), 60, "the worker to lose Redis")
    during = job(training.pk)
    heartbeat = Node.objects.get(hostname=HOST).last_heartbeat
    # No broker, yet the node trains and heartbeats on: nothing it does goes through Redis.
    wait_for(lambda: job(training.pk).epoch > during.epoch, 60, "an epoch while Redis is down")
    wait_for(lambda: Node.objects.get(hostname=HOST).last_heartbeat > heartbeat, 10, "a heartbeat while Redis is down")
    own_redis.start()

    assert rows() == before  # every booking, notice and audit entry as it was
    assert job(training.pk).status == "running" and Node.objects.get(hostname=HOST).online
    # The booking is cancelled after the restart: its job stops with a checkpoint, found by the node
    # agent in the database (the stop message goes wherever this process's broker is; none is needed).
    services.reservation_cancel(reservation_id=reservation.pk, actor=owner, reason="after the broker restart")
    stopped = wait_for(lambda: (j := job(training.pk)).status == "stopped" and j, 60, "the stop")
    assert stopped.checkpoint and stopped.checkpoint_epoch >= during.epoch
    assert stopped.start_epoch == 0  # one run throughout: the outage never interrupted it
    assert TrainingJob.objects.count() == 1 and Notice.objects.filter(pk=notice.pk).exists()

@pytest.mark.xfail(
    strict=True,
    reason="Known problem, not yet understood: after its Redis restarts, a node worker logs 'Connected' "
    "again and re-declares its queues, but no task sent afterwards is received (the lists stay empty, "
    "nothing runs). Until fixed, restart node workers after a Redis restart (README).",
)
def test_tasks_sent_after_a_redis_restart_reach_the_workers(worker, own_redis, team, tmp_path):
    owner = make_user("redis-owner", team, email="redis-owner@example.com")
    notice = Notice.objects.create(user=owner, kind=Notice.Kind.SLOT_ENDING, message="ends soon")
    worker.start()
    log = tmp_path / "worker.log"
    own_redis.stop()
    wait_for(lambda: "Connection to broker lost" in log.read_text(errors="replace"), 60, "the worker to lose Redis")
    own_redis.start()
    wait_for(lambda: log.read_text(errors="replace").count("Connected to redis") >= 2, 60, "the worker to reconnect")
    resend_until(
        lambda: Notice.objects.get(pk=notice.pk).emailed_at,
        lambda: send(own_redis.url, NOTICE_EMAIL, notice.pk, queue="celery"), "the notice's e-mail", timeout=30,
    )
