"""Two GPU nodes, each with its own `celery worker` (node queue, node agent), against one Redis and
one PostgreSQL, as in a deployment with several machines: each booking trains on the node that holds
its GPUs, and a node whose worker dies interrupts only its own jobs, which resume when it is back.
(test_slot_lifecycle.py covers one node's kill and resume; test_node_offline.py the notices.)"""

from datetime import timedelta

import pytest

from reservations.models import GPU

from ..support import make_user, wait_for
from ..workers import NodeWorker, kill_training_children
from .test_slot_lifecycle import booking_now, job

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]
HOSTS = ("scale-node-a", "scale-node-b")


@pytest.fixture
def node_workers(tmp_path, training_data):
    workers = {host: NodeWorker(tmp_path / f"{host}.log", host) for host in HOSTS}
    yield workers
    for worker in workers.values():
        worker.stop()
    kill_training_children()


def test_each_booking_trains_on_its_node_and_a_dead_node_interrupts_only_its_own_job(node_workers, team, training_data):
    owner = make_user("two-nodes-owner", team)
    for worker in node_workers.values():
        worker.start()
    # Enough epochs that both are still training when node a dies and when it is back.
    spec = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 200, "imgsz": 64, "batch": 4}
    jobs = {}
    for host in HOSTS:
        gpu = GPU.objects.filter(node__hostname=host).order_by("index").first()
        _, jobs[host] = booking_now(owner, team, [gpu], starts_in=timedelta(seconds=1), length=timedelta(hours=1), spec=spec)
    a, b = (jobs[host].pk for host in HOSTS)

    wait_for(lambda: job(a).checkpoint_epoch and job(b).status == "running", 120, "node a's first checkpoint")
    for host, training in jobs.items():
        assert job(training.pk).node.hostname == host  # trained where its GPU is, by that node's worker

    node_workers[HOSTS[0]].kill()

    interrupted = wait_for(lambda: (j := job(a)).status == "interrupted" and j, 60, "node a's job to be interrupted")
    other = job(b)
    assert other.status == "running" and other.start_epoch == 0  # node b's job goes on
    node_workers[HOSTS[0]].start()
    resumed = wait_for(
        lambda: (j := job(a)).status == "running" and j.epoch > interrupted.checkpoint_epoch and j, 90,
        "node a's job to resume and train an epoch",
    )
    assert resumed.node.hostname == HOSTS[0] and resumed.start_epoch == interrupted.checkpoint_epoch
    still = job(b)  # one run from its start: never interrupted, never restarted
    assert still.status == "running" and still.spawned_at == other.spawned_at and still.epoch > other.epoch
