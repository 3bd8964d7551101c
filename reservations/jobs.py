"""What the booking side needs of the work a booking may carry: one small interface.

`reservations` never imports `trainer` or `serving` (they use reservations, not the reverse). A
booking may carry work: a training job (`job`) or models to serve (`serve`). The booking flows need a
few things from the app behind each kind: validate its spec, create it with its booking, stop it when
the booking ends early, know where it stands (for preemption), say what a rebooking carries on, and
show it. Each app provides them as a `WorkKind` and registers it in `work_kinds` from its
AppConfig.ready() (trainer.apps, serving.apps). Without any (an installation with neither app),
bookings carry no work.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q
from rest_framework import serializers

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


@runtime_checkable
class WorkKind(Protocol):
    """One kind of work a booking may carry, as the booking flows see it."""

    # The booking's field that carries this kind of work ("job", "serve").
    field: str
    # The one-to-one relation from a booking to its work of this kind (a model with `started_at` and
    # `ended_at`: when it ran on the GPUs). Reservation querysets select it, so showing a booking's
    # work costs no query; the usage report and the no-show rule read it.
    related_name: str

    def spec_serializer(self) -> serializers.Field:
        """A serializer (instance) that validates the booking's field."""

    def check_spec(self, *, user, team, spec: dict, series: bool = False) -> dict:
        """Rules that need the database (who may resume or serve what). Returns the spec to store.
        `series`: the booking is an occurrence of a recurring booking (a job may then resume from
        the previous occurrence's: "resume_from": "previous")."""

    def create(self, *, reservation, spec: dict | None, now: datetime) -> list[str]:
        """Inside the booking's transaction: the work that runs in the booking (`spec` None: the
        booking carries none of this kind). Returns warnings for the person booking."""

    def replace(self, *, reservation, spec: dict | None, now: datetime) -> None:
        """Inside a transaction holding the booking's lock, before the booking begins: its work of
        this kind becomes `spec` (None: none), as a series change asks of its future occurrences."""

    def stop(self, *, reservation, reason: str) -> None:
        """Inside the transaction that ends the booking early: stop its work (checkpoint, drain)."""

    def state(self, reservation) -> JobState | None:
        """The booking's JobState, or None when it carries none of this kind."""

    def rebook(self, state: JobState) -> tuple[dict, str]:
        """(spec, note): what the rebooked unused part of a preempted booking carries on with, and a
        few words for the audit log."""

    def render(self, reservation) -> dict | None:
        """The booking's work of this kind as its JSON shows it, or None."""

    def prefetch(self) -> list:
        """Lookups from a booking (names or Prefetch objects) for what render() shows beyond the
        one-to-one relation (a serving's replicas), so a list of bookings renders their work in a
        fixed number of queries, however many it lists."""


class BookingWork:
    """The kinds of work the apps registered, together: the booking flows talk to this."""

    def __init__(self):
        self.kinds = {}
        self.related_names = ()

    def register(self, kind: WorkKind):
        """Called by the app behind `kind` from its AppConfig.ready()."""
        if not isinstance(kind, WorkKind):
            raise ImproperlyConfigured(f"{kind!r} is not a WorkKind (reservations.jobs)")
        if kind.field in self.kinds:
            raise ImproperlyConfigured(f"Two kinds of work register the booking field {kind.field!r}")
        self.kinds[kind.field] = kind
        self.related_names += (kind.related_name,)

    def without_work(self):
        """A filter on reservations: those that carry no work of any kind."""
        return Q(**{f"{name}__isnull": True for name in self.related_names})

    def spec_serializer(self, field):
        return self.kinds[field].spec_serializer()

    def serializer_fields(self):
        """The booking request's fields for work, each with its kind's serializer."""
        return {field: kind.spec_serializer() for field, kind in self.kinds.items()}

    def check(self, *, user, team, work, series=False):
        """The booking's work ({field: spec}), each spec checked by its kind; at most one kind.
        `series`: it is (the template of) an occurrence of a recurring booking."""
        work = {field: spec for field, spec in (work or {}).items() if spec is not None}
        policy.require_one_kind_of_work(work)
        return {
            field: self.kinds[field].check_spec(user=user, team=team, spec=spec, series=series)
            for field, spec in work.items()
        }

    def create(self, *, reservation, work, now):
        warnings = []
        for field, kind in self.kinds.items():
            warnings += kind.create(reservation=reservation, spec=(work or {}).get(field), now=now)
        return warnings

    def replace(self, *, reservation, work, now):
        for field, kind in self.kinds.items():
            kind.replace(reservation=reservation, spec=(work or {}).get(field), now=now)

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

    def prefetches(self):
        """Every kind's prefetch() lookups: what reservation_queryset() loads with the bookings."""
        return [lookup for kind in self.kinds.values() for lookup in kind.prefetch()]

    def render(self, reservation, field):
        kind = self.kinds.get(field)
        return kind.render(reservation) if kind is not None else None


# The registry: trainer registers training ("job") and serving its models to serve ("serve"), each in
# its AppConfig.ready(), as apps register their models with admin.site.
work_kinds = BookingWork()
