"""Changes to a booking after it is made: cancel, transfer, edit, move, release unused slots."""

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from .. import policy, selectors
from ..errors import BookingConflict, BookingError
from ..models import Allocation, AuditEntry, Notice, Reservation
from ..utc_text import utc_moment
from .audit import audit_change, snapshot
from .locks import lock_gpus, lock_reservation, service_transaction
from .notices import notice_send
from .preemption import preemption_withdraw
from .quota import quota_decide
from .records import bookable_gpus, cancel_locked, check_gpu_ids
from .waitlist import waitlist_promote

Status = Reservation.Status


def _lock_open(reservation_id, actor):
    """Lock a reservation `actor` may change and that can still change."""
    reservation = lock_reservation(reservation_id)
    if reservation is None:
        raise Reservation.DoesNotExist(f"No reservation {reservation_id}.")
    if not policy.can_manage(actor, reservation):
        raise PermissionDenied("Only the owner, a team admin or staff may change this reservation.")
    if reservation.status not in Reservation.OPEN_STATUSES:
        raise BookingError(
            "non_field_errors", f"The reservation is {reservation.status}; it can no longer be changed."
        )
    return reservation


def _require_reason(actor, reservation, reason):
    if actor.pk != reservation.user_id and not reason.strip():
        raise BookingError("reason", "Say why when you change someone else's reservation.")


def reservation_cancel(*, reservation_id, actor, reason=""):
    with service_transaction():
        reservation = _lock_open(reservation_id, actor)
        _require_reason(actor, reservation, reason)
        before = cancel_locked(
            reservation, action=AuditEntry.Action.CANCEL, actor=actor, reason=reason,
            job_reason=f"Reservation cancelled by {actor.get_username()}: {reason}",
        )
        if actor.pk != reservation.user_id:
            notice_send(
                user=reservation.user, kind=Notice.Kind.CANCELLED, reservation=reservation,
                message=f"{actor.get_username()} cancelled your reservation #{reservation.pk}: {reason}",
            )
        if reservation.preempted.filter(status__in=policy.LIVE_STATUSES).exists():
            # Bookings it was about to preempt get their time back first, before the waitlist.
            preemptor_id = reservation.pk
            transaction.on_commit(lambda: preemption_withdraw(preemptor_id=preemptor_id), robust=True)
        if before["status"] != Status.WAITLISTED:
            # The window is free now: let the waitlist have it, after this commit is visible.
            transaction.on_commit(lambda: waitlist_promote(), robust=True)
    return reservation


def reservation_transfer(*, reservation_id, actor, to, reason=""):
    target = get_user_model().objects.filter(username=to, is_active=True).first()
    if target is None:
        raise BookingError("to", f"No active user named {to!r}.")
    with service_transaction():
        reservation = _lock_open(reservation_id, actor)
        _require_reason(actor, reservation, reason)
        if target.pk == reservation.user_id:
            raise BookingError("to", f"{to} already owns this reservation.")
        refusal = policy.transfer_refusal(actor, reservation, target)
        if refusal:
            raise BookingError("to", refusal)
        before = snapshot(reservation)
        previous_owner = reservation.user
        reservation.user = target
        reservation.save(update_fields=["user", "updated"])
        audit_change(action=AuditEntry.Action.TRANSFER, actor=actor, reservation=reservation, reason=reason, before=before)
        notice_send(
            user=target, kind=Notice.Kind.TRANSFERRED, reservation=reservation,
            message=f"{actor.get_username()} transferred reservation #{reservation.pk} to you: {reason}",
        )
        if actor.pk != previous_owner.pk:
            notice_send(
                user=previous_owner, kind=Notice.Kind.TRANSFERRED, reservation=reservation,
                message=f"{actor.get_username()} transferred your reservation #{reservation.pk} to {to}: {reason}",
            )
    return reservation


def reservation_update(*, reservation_id, actor, reason="", title=None, priority=None, preemptible=None):
    """Edit what does not move GPU time (title, priority, preemptible)."""
    return reservation_edit(
        reservation_id=reservation_id, actor=actor, reason=reason, title=title, priority=priority,
        preemptible=preemptible,
    )


def reservation_move(*, reservation_id, actor, start, slots, gpu_ids=None, reason="", now=None):
    """Move a confirmed (not yet started) booking to another window, whole: on the same GPUs, or on
    `gpu_ids` (as many as it holds; e.g. off a GPU the health check took out)."""
    return reservation_edit(
        reservation_id=reservation_id, actor=actor, reason=reason, start=start, slots=slots, gpu_ids=gpu_ids, now=now
    )


