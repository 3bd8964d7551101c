"""The audit log: every change is recorded in the transaction that makes it. On PostgreSQL it is
partitioned by month (migration 0017), and beat keeps the coming months' partitions made."""

import logging
from datetime import date

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from ..models import AuditEntry

log = logging.getLogger(__name__)

# PostgreSQL's lock_not_available: the partition function gave up waiting for the log (0017).
LOCK_NOT_AVAILABLE = "55P03"


def snapshot(reservation, gpu_ids=None):
    """The audited state of a reservation, JSON-ready."""
    if gpu_ids is None:
        gpu_ids = sorted(a.gpu_id for a in reservation.allocation_list)
    return {
        "user": reservation.user.get_username(),
        "team": reservation.team.slug,
        "title": reservation.title,
        "gpus": list(gpu_ids),
        "start": reservation.start.isoformat(),
        "end": reservation.end.isoformat(),
        "priority": reservation.priority,
        "preemptible": reservation.preemptible,
        "status": reservation.status,
        "preempted_by": reservation.preempted_by_id,
        "reclaim_at": reservation.reclaim_at.isoformat() if reservation.reclaim_at else None,
    }


def audit_record(*, action, actor=None, reservation=None, target="", reason="", before=None, after=None):
    return AuditEntry.objects.create(
        action=action,
        actor=actor if actor is not None and actor.is_authenticated else None,
        reservation=reservation,
        target=target,
        reason=reason,
        before=before,
        after=after,
    )


def audit_change(*, action, reservation, before, actor=None, reason="", gpu_ids=None):
    """Record a change to `reservation` from `before` to its state now."""
    return audit_record(
        action=action, actor=actor, reservation=reservation, reason=reason,
        before=before, after=snapshot(reservation, before["gpus"] if gpu_ids is None else gpu_ids),
    )


def audit_partitions_ensure(*, months_ahead, today=None):
    """Make the audit log's partitions for this month and the `months_ahead` after it, where missing
    (PostgreSQL; SQLite's log is one table). Returns what became of each month, by "YYYY-MM":

    - "created", or "exists" (two beats at once: the function takes a lock, the second finds it);
    - "default_has_rows": entries of that month went to the default partition (no partition was made
      in time), and PostgreSQL makes no partition over them. The month keeps using the default
      partition, which works; the warning is for an operator (README, "The audit log over the years");
    - "busy": the log stayed locked past the function's lock_timeout; tomorrow's run tries again.
    """
    if connection.vendor != "postgresql":
        return {}
    first = (today or timezone.now().date()).replace(day=1)  # a UTC date, as the partitions' bounds
    outcomes = {}
    for ahead in range(months_ahead + 1):
        month = date(first.year + (first.month - 1 + ahead) // 12, (first.month - 1 + ahead) % 12 + 1, 1)
        try:
            # One short transaction a month: making a partition locks the whole log for an instant.
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT reservations_audit_partition_add(%s)", [month])
                outcome = cursor.fetchone()[0]
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            outcome = "busy"
        if outcome == "created":
            log.info("audit log: partition for %s made", f"{month:%Y-%m}")
        elif outcome == "default_has_rows":
            log.warning(
                "audit log: %s has entries in the default partition, so it gets no partition of its own "
                "(its entries stay there, and are kept)", f"{month:%Y-%m}",
            )
        elif outcome == "busy":
            log.warning("audit log: partition for %s not made, the log stayed locked; tried again tomorrow", f"{month:%Y-%m}")
        outcomes[f"{month:%Y-%m}"] = outcome
    return outcomes
