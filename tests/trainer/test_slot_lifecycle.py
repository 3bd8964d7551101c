"""The slot lifecycle with a real node worker (a `celery worker` process on the node's queue, with
its agent), real Redis and PostgreSQL, and real ultralytics training on CPU devices."""

from datetime import timedelta

import pytest
from django.utils import timezone

from reservations import policy, services
from reservations.models import GPU, Allocation, AuditEntry, Reservation
from trainer.models import TrainingJob
from trainer.runner import sha256_of
from trainer.services import job_create
from trainer.spec import JobSpecSerializer

from ..support import client_for, make_user, wait_for
from ..workers import NodeWorker, kill_training_children

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]
HOST = "lifecycle-node"


@pytest.fixture
def node_worker(tmp_path, training_data):
    worker = NodeWorker(tmp_path / "node-worker.log", HOST)
    yield worker
    worker.stop()
    kill_training_children()



@pytest.fixture
def node_worker_on_own_redis(tmp_path, training_data, own_redis):
    """A node worker whose broker is `own_redis`; fixtures end in reverse order, so it stops first."""
    worker = NodeWorker(tmp_path / "node-worker.log", HOST, CELERY_BROKER_URL=own_redis.url)
    yield worker
    worker.stop()
    kill_training_children()


def booking_now(user, team, gpus, *, starts_in, length, spec=None):
    """A booking whose window starts in `starts_in` (not on a slot boundary, so the tests need not
    wait for one): made directly, as the lifecycle only reads start and end."""
    start = timezone.now() + starts_in
    reservation = Reservation.objects.create(
        user=user, team=team, start=start, end=start + length, gpu_count=len(gpus), status="confirmed"
    )
    for gpu in gpus:
        Allocation.objects.create(reservation=reservation, gpu=gpu, start=reservation.start, end=reservation.end)
    job = None
    if spec is not None:
        serializer = JobSpecSerializer(data=spec)
        serializer.is_valid(raise_exception=True)
        job_create(reservation=reservation, spec=serializer.validated_data, now=timezone.now())
        job = TrainingJob.objects.get(reservation=reservation)
    return reservation, job


def job(pk):
    return TrainingJob.objects.get(pk=pk)


def test_a_booking_trains_at_its_start_reports_progress_and_a_cancel_stops_it_with_a_checkpoint(
    node_worker, team, training_data
):
    owner = make_user("lifecycle-owner", team)
    node_worker.start()
    gpus = list(GPU.objects.filter(node__hostname=HOST).order_by("index"))
    spec = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 20, "imgsz": 64, "batch": 4}
    reservation, training = booking_now(owner, team, gpus[:1], starts_in=timedelta(seconds=4), length=timedelta(hours=1), spec=spec)

    assert job(training.pk).status == "queued"
    wait_for(lambda: job(training.pk).status == "running", 120, "the job to start")
    started = job(training.pk)
    assert started.started_at >= reservation.start  # not before its slot
    assert started.devices == "cpu" and started.node.hostname == HOST and started.pid

    api = client_for(owner)
    wait_for(lambda: api.get(f"/api/v1/jobs/{training.pk}/").json()["epoch"] >= 1, 240, "progress in the API")
    assert "Starting training" in api.get(f"/api/v1/jobs/{training.pk}/log/").content.decode()

    response = api.post(f"/api/v1/reservations/{reservation.pk}/cancel/", {"reason": "done"}, format="json")
    assert response.status_code == 200
    stopped = wait_for(lambda: (j := job(training.pk)).status == "stopped" and j, 120, "the stop")
    assert stopped.checkpoint and sha256_of(stopped.checkpoint) == stopped.checkpoint_sha256
    assert stopped.checkpoint_epoch >= 1
    assert stopped.reason.startswith("Stopped with a resumable checkpoint") and "cancelled" in stopped.reason


