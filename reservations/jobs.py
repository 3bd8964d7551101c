"""What the booking side needs of the work a booking may carry: one small interface.

`reservations` never imports `trainer` or `serving` (they use reservations, not the reverse). A
booking may carry work: a training job (`job`) or models to serve (`serve`). The booking flows need a
few things from the app behind each kind: validate its spec, create it with its booking, stop it when
the booking ends early, know where it stands (for preemption), say what a rebooking carries on, and
show it. Each app provides them as a `JobHooks` subclass; settings list them
(`BOOKING_WORK = ["trainer.hooks.TrainerJobs", "serving.hooks.ServingHooks"]`), the way Django wires
its backends. Without any (an installation with neither app), bookings carry no work.
"""

import functools
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Q
from django.utils.module_loading import import_string

from . import policy


@dataclass(frozen=True)
class JobState:
    """Where a booking's work stands, as far as the booking rules care."""

    field: str  # the kind of work: the booking's field it came in ("job", "serve")
    id: int
    status: str
    spec: dict
    live: bool  # a process runs it on the booked devices, or is about to
    ended: bool  # nothing left to run or resume (completed, failed or stopped for good)
    completed: bool
    spawned_at: datetime | None  # when its process started (policy.reclaim_time)


class JobHooks:
    """One kind of work a booking may carry, as the booking flows see it."""

    # The booking's field that carries this kind of work.
    field = "job"
    # The one-to-one relation from a booking to its work of this kind (a model with `started_at` and
    # `ended_at`: when it ran on the GPUs). Reservation querysets select it, so showing a booking's
    # work costs no query; the usage report and the no-show rule read it.
    related_name = None

    def spec_serializer(self):
        """A serializer (instance) that validates the booking's field."""
        raise NotImplementedError

    def check_spec(self, *, user, team, spec):
        """Rules that need the database (who may resume or serve what). Returns the spec to store."""
        return spec

    def create(self, *, reservation, spec, now):
        """Inside the booking's transaction: the work that runs in the booking (`spec` None: the
        booking carries none of this kind). Returns warnings for the person booking."""
        return []

    def stop(self, *, reservation, reason):
        """Inside the transaction that ends the booking early: stop its work (checkpoint, drain)."""

    def state(self, reservation):
        """The booking's JobState, or None when it carries none of this kind."""
        return None

    def rebook(self, state):
        """(spec, note): what the rebooked unused part of a preempted booking carries on with, and a
        few words for the audit log."""
        return state.spec, ""

    def render(self, reservation):
        """The booking's work of this kind as its JSON shows it, or None."""
        return None


class BookingWork:
    """The kinds of work settings name, together: the booking flows talk to this."""

    def __init__(self, kinds):
        self.kinds = {kind.field: kind for kind in kinds}
        self.related_names = tuple(kind.related_name for kind in kinds if kind.related_name)

    def without_work(self):
        """A filter on reservations: those that carry no work of any kind."""
        return Q(**{f"{name}__isnull": True for name in self.related_names})

    def spec_serializer(self, field):
        return self.kinds[field].spec_serializer()

    def serializer_fields(self):
        """The booking request's fields for work, each with its kind's serializer."""
        return {field: kind.spec_serializer() for field, kind in self.kinds.items()}

    def check(self, *, user, team, work):
        """The booking's work ({field: spec}), each spec checked by its kind; at most one kind."""
        work = {field: spec for field, spec in (work or {}).items() if spec is not None}
        policy.require_one_kind_of_work(work)
        return {field: self.kinds[field].check_spec(user=user, team=team, spec=spec) for field, spec in work.items()}

    def create(self, *, reservation, work, now):
        warnings = []
        for field, kind in self.kinds.items():
            warnings += kind.create(reservation=reservation, spec=(work or {}).get(field), now=now)
        return warnings

    def stop(self, *, reservation, reason):
        for kind in self.kinds.values():
            kind.stop(reservation=reservation, reason=reason)

    def state(self, reservation):
        for kind in self.kinds.values():
            state = kind.state(reservation)
            if state is not None:
                return state
        return None

    def rebook(self, state):
        """({field: spec}, note) for the rebooked part of a preempted booking whose work is `state`."""
        spec, note = self.kinds[state.field].rebook(state)
        return {state.field: spec}, note

    def render(self, reservation, field):
        kind = self.kinds.get(field)
        return kind.render(reservation) if kind is not None else None


@functools.cache
def hooks():
    """The kinds of work settings.BOOKING_WORK names (the project wires them)."""
    return BookingWork([import_string(path)() for path in getattr(settings, "BOOKING_WORK", [])])
