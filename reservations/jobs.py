"""What the booking side needs of the training that a booking may carry: one small interface.

`reservations` never imports `trainer` (trainer uses reservations, not the reverse). A booking may
carry a training job, so the booking flows need a few things from the training side: validate a
job spec, create the job with its booking, stop it when the booking ends early, know where it stands
(for preemption), and show it. The training app provides them as a `JobHooks` subclass that settings
name (`JOB_HOOKS = "trainer.hooks.TrainerJobs"`). Without it (an installation with no training app),
bookings work and a `job` is refused.
"""

import functools
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils.module_loading import import_string
from rest_framework import serializers

from .errors import BookingError


@dataclass(frozen=True)
class JobState:
    """Where a booking's job stands, as far as the booking rules care."""

    id: int
    status: str
    spec: dict
    live: bool  # a training process exists, or is about to
    ended: bool  # nothing left to run or resume (completed, failed or stopped for good)
    completed: bool
    spawned_at: datetime | None  # when its training process started (policy.reclaim_time)


class JobHooks:
    """The interface, and the behaviour with no training app: no jobs."""

    # Related names that reservation querysets select, so showing a booking's job costs no query.
    select_related = ()

    def spec_serializer(self):
        """A serializer (instance) that validates a booking's `job`."""
        return _NoJobs(required=False)

    def check_spec(self, *, user, team, spec):
        """Rules that need the database (who may resume what). Returns the spec to store."""
        raise BookingError("job", "Training is not available on this installation.")

    def create(self, *, reservation, spec, now):
        """Inside the booking's transaction: the job that runs in the booking (`spec` None: the
        booking carries none). Returns warnings for the person booking (e.g. its node is offline)."""
        if spec is not None:
            raise BookingError("job", "Training is not available on this installation.")
        return []

    def stop(self, *, reservation, reason):
        """Inside the transaction that ends the booking early: stop its job with a checkpoint."""

    def state(self, reservation):
        """The booking's JobState, or None when it carries no job."""
        return None

    def render(self, reservation):
        """The booking's job as its JSON shows it, or None."""
        return None


class _NoJobs(serializers.Field):
    def to_internal_value(self, data):
        raise serializers.ValidationError("Training is not available on this installation.")

    def to_representation(self, value):
        return None


@functools.cache
def hooks():
    """The training side's hooks, named by settings.JOB_HOOKS (the project wires them, as Django
    wires its backends); without it, bookings carry no jobs."""
    path = getattr(settings, "JOB_HOOKS", "")
    return import_string(path)() if path else JobHooks()
