"""The clock: what beat's tick moves along as time passes."""

from django.db.models import Prefetch
from django.utils import timezone

from .. import metrics
from ..models import Allocation, AuditEntry, IdempotencyRecord, Reservation
from .audit import snapshot
from .locks import service_transaction

Status = Reservation.Status


def reservations_advance(*, now=None):
    """Confirmed bookings whose start has come become active, and ended ones complete."""
    now = now or timezone.now()
    changed = 0
    transitions = [
        (Status.CONFIRMED, {"start__lte": now, "end__gt": now}, Status.ACTIVE, AuditEntry.Action.ACTIVATE),
        # A preempted booking ends through reservation_reclaim, as "preempted".
        (Status.CONFIRMED, {"end__lte": now, "preempted_by": None}, Status.COMPLETED, AuditEntry.Action.COMPLETE),
        (Status.ACTIVE, {"end__lte": now, "preempted_by": None}, Status.COMPLETED, AuditEntry.Action.COMPLETE),
    ]
    for old, when, new, action in transitions:
        with service_transaction():
            # skip_locked: a booking locked right now is being changed (cancelled, cut by a
            # preemption); the next tick sees it as it is then, rather than this tick waiting on it.
            due = list(
                Reservation.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(status=old, **when)
                .select_related("user", "team")
                .prefetch_related(
                    Prefetch("allocations", queryset=Allocation.objects.order_by("gpu_id"), to_attr="held_allocations")
                )
            )
            entries = []
            for reservation in due:
                before = snapshot(reservation)
                reservation.status = new
                entries.append(
                    AuditEntry(action=action, reservation=reservation, before=before, after=snapshot(reservation))
                )
            Reservation.objects.filter(pk__in=[r.pk for r in due]).update(status=new, updated=now)
            AuditEntry.objects.bulk_create(entries)
            changed += len(due)
        metrics.BOOKING_TRANSITIONS.labels(to=new).inc(len(due))  # after the commit: only what happened
    return changed


def idempotency_prune(*, older_than):
    return IdempotencyRecord.objects.filter(created__lt=older_than).delete()[0]
