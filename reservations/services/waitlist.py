"""The waitlist: a request that found its window taken is confirmed as soon as the window frees."""

from django.db import IntegrityError
from django.utils import timezone

from .. import selectors
from ..models import AuditEntry, Notice, Reservation
from ..utc_text import utc_moment
from .audit import audit_change, snapshot
from .locks import is_overlap_violation, lock_gpus, lock_reservation, service_transaction
from .notices import notice_send
from .quota import quota_fits
from .records import pick_free_gpus, write_allocations

Status = Reservation.Status


def waitlist_promote(*, now=None):
    """Confirm every waitlisted booking whose window is free now and fits its team's quota, in
    fair-share order (policy.fair_share_key: the team with the least recent use per weight first,
    oldest request first within a team); expire those whose window has passed. Level-triggered: safe
    to run any time, from anywhere."""
    now = now or timezone.now()
    promoted = []
    for reservation_id in selectors.waitlist_order(now):
        try:
            with service_transaction():
                if _promote_one(reservation_id, now):
                    promoted.append(reservation_id)
        except IntegrityError as exc:
            if not is_overlap_violation(exc):
                raise
    return promoted


def _promote_one(reservation_id, now):
    # skip_locked: another sweep (tick's, or one run after a commit) is deciding this request now;
    # waiting for it would only decide the same thing again.
    reservation = lock_reservation(reservation_id, skip_locked=True)
    if reservation is None or reservation.status != Status.WAITLISTED:
        return False  # promoted, cancelled or being handled by another sweep
    if reservation.end <= now:
        _expire(reservation)
        return False
    asked = sorted(reservation.allocations.values_list("gpu_id", flat=True))
    # The team's quota (after the reservation, before GPUs: locks.py): in quota, or borrowed when the
    # request asked to borrow, or it waits (a team over its quota waits for room, like for GPUs).
    borrowed = quota_fits(
        team_id=reservation.team_id, start=reservation.start, end=reservation.end, gpus=reservation.gpu_count,
        may_borrow=reservation.borrowed,
    )
    if borrowed is None:
        return False
    if asked:
        lock_gpus(asked)
        if selectors.overlapping_allocations(asked, reservation.start, reservation.end).exists():
            return False
        chosen = asked
    else:
        chosen = pick_free_gpus(
            start=reservation.start, end=reservation.end, gpu_count=reservation.gpu_count,
            allow_multi_node=reservation.allow_multi_node,
        )
        if chosen is None:
            return False
    before = snapshot(reservation, asked)
    reservation.status = Status.CONFIRMED
    reservation.borrowed = borrowed
    reservation.preemptible = reservation.preemptible or borrowed
    reservation.save(update_fields=["status", "borrowed", "preemptible", "updated"])
    if asked:
        reservation.allocations.update(live=True)
    else:
        write_allocations(reservation, chosen)
    audit_change(
        action=AuditEntry.Action.PROMOTE, reservation=reservation, before=before, gpu_ids=chosen,
        reason="GPUs came free in the waitlisted window." + (" Booked as borrowed time: the team is over its quota." if borrowed else ""),
    )
    notice_send(
        user=reservation.user, kind=Notice.Kind.WAITLIST_CONFIRMED, reservation=reservation,
        message=(
            f"Your waitlisted reservation #{reservation.pk} is confirmed for "
            f"{utc_moment(reservation.start)}."
        ),
    )
    return True


def _expire(reservation):
    before = snapshot(reservation)
    reservation.status = Status.CANCELLED
    reservation.save(update_fields=["status", "updated"])
    audit_change(
        action=AuditEntry.Action.EXPIRE, reservation=reservation, before=before,
        reason="The waitlisted window passed without GPUs coming free.",
    )
    notice_send(
        user=reservation.user, kind=Notice.Kind.WAITLIST_EXPIRED, reservation=reservation,
        message=f"Waitlisted reservation #{reservation.pk} expired: no GPUs came free in its window.",
    )
