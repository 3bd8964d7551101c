"""A job whose spec names `register_model` has its best weights registered when it completes:
trainer sends job_finished from the training process, serving's receiver registers."""

import hashlib

import pytest
from django.utils import timezone

from reservations import services
from reservations.models import AuditEntry
from serving.models import ModelVersion
from serving.selectors import store_path
from trainer.models import TrainingJob
from trainer.process import spawn
from trainer.signals import job_finished
from trainer.spec import JobSpecSerializer

from ..support import make_user

pytestmark = pytest.mark.slow


def _spec(**fields):
    serializer = JobSpecSerializer(data=fields)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _finished(job, status=TrainingJob.Status.COMPLETED):
    return job_finished.send(sender=TrainingJob, job_id=job.pk, status=status)


def test_register_model_must_be_a_model_name():
    serializer = JobSpecSerializer(data={"model": "yolov8n.yaml", "data": "/nowhere.yaml", "register_model": "Bad Name"})

    assert not serializer.is_valid()
    assert "register_model" in serializer.errors


@pytest.mark.usefixtures("model_store")
def test_only_a_completed_job_that_asked_is_registered(owner, trained_job):
    asked = trained_job(owner)
    TrainingJob.objects.filter(pk=asked.pk).update(spec={**asked.spec, "register_model": "defects"})
    silent = trained_job(owner)

    _finished(asked, TrainingJob.Status.STOPPED)
    _finished(silent)
    assert not ModelVersion.objects.exists()
    _finished(asked)

    version = ModelVersion.objects.get()
    assert (version.model.name, version.version, version.source_job_id, version.weights) == ("defects", 1, asked.pk, "best")
    entry = AuditEntry.objects.get(action="model_register")
    assert entry.actor is None and "register_model" in entry.reason


@pytest.mark.usefixtures("model_store")
def test_a_job_without_best_weights_is_not_registered_and_nothing_fails(owner, trained_job, caplog):
    job = trained_job(owner, files=("checkpoint",))
    TrainingJob.objects.filter(pk=job.pk).update(spec={**job.spec, "register_model": "defects"})

    [(_, result)] = [(r, v) for r, v in _finished(job) if getattr(r, "__name__", "") == "register_completed_job"]

    assert result is None
    assert not ModelVersion.objects.exists()
    assert f"Job {job.pk}: its best weights were not registered as defects" in caplog.text


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(600)
def test_a_real_training_run_registers_its_best_weights_when_it_completes(cluster, team, training_data, tmp_path, settings, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setenv("MODEL_STORE", str(store))  # the training process reads its settings from it
    settings.MODEL_STORE = store
    owner = make_user("auto-owner", team)
    reservation = services.reservation_create(
        user=owner, gpu_ids=[cluster["node1"][0].pk], start="earliest", slots=1, now=timezone.now(),
        work={"job": _spec(model="yolov8n.yaml", data=str(training_data), epochs=1, imgsz=64, batch=4, register_model="defects")},
    )

    process, log_path = spawn(reservation.job, devices=[])

    assert process.wait(timeout=400) == 0
    job = TrainingJob.objects.get(pk=reservation.job.pk)
    assert job.status == "completed", job.reason
    version = ModelVersion.objects.select_related("model__team").get()
    assert (version.model.team, version.model.name, version.version, version.source_job_id) == (team, "defects", 1, job.pk)
    assert (version.imgsz, version.source_epoch, version.created_by) == (64, 1, None)
    assert hashlib.sha256(store_path(version.sha256).read_bytes()).hexdigest() == version.sha256
    assert "best weights registered as defects:1" in log_path.read_text(errors="replace")
