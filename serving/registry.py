"""Writes of the model registry: a job's weights registered as a model version, versions and models
deleted. Each write and its audit entry are one transaction.

Weights are copied into the store (serving.store) before the transaction, so a version row only
ever refers to a complete file. A store file is shared by every version with its hash and removed
with the last of them; a lock per hash (PostgreSQL advisory lock; SQLite has one writer at a time
anyway) keeps a registration and a deletion of the same bytes from crossing: without it a deletion
could remove the file a registration has just checked and is about to commit a row for.

Lock order: the model row, then the hashes' locks in hash order."""

import re
from pathlib import Path

from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import Http404

from reservations.errors import BookingError
from reservations.models import AuditEntry
from reservations.policy import JobViewer
from reservations.services.audit import audit_record
from reservations.services.locks import service_transaction
from trainer.models import TrainingJob
from trainer.runner import job_dirs

from .models import MODEL_NAME, Model, ModelVersion
from .selectors import may_delete_model, models_visible, servings_using
from .store import UnusableWeights, store_has, store_put, store_remove

Weights = ModelVersion.Weights
# The first key of the advisory locks on store files (the second is taken from the hash).
STORE_LOCK_CLASS = 11
# Tries to store and record a version when a deletion of the same bytes removes the file between.
STORE_TRIES = 3


class ModelInUse(Exception):
    """A serving booking uses the model (version): the API's 409."""

    def __init__(self, message, servings):
        super().__init__(message)
        self.message = message
        self.bookings = [serving.reservation_id for serving in servings]


class _StoreFileGone(Exception):
    pass


