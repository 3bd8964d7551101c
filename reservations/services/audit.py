"""The audit log: every change is recorded in the transaction that makes it."""

from ..models import AuditEntry


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
