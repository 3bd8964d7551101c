"""The model registry's services: registering a job's real weights into the content-addressed store,
version numbers, who may register and delete, and the in-use rule for serving bookings."""

import hashlib
import os
from pathlib import Path

import pytest
import torch
from django.core.exceptions import PermissionDenied
from django.http import Http404

from reservations import services
from reservations.errors import BookingError
from reservations.models import AuditEntry, Reservation
from serving import registry
from serving.models import Model, ModelVersion, Serving
from serving.selectors import store_path
from trainer.models import TrainingJob

from ..support import at_once, book

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("model_store")]

SERVE = {"preload": [], "max_batch": 8, "max_delay_ms": 10, "memory_budget_mb": None}


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _serve(user, gpu, *models):
    return book(user, [gpu], work={"serve": {"models": list(models), **SERVE}})


def test_registering_stores_the_weights_under_their_hash(owner, trained_job, yolo_weights, model_store):
    job = trained_job(owner)

    version = registry.model_register(user=owner, job_id=job.pk, name="defects")

    stored = model_store / f"{version.sha256}.pt"
    assert stored == store_path(version.sha256)
    assert _sha256(stored) == version.sha256
    assert stored.stat().st_size == version.size
    names = _load(yolo_weights.best)["model"].names
    assert version.class_names == [names[i] for i in sorted(names)]
    assert (version.model.name, version.model.team, version.version) == ("defects", job.reservation.team, 1)
    assert (version.source_job, version.source_epoch, version.weights) == (job, 1, "best")
    assert version.imgsz == 64
    assert version.metrics == {"metrics/mAP50-95(B)": 0.125, "metrics/mAP50(B)": 0.25}
    assert version.created_by == owner


def test_the_stored_weights_are_inference_only(owner, trained_job, resumable_checkpoint):
    assert _load(resumable_checkpoint)["optimizer"] is not None
    job = trained_job(owner)

    version = registry.model_register(user=owner, job_id=job.pk, name="defects", weights="last")

    stored = _load(store_path(version.sha256))
    assert stored["optimizer"] is None and stored["ema"] is None and stored["epoch"] == -1
    assert next(stored["model"].parameters()).dtype == torch.float16
    # The resumable copy had finished its first epoch (ultralytics counts it as epoch 0).
    assert (version.weights, version.source_epoch) == ("last", 1)


def test_versions_count_up_and_the_same_weights_share_one_file(owner, teammate, trained_job, model_store):
    job = trained_job(owner)

    first = registry.model_register(user=owner, job_id=job.pk, name="defects")
    second = registry.model_register(user=teammate, job_id=job.pk, name="defects")

    assert (first.version, second.version) == (1, 2)
    assert first.model_id == second.model_id
    assert first.sha256 == second.sha256
    assert sorted(p.name for p in model_store.iterdir()) == [f"{first.sha256}.pt"]  # nothing left aside


def test_registering_sweeps_away_folders_left_aside_over_an_hour_ago(owner, trained_job, model_store):
    model_store.mkdir(parents=True)
    folders = {name: model_store / f".incoming-{name}" for name in ("killed", "recent", "starting")}
    for folder in folders.values():
        folder.mkdir()
        (folder / "weights.pt").write_bytes(b"partial")
    now = folders["starting"].stat().st_mtime  # the store's clock (the test's is frozen)
    os.utime(folders["killed"], (now - 3700, now - 3700))
    os.utime(folders["recent"], (now - 3500, now - 3500))

    version = registry.model_register(user=owner, job_id=trained_job(owner).pk, name="defects")

    left = sorted(p.name for p in model_store.iterdir())
    assert left == sorted([".incoming-recent", ".incoming-starting", f"{version.sha256}.pt"])


def test_other_weights_are_another_file(owner, trained_job):
    job = trained_job(owner)

    best = registry.model_register(user=owner, job_id=job.pk, name="defects")
    last = registry.model_register(user=owner, job_id=job.pk, name="defects", weights="last")

    assert best.sha256 != last.sha256
    assert store_path(best.sha256).is_file() and store_path(last.sha256).is_file()