def _lock_store_files(shas):
    """Serialise the writes that add or drop references to these store files (see the module doc)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for sha in sorted(set(shas)):
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [STORE_LOCK_CLASS, int(sha[:7], 16)])


def _remove_unused_files(shas):
    """Inside the deleting transaction, after its audit entry: the files no version refers to now."""
    _lock_store_files(shas)
    for sha in set(shas):
        if not ModelVersion.objects.filter(sha256=sha).exists():
            store_remove(sha)


def _visible_job(user, job_id):
    jobs = TrainingJob.objects.select_related("reservation__team")
    if user is not None:  # None: the scheduler itself
        jobs = JobViewer(user).visible(jobs, prefix="reservation__")
    job = jobs.filter(pk=job_id).first()
    if job is None:
        # One answer for a job that does not exist and one the user may not see.
        raise BookingError("job", f"No job {job_id}.")
    return job


def _weights_source(job, weights):
    """The file `weights` names for `job`: best.pt, or for last the job's newest checkpoint copy
    (else ultralytics' last.pt)."""
    # The run folder the node recorded, else where the runner puts it (recorded only once spawned).
    folder = Path(job.run_dir or job_dirs(job)[0]) / "train" / "weights"
    if weights == Weights.BEST:
        candidates = [folder / "best.pt"]
    else:
        candidates = [Path(job.checkpoint) if job.checkpoint else None, folder / "last.pt"]
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    raise BookingError("weights", f"Job {job.pk} has no {weights} weights to register (none was saved).")


def _next_version(model):
    """On the locked model: one more than any version it ever had (a deleted number is never given
    to other bytes)."""
    model.last_version += 1
    model.save(update_fields=["last_version"])
    return model.last_version


def version_record(version):
    """The audited state of a version, JSON-ready."""
    return {
        "team": version.model.team.slug,
        "model": version.model.name,
        "version": version.version,
        "source_job": version.source_job_id,
        "source_epoch": version.source_epoch,
        "weights": version.weights,
        "sha256": version.sha256,
        "size": version.size,
    }


def model_register(*, user, job_id, name, weights=Weights.BEST, team=None):
    """Register `job_id`'s `weights` (best or last) as the next version of the team's model `name`
    (made if new), in the job's booking's team (`team`, a slug, must be that one when given).
    `user` None: the scheduler registers (a job that asked for it when it finished)."""
    if weights not in Weights.values:
        raise BookingError("weights", f"Use {' or '.join(Weights.values)}.")
    if not isinstance(name, str) or not re.fullmatch(MODEL_NAME, name):
        raise BookingError("name", "Use lower-case letters, digits, '.', '_' and '-' (64 at most), starting with a letter or digit.")
    job = _visible_job(user, job_id)
    job_team = job.reservation.team
    if team is not None and team != job_team.slug:
        raise BookingError("team", f"Job {job.pk} was trained in team {job_team.slug}; its models are registered there.")
    if job.status not in TrainingJob.FINISHED and not job.checkpoint:
        raise BookingError("job", f"Job {job.pk} is {job.status}: register it once it has finished or saved a checkpoint.")
    source = _weights_source(job, weights)
    actor = user if user is not None and user.is_authenticated else None
    for _ in range(STORE_TRIES):
        try:
            stored = store_put(source)
        except UnusableWeights as exc:
            raise BookingError("weights", f"Job {job.pk}'s {weights} weights cannot be registered: {exc}") from None
        try:
            with service_transaction():
                model, _ = Model.objects.get_or_create(team=job_team, name=name, defaults={"created_by": actor})
                # The model's row is the lock on its version numbers.
                model = Model.objects.select_for_update().select_related("team").get(pk=model.pk)
                _lock_store_files([stored.sha256])
                version = ModelVersion.objects.create(
                    model=model,
                    version=_next_version(model),
                    source_job=job,
                    source_epoch=stored.epoch or (job.checkpoint_epoch if weights == Weights.LAST else None),
                    weights=weights,
                    metrics=dict(job.metrics or {}),
                    imgsz=job.spec.get("imgsz") or stored.imgsz or 640,
                    class_names=stored.class_names,
                    size=stored.size,
                    sha256=stored.sha256,
                    created_by=actor,
                )
                # Checked after the row is written: a deletion of the same bytes that removed the
                # file has committed by now (the lock), and one that comes later sees this row.
                if not store_has(stored.sha256):
                    raise _StoreFileGone
                audit_record(
                    action=AuditEntry.Action.MODEL_REGISTER, actor=actor, target=f"model:{model.pk}",
                    reason=f"Registered {model.name}:{version.version} from job {job.pk}'s {weights} weights"
                    + ("." if user is not None else ", as the job's register_model asked when it completed."),
                    after=version_record(version),
                )
            return version
        except _StoreFileGone:
            continue
    raise BookingError("weights", "The weights store kept changing under this registration; try again.")


def _model_for_change(user, model_id):
    """The model, locked, if `user` may delete it or its versions (selectors.may_delete_model: a team
    admin, the user who registered it, staff); 404 for a model they cannot see, PermissionDenied for
    one they see but may not delete."""
    if not user.is_authenticated:
        raise PermissionDenied("Sign in to change models.")
    model = models_visible(user).filter(pk=model_id).values_list("pk", flat=True).first()
    if model is None:
        raise Http404(f"No model {model_id}.")
    model = Model.objects.select_for_update().select_related("team").get(pk=model)
    if not may_delete_model(user, model):
        raise PermissionDenied(
            f"Only an admin of team {model.team.slug}, the user who registered model {model.name}"
            f"{f' ({model.created_by.get_username()})' if model.created_by else ''} or staff may delete it or its versions."
        )
    return model


def _refuse_in_use(model, version=None):
    servings = servings_using(model, version)
    if servings:
        what = f"{model.name}:{version}" if version is not None else f"Model {model.name}"
        bookings = ", ".join(f"#{serving.reservation_id}" for serving in servings)
        raise ModelInUse(
            f"{what} is used by serving booking{'s' if len(servings) > 1 else ''} {bookings}; "
            "delete it once they have ended or been cancelled.",
            servings,
        )


def version_delete(*, user, model_id, version, reason=""):
    """Delete one version, unless a serving booking that may still run (waitlisted, confirmed or
    active) uses it (ModelInUse); its store file goes with the last version that has those bytes."""
    with service_transaction():
        model = _model_for_change(user, model_id)
        target = model.versions.select_related("model__team").filter(version=version).first()
        if target is None:
            raise Http404(f"Model {model.name} has no version {version}.")
        _refuse_in_use(model, version)
        before = version_record(target)
        target.delete()
        audit_record(
            action=AuditEntry.Action.MODEL_DELETE, actor=user, target=f"model:{model.pk}",
            reason=reason or f"Deleted {model.name}:{version}.", before=before,
        )
        _remove_unused_files([before["sha256"]])


def model_delete(*, user, model_id, reason=""):
    """Delete a model and all its versions, unless a serving booking that may still run (waitlisted,
    confirmed or active) uses any of them."""
    with service_transaction():
        model = _model_for_change(user, model_id)
        _refuse_in_use(model)
        versions = list(model.versions.select_related("model__team").order_by("version"))
        before = {"team": model.team.slug, "model": model.name, "versions": [version_record(v) for v in versions]}
        model.versions.all().delete()
        model_pk = model.pk
        model.delete()
        audit_record(
            action=AuditEntry.Action.MODEL_DELETE, actor=user, target=f"model:{model_pk}",
            reason=reason or f"Deleted model {model.name} and its {len(versions)} version(s).", before=before,
        )
        _remove_unused_files([v.sha256 for v in versions])
