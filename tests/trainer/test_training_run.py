"""Real ultralytics training on CPU in the child process the node worker starts."""

import pytest
from django.utils import timezone

from reservations import services
from trainer.models import TrainingJob
from trainer.process import spawn, stop
from trainer.runner import sha256_of
from trainer.services import job_exited, job_request_stop
from trainer.spec import JobSpecSerializer

from ..support import make_user, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]


def spec(**fields):
    serializer = JobSpecSerializer(data=fields)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def book_job(user, gpu, job_spec):
    reservation = services.reservation_create(
        user=user, gpu_ids=[gpu.pk], start="earliest", slots=1, work={"job": job_spec}, now=timezone.now()
    )
    return reservation.job


def test_a_stopped_run_resumes_in_a_later_booking_from_the_next_epoch(cluster, team, training_data):
    owner = make_user("trainer-owner", team)
    gpu = cluster["node1"][0]
    first = book_job(owner, gpu, spec(model="yolov8n.yaml", data=str(training_data), epochs=4, imgsz=64, batch=4))

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
    # Every finished epoch was validated; the one the stop cut short was not (the pass was skipped).
    log = log_path.read_text(errors="replace").replace("\r", "\n")
    validations = [line for line in log.splitlines() if line.split()[:1] == ["all"]]
    assert len(validations) == stopped.checkpoint_epoch - 1

    # A later booking with resume_from continues from the next epoch, not from zero.
    later = book_job(owner, cluster["node1"][1], spec(model="yolov8n.yaml", data=str(training_data), resume_from=first.pk))
    assert later.resumed_from_id == first.pk
    process, _ = spawn(later, devices=[])
    assert process.wait(timeout=400) == 0
    resumed = TrainingJob.objects.get(pk=later.pk)
    assert resumed.status == "completed", resumed.reason
    assert resumed.start_epoch == stopped.checkpoint_epoch
    assert resumed.epoch == 4


def test_a_job_that_outlasts_the_stop_grace_is_killed_and_keeps_its_previous_checkpoint(cluster, team, training_data):
    owner = make_user("trainer-owner", team)
    training = book_job(owner, cluster["node1"][0], spec(model="yolov8n.yaml", data=str(training_data), epochs=50, imgsz=64, batch=4))
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


def test_a_job_resuming_a_completed_run_fine_tunes_its_final_weights_with_its_own_arguments(
    cluster, team, training_data
):
    owner = make_user("trainer-owner", team)
    first = book_job(
        owner, cluster["node1"][0], spec(model="yolov8n.yaml", data=str(training_data), epochs=1, imgsz=64, batch=4)
    )
    process, _ = spawn(first, devices=[])
    assert process.wait(timeout=400) == 0
    completed = TrainingJob.objects.get(pk=first.pk)
    assert completed.status == "completed" and completed.checkpoint_epoch == completed.epochs == 1

    # ultralytics would refuse to resume it ("nothing to resume"): the later job trains anew from its
    # weights, for the epochs its own spec asks.
    later = book_job(
        owner, cluster["node1"][1],
        spec(model="yolov8n.yaml", data=str(training_data), epochs=2, imgsz=64, batch=4, resume_from=first.pk),
    )
    process, log_path = spawn(later, devices=[])
    assert process.wait(timeout=400) == 0

    tuned = TrainingJob.objects.get(pk=later.pk)
    assert tuned.status == "completed", tuned.reason
    assert tuned.resumed_from_id == first.pk
    assert (tuned.start_epoch, tuned.epoch, tuned.epochs, tuned.checkpoint_epoch) == (0, 2, 2, 2)
    log = log_path.read_text(errors="replace")
    assert "nothing to resume" not in log and "Resuming training" not in log
    assert "from pretrained weights" in log  # the network starts from the completed job's weights