def test_a_deleted_version_number_is_never_given_to_other_weights(owner, trained_job):
    job = trained_job(owner)
    registry.model_register(user=owner, job_id=job.pk, name="defects")
    second = registry.model_register(user=owner, job_id=job.pk, name="defects", weights="last")
    registry.version_delete(user=owner, model_id=second.model_id, version=2)

    third = registry.model_register(user=owner, job_id=job.pk, name="defects", weights="last")

    assert third.version == 3


def test_a_version_never_changes(owner, trained_job):
    version = registry.model_register(user=owner, job_id=trained_job(owner).pk, name="defects")
    version.metrics = {"metrics/mAP50-95(B)": 0.99}

    with pytest.raises(PermissionError):
        version.save()
    assert ModelVersion.objects.get(pk=version.pk).metrics["metrics/mAP50-95(B)"] == 0.125


def test_another_teams_job_is_refused_like_a_job_that_does_not_exist(owner, outsider, trained_job):
    job = trained_job(owner)
    missing = TrainingJob.objects.order_by("-pk").first().pk + 100

    with pytest.raises(BookingError) as others:
        registry.model_register(user=outsider, job_id=job.pk, name="defects")
    with pytest.raises(BookingError) as unknown:
        registry.model_register(user=outsider, job_id=missing, name="defects")

    assert others.value.field == unknown.value.field == "job"
    assert others.value.message == unknown.value.message.replace(str(missing), str(job.pk))
    assert not Model.objects.exists()


@pytest.mark.parametrize("name", ["defects\n", "defects\x00", "Defects", ""])
def test_a_name_that_is_not_a_model_name_is_refused(owner, trained_job, name):
    with pytest.raises(BookingError) as refused:
        registry.model_register(user=owner, job_id=trained_job(owner).pk, name=name)

    assert refused.value.field == "name"
    assert not Model.objects.exists()


def test_a_teammate_registers_into_the_jobs_team(owner, teammate, trained_job, team):
    version = registry.model_register(user=teammate, job_id=trained_job(owner).pk, name="defects")

    assert version.model.team == team


def test_the_team_named_must_be_the_jobs(owner, trained_job, other_team):
    with pytest.raises(BookingError) as refused:
        registry.model_register(user=owner, job_id=trained_job(owner).pk, name="defects", team=other_team.slug)

    assert refused.value.field == "team"


def test_a_job_without_the_weights_asked_for_is_refused_clearly(owner, trained_job):
    job = trained_job(owner, files=("best",))

    with pytest.raises(BookingError) as refused:
        registry.model_register(user=owner, job_id=job.pk, name="defects", weights="last")

    assert refused.value.field == "weights"
    assert f"Job {job.pk} has no last weights" in refused.value.message


def test_a_job_still_running_without_a_checkpoint_is_refused(owner, trained_job):
    job = trained_job(owner, status=TrainingJob.Status.RUNNING, files=())

    with pytest.raises(BookingError) as refused:
        registry.model_register(user=owner, job_id=job.pk, name="defects")

    assert refused.value.field == "job"
    assert "running" in refused.value.message


def test_a_running_job_with_a_checkpoint_may_be_registered(owner, trained_job):
    job = trained_job(owner, status=TrainingJob.Status.RUNNING, files=("checkpoint",))

    version = registry.model_register(user=owner, job_id=job.pk, name="defects", weights="last")

    assert version.source_epoch == 1


def test_a_file_that_is_not_a_checkpoint_is_refused_and_nothing_is_stored(owner, trained_job, model_store):
    job = trained_job(owner)
    (Path(job.run_dir) / "train" / "weights" / "best.pt").write_bytes(b"not a model")

    with pytest.raises(BookingError) as refused:
        registry.model_register(user=owner, job_id=job.pk, name="defects")

    assert refused.value.field == "weights"
    assert not ModelVersion.objects.exists()
    assert not list(model_store.glob("*.pt"))


def test_register_and_delete_are_audited(owner, trained_job):
    version = registry.model_register(user=owner, job_id=trained_job(owner).pk, name="defects")
    registry.model_delete(user=owner, model_id=version.model_id)

    entries = list(AuditEntry.objects.filter(target=f"model:{version.model_id}").order_by("id"))
    assert [(e.action, e.actor) for e in entries] == [("model_register", owner), ("model_delete", owner)]
    assert entries[0].after["version"] == 1 and entries[0].after["sha256"] == version.sha256
    assert entries[1].before["versions"][0]["sha256"] == version.sha256


