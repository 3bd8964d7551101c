"""Redis restarted while a job trains. Redis holds only messages (here with no persistence at all:
whatever was queued is gone), never state: bookings, jobs and notices are in PostgreSQL, the node
agent works from the database and heartbeats there, so training goes on through the outage, and once
the worker is back on Redis new tasks flow again. (test_slot_lifecycle.py covers a start that falls
while Redis is down.)"""

from datetime import timedelta

import pytest
import redis
from celery import Celery

from reservations.models import GPU, AuditEntry, Node, Notice, Reservation
from reservations.queue import NOTICE_EMAIL
from trainer.models import TrainingJob
from trainer.queue import STOP_JOB, node_queue

from .support import make_user, wait_for
from .trainer.test_slot_lifecycle import booking_now, job
from .workers import NodeWorker, kill_training_children

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]
HOST = "redis-restart-node"




@pytest.fixture
def worker(tmp_path, training_data, own_redis):
    """The node's worker, also taking the central queue, on `own_redis` (it stops before Redis does)."""
    process = NodeWorker(tmp_path / "worker.log", HOST, central=True, CELERY_BROKER_URL=own_redis.url)
    yield process
    process.stop()
    kill_training_children()


def send(redis_url, name, *args, queue):
    """A task through `redis_url`, as the web process or beat would send it there. The connection is
    named explicitly: Celery prefers the CELERY_BROKER_URL variable (this process's Redis) to broker=."""
    app = Celery("probe")
    try:
        with app.connection_for_write(redis_url) as connection:
            app.send_task(name, args=list(args), queue=queue, connection=connection)
    finally:
        app.close()


def queues_declared(redis_url, *queues):
    """The worker has declared `queues` on this Redis again (their bindings live in Redis: a message
    sent to a queue with no binding is dropped, like every message the restart lost)."""
    with redis.Redis.from_url(redis_url) as client:
        return all(client.exists(f"_kombu.binding.{queue}") for queue in queues)


def rows():
    return {
        model.__name__: set(model.objects.values_list("pk", "updated" if model is not Notice else "created"))
        for model in (Reservation, Notice)
    } | {"AuditEntry": set(AuditEntry.objects.values_list("pk", flat=True))}


def test_a_redis_restart_while_a_job_trains_loses_nothing_and_new_tasks_flow_again(
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
    # New tasks flow again, on both queues the worker takes: a notice's e-mail (central) and a stop
    # request (the node's own queue), sent through the restarted Redis.
    wait_for(lambda: queues_declared(own_redis.url, "celery", node_queue(HOST)), 60, "the worker to declare its queues")
    send(own_redis.url, NOTICE_EMAIL, notice.pk, queue="celery")
    send(own_redis.url, STOP_JOB, training.pk, "asked after the broker restart", queue=node_queue(HOST))
    wait_for(lambda: Notice.objects.get(pk=notice.pk).emailed_at, 60, "the notice's e-mail")
    stopped = wait_for(lambda: (j := job(training.pk)).status == "stopped" and j, 60, "the stop")
    assert "asked after the broker restart" in stopped.reason
    assert stopped.checkpoint and stopped.checkpoint_epoch >= during.epoch
    assert stopped.start_epoch == 0  # one run throughout: the outage never interrupted it
    assert TrainingJob.objects.count() == 1 and Reservation.objects.get(pk=reservation.pk).status == reservation.status
