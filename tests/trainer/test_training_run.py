"""Real ultralytics training on CPU in the child process the node worker starts."""

import time

import pytest
from django.utils import timezone

from reservations import services
from trainer.dataset import make_dataset
from trainer.models import TrainingJob
from trainer.process import spawn, stop
from trainer.runner import sha256_of
from trainer.services import job_exited, job_request_stop
from trainer.spec import JobSpecSerializer

from ..conftest import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]


@pytest.fixture
def training_roots(tmp_path, settings, monkeypatch):
    # The child reads its settings from the environment, so set both.
    for name, value in (("TRAINING_DATA_ROOTS", tmp_path / "data"), ("TRAINING_RUNS_DIR", tmp_path / "runs")):
        monkeypatch.setenv(name, str(value))
    settings.TRAINING_DATA_ROOTS = [(tmp_path / "data").resolve()]
    settings.TRAINING_RUNS_DIR = (tmp_path / "runs").resolve()
    return make_dataset(tmp_path / "data" / "demo", images=32, size=64)


def spec(**fields):
    serializer = JobSpecSerializer(data=fields)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def book_job(user, gpu, job_spec, slot):
    reservation = services.reservation_create(
        user=user, gpu_ids=[gpu.pk], start="earliest", slots=1, job=job_spec, now=timezone.now()
    )
    return reservation.job


def test_a_stopped_run_resumes_in_a_later_booking_from_the_next_epoch(cluster, team, training_roots):
    owner = make_user("trainer-owner", team)
    gpu = cluster["node1"][0]
    first = book_job(owner, gpu, spec(model="yolov8n.yaml", data=str(training_roots), epochs=4, imgsz=64, batch=4), 0)

    process, log_path = spawn(first, devices=[])
    try:
        # Progress reaches the database at least once per epoch.
        wait_for(lambda: TrainingJob.objects.get(pk=first.pk).epoch >= 1, 300, "the first epoch")
        running = TrainingJob.objects.get(pk=first.pk)
        assert running.status == "running" and running.start_epoch == 0 and running.epochs == 4
        assert "train/box_loss" in running.metrics
        # As the service stops a job: mark it stopping, then signal.
        job_request_stop(job_id=first.pk, reason="end of slot")
        exited_by_itself = stop(process, grace_seconds=120)
    finally:
        if process.poll() is None:
            process.kill()

    stopped = TrainingJob.objects.get(pk=first.pk)
    assert exited_by_itself
    assert stopped.status == "stopped", stopped.reason
    assert 1 <= stopped.checkpoint_epoch < 4
    assert sha256_of(stopped.checkpoint) == stopped.checkpoint_sha256
    assert "Training from epoch 1 of 4" not in stopped.reason  # the reason now tells why it ended
    assert log_path.read_text(errors="replace").strip()

    # A later booking with resume_from continues from the next epoch, not from zero.
    later = book_job(owner, cluster["node1"][1], spec(model="yolov8n.yaml", data=str(training_roots), resume_from=first.pk), 0)
    assert later.resumed_from_id == first.pk
    process, _ = spawn(later, devices=[])
    assert process.wait(timeout=400) == 0
    resumed = TrainingJob.objects.get(pk=later.pk)
    assert resumed.status == "completed", resumed.reason
    assert resumed.start_epoch == stopped.checkpoint_epoch
    assert resumed.epoch == 4


def test_a_job_that_outlasts_the_stop_grace_is_killed_and_keeps_its_previous_checkpoint(cluster, team, training_roots):
    owner = make_user("trainer-owner", team)
    training = book_job(owner, cluster["node1"][0], spec(model="yolov8n.yaml", data=str(training_roots), epochs=50, imgsz=64, batch=4), 0)
    process, _ = spawn(training, devices=[])
    try:
        wait_for(lambda: TrainingJob.objects.get(pk=training.pk).checkpoint_epoch, 300, "a first checkpoint")
        job_request_stop(job_id=training.pk, reason="end of slot")
        killed = []  # the checkpoint on record at the moment of the kill
        # A grace far shorter than a batch plus the save: the kill comes first.
        exited_by_itself = stop(
            process, grace_seconds=0.05,
            before_kill=lambda: killed.append(TrainingJob.objects.get(pk=training.pk).checkpoint_epoch),
        )
    finally:
        if process.poll() is None:
            process.kill()

    assert not exited_by_itself and killed
    job_exited(job_id=training.pk, returncode=process.returncode, killed=True)
    after = TrainingJob.objects.get(pk=training.pk)
    assert after.status == "stopped" and "Killed after the stop grace" in after.reason
    assert after.checkpoint_epoch == killed[0] >= 1  # the previous epoch's, still on record
    assert sha256_of(after.checkpoint) == after.checkpoint_sha256