def test_deleting_the_last_version_with_those_bytes_removes_the_file(owner, trained_job):
    job = trained_job(owner)
    first = registry.model_register(user=owner, job_id=job.pk, name="defects")
    registry.model_register(user=owner, job_id=job.pk, name="defects")

    registry.version_delete(user=owner, model_id=first.model_id, version=1)
    assert store_path(first.sha256).is_file()  # version 2 has the same bytes
    registry.version_delete(user=owner, model_id=first.model_id, version=2)

    assert not store_path(first.sha256).exists()
    assert not ModelVersion.objects.exists()
    assert Model.objects.filter(pk=first.model_id).exists()


def test_deleting_a_model_deletes_its_versions_and_files(owner, trained_job):
    job = trained_job(owner)
    best = registry.model_register(user=owner, job_id=job.pk, name="defects")
    last = registry.model_register(user=owner, job_id=job.pk, name="defects", weights="last")
    kept = registry.model_register(user=owner, job_id=job.pk, name="people")  # the same bytes as best

    registry.model_delete(user=owner, model_id=best.model_id)

    assert not Model.objects.filter(pk=best.model_id).exists()
    assert not store_path(last.sha256).exists()
    assert store_path(kept.sha256).is_file()


def test_a_teammate_may_not_delete_an_outsider_gets_a_404(owner, teammate, outsider, trained_job):
    version = registry.model_register(user=owner, job_id=trained_job(owner).pk, name="defects")

    with pytest.raises(Http404):
        registry.model_delete(user=outsider, model_id=version.model_id)
    with pytest.raises(PermissionDenied) as refused:
        registry.model_delete(user=teammate, model_id=version.model_id)
    assert str(refused.value) == (
        "Only an admin of team vision, the user who registered model defects (owner) or staff may delete it or its versions."
    )
    with pytest.raises(PermissionDenied):
        registry.version_delete(user=teammate, model_id=version.model_id, version=1)

    assert ModelVersion.objects.filter(pk=version.pk).exists()


@pytest.mark.parametrize("who", ["owner", "team_admin", "staff"])
def test_the_registering_user_a_team_admin_and_staff_may_delete(request, owner, trained_job, who):
    user = request.getfixturevalue(who)
    job = trained_job(owner)
    version = registry.model_register(user=owner, job_id=job.pk, name="defects")
    registry.model_register(user=owner, job_id=job.pk, name="defects", weights="last")

    registry.version_delete(user=user, model_id=version.model_id, version=2)
    registry.model_delete(user=user, model_id=version.model_id)

    assert not Model.objects.exists()


def test_a_model_the_scheduler_registered_is_deleted_by_team_admins_and_staff_only(owner, team_admin, trained_job):
    version = registry.model_register(user=None, job_id=trained_job(owner).pk, name="defects")

    with pytest.raises(PermissionDenied) as refused:
        registry.model_delete(user=owner, model_id=version.model_id)
    assert "registered model defects or staff" in str(refused.value)
    registry.model_delete(user=team_admin, model_id=version.model_id)

    assert not Model.objects.exists()


def test_a_live_serving_booking_blocks_deleting_the_model_until_cancelled(owner, trained_job, cluster):
    version = registry.model_register(user=owner, job_id=trained_job(owner).pk, name="defects")
    serving = _serve(owner, cluster["node2"][3], "defects")

    with pytest.raises(registry.ModelInUse) as refused:
        registry.model_delete(user=owner, model_id=version.model_id)
    assert refused.value.bookings == [serving.pk]
    assert f"#{serving.pk}" in refused.value.message
    with pytest.raises(registry.ModelInUse):
        registry.version_delete(user=owner, model_id=version.model_id, version=1)  # "defects" is its latest
    assert store_path(version.sha256).is_file()

    services.reservation_cancel(reservation_id=serving.pk, actor=owner, reason="done")
    registry.model_delete(user=owner, model_id=version.model_id)

    assert not Model.objects.exists()
    assert not store_path(version.sha256).exists()