def test_a_worker_killed_mid_run_interrupts_the_job_and_a_new_worker_resumes_it(node_worker, team, training_data):
    owner = make_user("lifecycle-owner", team)
    node_worker.start()
    gpu = GPU.objects.filter(node__hostname=HOST).order_by("index").first()
    spec = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 4, "imgsz": 64, "batch": 4}
    _, training = booking_now(owner, team, [gpu], starts_in=timedelta(seconds=1), length=timedelta(hours=1), spec=spec)
    wait_for(lambda: job(training.pk).epoch >= 1, 240, "the first epoch")

    node_worker.kill()

    interrupted = wait_for(lambda: (j := job(training.pk)).status == "interrupted" and j, 90, "the interruption")
    assert interrupted.checkpoint_epoch >= 1
    node_worker.start()
    wait_for(lambda: job(training.pk).status == "completed", 400, "the resumed run to complete")
    resumed = job(training.pk)
    assert resumed.start_epoch == interrupted.checkpoint_epoch  # from the next epoch, not from zero
    assert resumed.epoch == 4


def test_a_job_that_finishes_early_releases_the_rest_of_its_booking_to_the_waitlist(
    node_worker, team, training_data, other_team
):
    owner = make_user("lifecycle-owner", team)
    waiter = make_user("waiter", other_team)
    node_worker.start()
    gpu = GPU.objects.filter(node__hostname=HOST).order_by("index").first()
    spec = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 1, "imgsz": 64, "batch": 4}
    reservation, training = booking_now(owner, team, [gpu], starts_in=timedelta(seconds=1), length=timedelta(hours=6), spec=spec)
    later = policy.ceil_to_slot(reservation.start + timedelta(hours=2))
    waiting = services.reservation_create(user=waiter, gpu_ids=[gpu.pk], start=later, slots=1, waitlist=True)
    assert waiting.status == "waitlisted"

    wait_for(lambda: job(training.pk).status == "completed", 300, "the job to complete")
    wait_for(lambda: Reservation.objects.get(pk=reservation.pk).end < reservation.end, 30, "the release")

    released = Reservation.objects.get(pk=reservation.pk)
    # It keeps the slot in progress (its first, at least) and gives back whole slots, on the grid.
    assert released.end == max(policy.ceil_to_slot(timezone.now()), policy.floor_to_slot(reservation.start) + policy.slot_length())
    assert policy.is_on_boundary(released.end)
    assert AuditEntry.objects.filter(action="release", reservation=released).exists()
    # Promotion runs in the worker right after the release commits.
    wait_for(lambda: Reservation.objects.get(pk=waiting.pk).status == "confirmed", 30, "the waitlist promotion")
    assert AuditEntry.objects.filter(action="promote", reservation_id=waiting.pk).exists()


def test_a_redis_restart_loses_no_booking_and_the_next_start_still_happens(
    node_worker_on_own_redis, own_redis, team, training_data, tmp_path
):
    owner = make_user("lifecycle-owner", team)
    node_worker_on_own_redis.start()
    gpu = GPU.objects.filter(node__hostname=HOST).order_by("index").first()
    spec = {"model": "yolov8n.yaml", "data": str(training_data), "epochs": 1, "imgsz": 64, "batch": 4}
    worker_log = tmp_path / "node-worker.log"

    own_redis.stop()
    try:
        reservation, training = booking_now(
            owner, team, [gpu], starts_in=timedelta(seconds=3), length=timedelta(hours=1), spec=spec
        )
        # Redis stays down until the worker has lost it and the booking's start has passed.
        wait_for(lambda: "Connection to broker lost" in worker_log.read_text(errors="replace"), 60, "the worker to lose Redis")
        wait_for(lambda: timezone.now() > reservation.start, 10, "the booking's start")
    finally:
        own_redis.start()
    wait_for(lambda: job(training.pk).status in ("running", "completed"), 120, "the start after Redis came back")
    assert Reservation.objects.filter(pk=training.reservation_id).exists()
