"""The training side of a booking, as the booking services see it (reservations.jobs.WorkKind):
trainer.apps registers it for the booking field `job`."""

from django.core.exceptions import ObjectDoesNotExist

from reservations.jobs import JobState
from reservations.models import Reservation

from . import services
from .api import JobSerializer
from .models import TrainingJob
from .spec import PREVIOUS, JobSpecSerializer


def _job(reservation):
    try:
        return reservation.job
    except ObjectDoesNotExist:
        return None


class TrainingWork:
    field = "job"
    related_name = "job"

    def spec_serializer(self):
        return JobSpecSerializer(required=False)

    def check_spec(self, *, user, team, spec, series=False):
        return services.job_spec_check(user=user, team=team, spec=spec, series=series)

    def create(self, *, reservation, spec, now):
        if spec is None:
            # Cache "no job" on the booking, so showing it asks nothing more.
            Reservation.job.related.set_cached_value(reservation, None)
            return []
        return services.job_create(reservation=reservation, spec=spec, now=now)

    def replace(self, *, reservation, spec, now):
        services.job_replace(reservation=reservation, spec=spec, now=now)

    def stop(self, *, reservation, reason):
        services.job_stop_for_booking(reservation=reservation, reason=reason)

    def state(self, reservation):
        job = TrainingJob.objects.filter(reservation=reservation).first()
        if job is None:
            return None
        return JobState(
            field=self.field,
            id=job.pk,
            status=job.status,
            spec=job.spec,
            live=job.status in TrainingJob.LIVE,
            ended=job.status in TrainingJob.FINISHED,
            completed=job.status == TrainingJob.Status.COMPLETED,
            spawned_at=job.spawned_at,
        )

    def rebook(self, state):
        if state.spec.get("resume_from") == PREVIOUS:
            # It never started (a job resolves "previous" before its start): the rest, an occurrence
            # of the same series, finds the previous occurrence's checkpoint in its place.
            return dict(state.spec), "job resumes from the series' previous occurrence when it starts"
        return dict(state.spec, resume_from=state.id), f"job resumes from job {state.id}'s checkpoint"

    def render(self, reservation):
        job = _job(reservation)
        return JobSerializer(job).data if job is not None else None

    def prefetch(self):
        return []  # a job shows its own fields only
