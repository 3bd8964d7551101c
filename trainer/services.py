"""Writes for training jobs. The booking service creates a job with its reservation."""

from django.utils import timezone

from reservations.errors import BookingError

from .models import TrainingJob


def job_spec_check(*, user, team, spec):
    """Rules a serializer cannot check alone: what `resume_from` may name."""
    source_id = spec.get("resume_from")
    if source_id is None:
        return spec
    source = TrainingJob.objects.select_related("reservation").filter(pk=source_id).first()
    if source is None:
        raise BookingError("job", f"resume_from: no job {source_id}.")
    if not user.is_staff and source.reservation.team_id != team.pk:
        raise BookingError("job", f"resume_from: job {source_id} belongs to another team.")
    if not source.checkpoint:
        raise BookingError("job", f"resume_from: job {source_id} has no checkpoint to resume from.")
    return spec


def job_create(*, reservation, spec):
    """Inside the booking's transaction: the job waits (queued) for its slot."""
    return TrainingJob.objects.create(
        reservation=reservation,
        spec=spec,
        epochs=spec["epochs"],
        resumed_from_id=spec.get("resume_from"),
        reason="Booked; waits for the slot to start.",
        created=timezone.now(),
    )