def test_a_waitlisted_serving_booking_blocks_deleting_the_model(owner, teammate, trained_job, cluster):
    version = registry.model_register(user=owner, job_id=trained_job(owner).pk, name="defects")
    gpu = cluster["node2"][3]
    book(teammate, [gpu])  # holds the GPU: the serving booking waits for it
    waiting = book(owner, [gpu], waitlist=True, work={"serve": {"models": ["defects:1"], **SERVE}})
    assert waiting.status == Reservation.Status.WAITLISTED

    with pytest.raises(registry.ModelInUse) as refused:
        registry.model_delete(user=owner, model_id=version.model_id)
    assert refused.value.bookings == [waiting.pk]
    with pytest.raises(registry.ModelInUse):
        registry.version_delete(user=owner, model_id=version.model_id, version=1)

    services.reservation_cancel(reservation_id=waiting.pk, actor=owner, reason="not needed")
    registry.model_delete(user=owner, model_id=version.model_id)

    assert not Model.objects.exists()


def test_a_bare_name_blocks_only_the_latest_version(owner, trained_job, cluster):
    job = trained_job(owner)
    first = registry.model_register(user=owner, job_id=job.pk, name="defects")
    registry.model_register(user=owner, job_id=job.pk, name="defects", weights="last")
    _serve(owner, cluster["node2"][3], "defects")

    with pytest.raises(registry.ModelInUse):
        registry.version_delete(user=owner, model_id=first.model_id, version=2)
    registry.version_delete(user=owner, model_id=first.model_id, version=1)

    assert list(ModelVersion.objects.values_list("version", flat=True)) == [2]


def test_a_pinned_version_blocks_that_version_only(owner, trained_job, cluster):
    job = trained_job(owner)
    first = registry.model_register(user=owner, job_id=job.pk, name="defects")
    registry.model_register(user=owner, job_id=job.pk, name="defects", weights="last")
    serving = _serve(owner, cluster["node2"][3], "defects:1")

    with pytest.raises(registry.ModelInUse) as refused:
        registry.version_delete(user=owner, model_id=first.model_id, version=1)
    assert "defects:1" in refused.value.message and f"#{serving.pk}" in refused.value.message
    registry.version_delete(user=owner, model_id=first.model_id, version=2)


def test_the_version_a_started_serving_resolved_stays_in_use(owner, trained_job, cluster):
    job = trained_job(owner)
    first = registry.model_register(user=owner, job_id=job.pk, name="defects")
    serving = _serve(owner, cluster["node2"][3], "defects")
    Serving.objects.filter(reservation=serving).update(
        status=Serving.Status.SERVING, resolved=[{"name": "defects", "version": 1, "sha256": first.sha256}]
    )
    registry.model_register(user=owner, job_id=job.pk, name="defects", weights="last")  # now the latest

    with pytest.raises(registry.ModelInUse):
        registry.version_delete(user=owner, model_id=first.model_id, version=1)


def test_a_finished_serving_blocks_nothing(owner, trained_job, cluster):
    version = registry.model_register(user=owner, job_id=trained_job(owner).pk, name="defects")
    serving = _serve(owner, cluster["node2"][3], "defects")
    Serving.objects.filter(reservation=serving).update(status=Serving.Status.STOPPED)

    registry.model_delete(user=owner, model_id=version.model_id)

    assert not Model.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_registrations_at_the_same_instant_get_one_model_and_distinct_versions(owner, teammate, trained_job):
    job = trained_job(owner)

    # Other bytes each time but the one model: only the model's row orders them.
    versions = at_once([
        lambda user=user, weights=weights: registry.model_register(user=user, job_id=job.pk, name="defects", weights=weights)
        for user, weights in ((owner, "best"), (teammate, "last"), (teammate, "best"), (owner, "last"))
    ])

    assert sorted(v.version for v in versions) == [1, 2, 3, 4]
    assert Model.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_deletion_racing_a_registration_of_the_same_bytes_leaves_every_version_its_file(owner, trained_job):
    job = trained_job(owner)
    first = registry.model_register(user=owner, job_id=job.pk, name="defects")

    _, second = at_once([
        lambda: registry.version_delete(user=owner, model_id=first.model_id, version=1),
        lambda: registry.model_register(user=owner, job_id=job.pk, name="defects"),
    ])

    assert list(ModelVersion.objects.values_list("version", flat=True)) == [second.version]
    assert store_path(second.sha256).is_file()