def reservation_edit(
    *, reservation_id, actor, reason="", title=None, priority=None, preemptible=None, start=None, slots=None,
    gpu_ids=None, now=None,
):
    """Change a booking in one transaction: its window (`start` and `slots`: moved whole, on the same
    GPUs or `gpu_ids`, only before it starts) and what does not move GPU time (title, priority,
    preemptible). Each change is audited; nothing is written when any part is refused."""
    now = now or timezone.now()
    with service_transaction():
        reservation = _lock_open(reservation_id, actor)
        if start is not None:
            _move_locked(reservation, actor=actor, start=start, slots=slots, gpu_ids=gpu_ids, reason=reason, now=now)
        _update_locked(reservation, actor=actor, reason=reason, title=title, priority=priority, preemptible=preemptible)
    return reservation


def _update_locked(reservation, *, actor, reason, title, priority, preemptible):
    before = snapshot(reservation)
    new_priority = priority if priority is not None else reservation.priority
    new_preemptible = reservation.preemptible if preemptible is None else preemptible
    if priority is not None or preemptible is not None:
        new_preemptible = policy.resolve_preemptible(actor, new_priority, new_preemptible)
        if reservation.borrowed:
            policy.require_borrowed_terms(new_priority, new_preemptible)
    reservation.title = reservation.title if title is None else title
    reservation.priority = new_priority
    reservation.preemptible = new_preemptible
    reservation.save(update_fields=["title", "priority", "preemptible", "updated"])
    if snapshot(reservation, before["gpus"]) != before:
        audit_change(action=AuditEntry.Action.UPDATE, actor=actor, reservation=reservation, reason=reason, before=before)


def _move_locked(reservation, *, actor, start, slots, gpu_ids, reason, now):
    if not policy.may_move(reservation, now):
        raise BookingError("start", "Only a confirmed booking that has not started can be moved.")
    end = policy.validate_window(start, slots, now)
    held = sorted(reservation.allocations.values_list("gpu_id", flat=True))
    target = held if gpu_ids is None else check_gpu_ids(list(gpu_ids))
    if len(target) != len(held):
        raise BookingError("gpus", f"Move it to as many GPUs as it holds ({len(held)}).")
    # The team's quota (locks.py: after the reservation, before GPUs): the new window must fit it,
    # the old one given up. Borrowed time stays borrowed (its borrow limit is checked).
    quota = quota_decide(
        team_id=reservation.team_id, start=start, end=end, gpus=len(held), borrow=False, actor=actor,
        borrowed=reservation.borrowed, exclude=(reservation.pk,),
    )
    # Both GPU sets in one id-ordered lock, then the new ones checked to exist and be healthy.
    lock_gpus(sorted(set(held) | set(target)))
    if target != held:
        bookable_gpus(target, lock=False)
    gpu_ids = target
    conflicts = list(selectors.conflicting_allocations(gpu_ids, start, end, exclude_reservation=reservation.pk))
    if conflicts:
        raise BookingConflict(
            "The GPUs are already booked for that window.",
            conflicts=conflicts,
            suggestions=selectors.booking_suggestions(now=now, start=start, slots=slots, gpu_ids=gpu_ids),
        )
    before = snapshot(reservation, held)
    reservation.start, reservation.end = start, end
    reservation.save(update_fields=["start", "end", "updated"])
    if gpu_ids == held:
        reservation.allocations.update(start=start, end=end)
    else:
        reservation.allocations.all().delete()
        Allocation.objects.bulk_create(
            [Allocation(reservation=reservation, gpu_id=gpu_id, start=start, end=end) for gpu_id in gpu_ids]
        )
        reservation.held_allocations = None  # allocation_list reads the new ones
    audit_change(
        action=AuditEntry.Action.MOVE, actor=actor, reservation=reservation, before=before, gpu_ids=gpu_ids,
        reason=" ".join(part for part in (reason, quota.audit_reason) if part),
    )
    if actor.pk != reservation.user_id:
        notice_send(
            user=reservation.user, kind=Notice.Kind.MOVED, reservation=reservation,
            message=(
                f"{actor.get_username()} moved your reservation #{reservation.pk} to "
                f"{utc_moment(start)}: {reason}"
            ),
        )
    transaction.on_commit(lambda: waitlist_promote(), robust=True)


def reservation_release_early(*, reservation_id, reason, now=None):
    """Give back the whole slots an active booking will not use (its job finished, or it is a
    no-show), so others and the waitlist can have them (rule: policy.released_end)."""
    now = now or timezone.now()
    with service_transaction():
        reservation = lock_reservation(reservation_id)
        new_end = policy.released_end(reservation, now) if reservation is not None else None
        if new_end is None:
            return None
        before = snapshot(reservation)
        reservation.end = new_end
        reservation.save(update_fields=["end", "updated"])
        reservation.allocations.update(end=new_end)
        audit_change(action=AuditEntry.Action.RELEASE, reservation=reservation, reason=reason, before=before)
        notice_send(
            user=reservation.user, kind=Notice.Kind.RELEASED, reservation=reservation,
            message=f"Reservation #{reservation.pk} now ends at {utc_moment(new_end)}: {reason}",
        )
        transaction.on_commit(lambda: waitlist_promote(), robust=True)
    return reservation
