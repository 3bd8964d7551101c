"""Writes. Every change to a reservation goes through a function here, inside one transaction that
also writes its audit entry.

Locking (so two bookings can never interleave their check and insert): a transaction that changes
an existing reservation locks that reservation's row first; any transaction that takes GPU time then
locks the GPU rows it needs in id order. Nothing locks a reservation while holding GPU rows, so the
order is the same everywhere and no two transactions can deadlock. On PostgreSQL an exclusion
constraint backs this up: should two live allocations ever overlap on one GPU, the insert fails.
"""

import logging

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Prefetch
from django.utils import timezone

from trainer.services import job_create, job_spec_check, job_stop_for_booking

from . import policy, selectors
from .errors import BookingConflict, BookingError
from .models import GPU, Allocation, AuditEntry, IdempotencyRecord, Node, Notice, Reservation

log = logging.getLogger(__name__)

Status = Reservation.Status
EXCLUSION_CONSTRAINT = "allocation_no_overlap"
# Attempts for an "earliest" booking whose chosen window was taken between search and lock.
EARLIEST_ATTEMPTS = 5


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


def notice_send(*, user, kind, message, reservation=None):
    return Notice.objects.create(user=user, kind=kind, message=message, reservation=reservation)


def _is_overlap_violation(exc):
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None) == EXCLUSION_CONSTRAINT


def _check_gpu_ids(gpu_ids):
    """Shape checks that need no database: non-empty, no duplicates."""
    if not gpu_ids:
        raise BookingError("gpus", "Name at least one GPU.")
    duplicates = sorted({g for g in gpu_ids if gpu_ids.count(g) > 1})
    if duplicates:
        raise BookingError("gpus", f"GPU ids appear more than once: {duplicates}.")
    return sorted(gpu_ids)


def _bookable_gpus(gpu_ids, *, lock):
    """The GPUs, each checked to exist and be healthy, with their nodes loaded. With `lock`, the
    rows are locked in id order (see the module docstring) by the same statement."""
    queryset = GPU.objects.select_related("node").filter(id__in=gpu_ids).order_by("id")
    gpus = list(queryset.select_for_update(of=("self",)) if lock else queryset)
    unknown = sorted(set(gpu_ids) - {g.id for g in gpus})
    if unknown:
        raise BookingError("gpus", f"No such GPU: {unknown}.")
    unhealthy = sorted(g.name for g in gpus if not g.healthy)
    if unhealthy:
        raise BookingError("gpus", f"Not healthy, cannot be booked: {', '.join(unhealthy)}.")
    return gpus


def _validate_gpu_count(gpu_count, allow_multi_node):
    if gpu_count < 1:
        raise BookingError("gpu_count", "Ask for at least one GPU.")
    healthy = GPU.objects.filter(healthy=True)
    if allow_multi_node:
        available = healthy.count()
    else:
        per_node = {}
        for node_id in healthy.values_list("node_id", flat=True):
            per_node[node_id] = per_node.get(node_id, 0) + 1
        available = max(per_node.values(), default=0)
    if gpu_count > available:
        where = "in the cluster" if allow_multi_node else "on any one node (see allow_multi_node)"
        raise BookingError("gpu_count", f"Only {available} healthy GPUs {where}; asked for {gpu_count}.")


def _lock_gpus(ids):
    # Always in id order: see the module docstring.
    return list(GPU.objects.select_for_update().filter(id__in=ids).order_by("id").values_list("id", flat=True))


def _pick_gpus(*, start, end, gpu_count, allow_multi_node, now):
    """Lock every healthy GPU (id order) and pick `gpu_count` free ones for [start, end), or None.

    Locking the whole candidate set serialises gpu_count bookings; it is what makes the pick safe.
    """
    _lock_gpus(GPU.objects.filter(healthy=True).values("id"))
    windows = selectors.find_windows(
        slots=int((end - start) / policy.slot_length()),
        after=start,
        now=min(now, start),
        gpu_count=gpu_count,
        allow_multi_node=allow_multi_node,
        latest_start=start,
        limit=1,
    )
    return list(windows[0].gpus) if windows else None


def _hold(reservation, gpus, *, live=True):
    """Write one allocation per GPU (GPU objects or ids) and keep them on the reservation."""
    reservation.held_allocations = Allocation.objects.bulk_create(
        Allocation(
            reservation=reservation,
            **({"gpu": g} if isinstance(g, GPU) else {"gpu_id": g}),
            start=reservation.start,
            end=reservation.end,
            live=live,
        )
        for g in gpus
    )


def reservation_create(
    *,
    user,
    start,
    slots,
    gpu_ids=None,
    gpu_count=None,
    allow_multi_node=False,
    priority=Reservation.Priority.NORMAL,
    preemptible=None,
    team=None,
    title="",
    waitlist=False,
    job=None,
    actor=None,
    now=None,
):
    """Book `gpu_ids` (or any `gpu_count` GPUs) for `slots` slots from `start` ("earliest": the
    nearest free window). On conflict: BookingConflict, or with `waitlist` a waitlisted booking.
    `actor` is who asked, when not the owner (an admin booking for someone). `job` is a validated
    training spec (trainer.spec) to run in the booked slot."""
    now = now or timezone.now()
    if (gpu_ids is None) == (gpu_count is None):
        raise BookingError("gpus", "Give exactly one of gpus or gpu_count.")
    team = policy.resolve_team(user, team)
    preemptible = policy.resolve_preemptible(user, priority, preemptible)
    policy.validate_slots(slots)
    if gpu_ids is not None:
        gpu_ids = _check_gpu_ids(list(gpu_ids))
    else:
        _validate_gpu_count(gpu_count, allow_multi_node)
    if job is not None:
        job = job_spec_check(user=user, team=team, spec=job)
    fields = dict(
        user=user,
        team=team,
        title=title,
        priority=priority,
        preemptible=preemptible,
        gpu_count=len(gpu_ids) if gpu_ids is not None else gpu_count,
        allow_multi_node=allow_multi_node,
    )

    if start == policy.EARLIEST and gpu_ids is not None:
        _bookable_gpus(gpu_ids, lock=False)  # a clear 400 for a bad id, not "no free window"
    for _ in range(EARLIEST_ATTEMPTS if start == policy.EARLIEST else 1):
        if start == policy.EARLIEST:
            found = selectors.find_windows(
                slots=slots, after=now, now=now, gpu_ids=gpu_ids, gpu_count=gpu_count,
                allow_multi_node=allow_multi_node, limit=1,
            )
            if not found:
                raise BookingError(
                    "start", f"No free window of {slots} slot(s) within the booking horizon."
                )
            window_start, window_end = found[0].start, found[0].end
            wanted = list(found[0].gpus)
        else:
            window_start = start
            window_end = policy.validate_window(start, slots, now)
            wanted = gpu_ids
        try:
            with transaction.atomic():
                reservation, conflicts = _book(
                    fields, window_start, window_end, wanted, waitlist=waitlist, job=job,
                    actor=actor or user, now=now,
                )
        except IntegrityError as exc:
            if not _is_overlap_violation(exc):
                raise
            reservation, conflicts = None, None
        if reservation is not None:
            return reservation
    if conflicts is None:
        ids = wanted or [g for g in GPU.objects.filter(healthy=True).values_list("id", flat=True)]
        conflicts = list(selectors.conflicting_allocations(ids, window_start, window_end))
    raise BookingConflict(
        "The GPUs are already booked for that window.",
        conflicts=conflicts,
        suggestions=selectors.booking_suggestions(
            now=now, start=window_start, slots=slots, gpu_ids=gpu_ids, gpu_count=gpu_count,
            allow_multi_node=allow_multi_node,
        ),
    )


def _book(fields, start, end, gpu_ids, *, waitlist, job, actor, now):
    """Inside a transaction: lock, check, insert. Returns (reservation, None) or (None, conflicts)."""
    if gpu_ids is not None:
        gpus = _bookable_gpus(gpu_ids, lock=True)
        # The common case is no conflict: ask cheaply, and build the details only for a 409.
        taken = selectors.overlapping_allocations(gpu_ids, start, end).exists()
        conflicts = list(selectors.conflicting_allocations(gpu_ids, start, end)) if taken else None
        chosen = None if taken else gpus
    else:
        chosen = _pick_gpus(
            start=start, end=end, gpu_count=fields["gpu_count"],
            allow_multi_node=fields["allow_multi_node"], now=now,
        )
        conflicts = None if chosen else list(
            selectors.conflicting_allocations(
                GPU.objects.filter(healthy=True).values("id"), start, end
            )
        )
    if chosen is None and not waitlist:
        return None, conflicts

    status = Status.CONFIRMED if chosen else Status.WAITLISTED
    reservation = Reservation.objects.create(start=start, end=end, status=status, **fields)
    # A waitlisted request remembers the exact GPUs it asked for, not live; a gpu_count request
    # picks its GPUs when promoted.
    _hold(reservation, chosen or gpu_ids or [], live=bool(chosen))
    # Cache the reverse one-to-one either way, so rendering the booking asks nothing more.
    Reservation.job.related.set_cached_value(reservation, job_create(reservation=reservation, spec=job) if job else None)
    audit_record(
        action=AuditEntry.Action.CREATE if chosen else AuditEntry.Action.WAITLIST,
        actor=actor,
        reservation=reservation,
        after=snapshot(reservation),
    )
    return reservation, None


def _locked_open_reservation(reservation_id, actor):
    reservation = (
        Reservation.objects.select_for_update(of=("self",))
        .select_related("user", "team")
        .get(pk=reservation_id)
    )
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
    with transaction.atomic():
        reservation = _locked_open_reservation(reservation_id, actor)
        _require_reason(actor, reservation, reason)
        before = snapshot(reservation)
        reservation.status = Status.CANCELLED
        reservation.save(update_fields=["status", "updated"])
        reservation.allocations.update(live=False)
        audit_record(
            action=AuditEntry.Action.CANCEL, actor=actor, reservation=reservation, reason=reason,
            before=before, after=snapshot(reservation, before["gpus"]),
        )
        if actor.pk != reservation.user_id:
            notice_send(
                user=reservation.user, kind=Notice.Kind.CANCELLED, reservation=reservation,
                message=f"{actor.get_username()} cancelled your reservation #{reservation.pk}: {reason}",
            )
        job_stop_for_booking(reservation=reservation, reason=f"Reservation cancelled by {actor.get_username()}: {reason}")
        if before["status"] != Status.WAITLISTED:
            # The window is free now: let the waitlist have it, after this commit is visible.
            transaction.on_commit(lambda: waitlist_promote())
    return reservation


def reservation_transfer(*, reservation_id, actor, to, reason=""):
    target = get_user_model().objects.filter(username=to, is_active=True).first()
    if target is None:
        raise BookingError("to", f"No active user named {to!r}.")
    with transaction.atomic():
        reservation = _locked_open_reservation(reservation_id, actor)
        _require_reason(actor, reservation, reason)
        if target.pk == reservation.user_id:
            raise BookingError("to", f"{to} already owns this reservation.")
        before = snapshot(reservation)
        previous_owner = reservation.user
        reservation.user = target
        reservation.save(update_fields=["user", "updated"])
        audit_record(
            action=AuditEntry.Action.TRANSFER, actor=actor, reservation=reservation, reason=reason,
            before=before, after=snapshot(reservation, before["gpus"]),
        )
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
    with transaction.atomic():
        reservation = _locked_open_reservation(reservation_id, actor)
        before = snapshot(reservation)
        new_priority = priority if priority is not None else reservation.priority
        new_preemptible = reservation.preemptible if preemptible is None else preemptible
        if priority is not None or preemptible is not None:
            new_preemptible = policy.resolve_preemptible(actor, new_priority, new_preemptible)
        reservation.title = reservation.title if title is None else title
        reservation.priority = new_priority
        reservation.preemptible = new_preemptible
        reservation.save(update_fields=["title", "priority", "preemptible", "updated"])
        after = snapshot(reservation, before["gpus"])
        if after != before:
            audit_record(
                action=AuditEntry.Action.UPDATE, actor=actor, reservation=reservation, reason=reason,
                before=before, after=after,
            )
    return reservation


def reservation_move(*, reservation_id, actor, start, slots, reason="", now=None):
    """Move a confirmed (not yet started) booking to another window on the same GPUs, whole."""
    now = now or timezone.now()
    with transaction.atomic():
        reservation = _locked_open_reservation(reservation_id, actor)
        if reservation.status != Status.CONFIRMED:
            raise BookingError("start", "Only a confirmed booking that has not started can be moved.")
        end = policy.validate_window(start, slots, now)
        gpu_ids = sorted(reservation.allocations.values_list("gpu_id", flat=True))
        _lock_gpus(gpu_ids)
        conflicts = list(
            selectors.conflicting_allocations(gpu_ids, start, end, exclude_reservation=reservation.pk)
        )
        if conflicts:
            raise BookingConflict(
                "The GPUs are already booked for that window.",
                conflicts=conflicts,
                suggestions=selectors.booking_suggestions(now=now, start=start, slots=slots, gpu_ids=gpu_ids),
            )
        before = snapshot(reservation, gpu_ids)
        reservation.start, reservation.end = start, end
        reservation.save(update_fields=["start", "end", "updated"])
        reservation.allocations.update(start=start, end=end)
        audit_record(
            action=AuditEntry.Action.MOVE, actor=actor, reservation=reservation, reason=reason,
            before=before, after=snapshot(reservation, gpu_ids),
        )
        if actor.pk != reservation.user_id:
            notice_send(
                user=reservation.user, kind=Notice.Kind.MOVED, reservation=reservation,
                message=(
                    f"{actor.get_username()} moved your reservation #{reservation.pk} to "
                    f"{start:%Y-%m-%d %H:%M} UTC: {reason}"
                ),
            )
        transaction.on_commit(lambda: waitlist_promote())
    return reservation


def waitlist_promote(*, now=None):
    """Confirm every waitlisted booking whose window is free now, oldest request first; expire
    those whose window has passed. Level-triggered: safe to run any time, from anywhere."""
    now = now or timezone.now()
    promoted = []
    waiting = Reservation.objects.filter(status=Status.WAITLISTED).order_by("created", "id")
    for reservation_id in waiting.values_list("id", flat=True):
        try:
            with transaction.atomic():
                if _promote_one(reservation_id, now):
                    promoted.append(reservation_id)
        except IntegrityError as exc:
            if not _is_overlap_violation(exc):
                raise
    return promoted


def _promote_one(reservation_id, now):
    reservation = (
        Reservation.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("user", "team")
        .filter(pk=reservation_id, status=Status.WAITLISTED)
        .first()
    )
    if reservation is None:  # promoted, cancelled or being handled by another sweep
        return False
    if reservation.end <= now:
        before = snapshot(reservation)
        reservation.status = Status.CANCELLED
        reservation.save(update_fields=["status", "updated"])
        audit_record(
            action=AuditEntry.Action.EXPIRE, reservation=reservation,
            reason="The waitlisted window passed without GPUs coming free.",
            before=before, after=snapshot(reservation, before["gpus"]),
        )
        notice_send(
            user=reservation.user, kind=Notice.Kind.WAITLIST_EXPIRED, reservation=reservation,
            message=f"Waitlisted reservation #{reservation.pk} expired: no GPUs came free in its window.",
        )
        return False
    asked = sorted(reservation.allocations.values_list("gpu_id", flat=True))
    if asked:
        _lock_gpus(asked)
        if selectors.overlapping_allocations(asked, reservation.start, reservation.end).exists():
            return False
        chosen = asked
    else:
        chosen = _pick_gpus(
            start=reservation.start, end=reservation.end, gpu_count=reservation.gpu_count,
            allow_multi_node=reservation.allow_multi_node, now=now,
        )
        if chosen is None:
            return False
    before = snapshot(reservation, asked)
    reservation.status = Status.CONFIRMED
    reservation.save(update_fields=["status", "updated"])
    if asked:
        reservation.allocations.update(live=True)
    else:
        _hold(reservation, chosen)
    audit_record(
        action=AuditEntry.Action.PROMOTE, reservation=reservation,
        reason="GPUs came free in the waitlisted window.",
        before=before, after=snapshot(reservation, chosen),
    )
    notice_send(
        user=reservation.user, kind=Notice.Kind.WAITLIST_CONFIRMED, reservation=reservation,
        message=(
            f"Your waitlisted reservation #{reservation.pk} is confirmed for "
            f"{reservation.start:%Y-%m-%d %H:%M} UTC."
        ),
    )
    return True


def reservation_release_early(*, reservation_id, reason, now=None):
    """Give back the whole slots an active booking will not use (its job finished, or it is a
    no-show), so others and the waitlist can have them. The slot in progress is kept."""
    now = now or timezone.now()
    with transaction.atomic():
        reservation = (
            Reservation.objects.select_for_update(of=("self",)).select_related("user", "team").get(pk=reservation_id)
        )
        new_end = max(policy.ceil_to_slot(now), reservation.start + policy.slot_length())
        started = reservation.status == Status.ACTIVE or (
            reservation.status == Status.CONFIRMED and reservation.start <= now  # before the clock's next tick
        )
        if not started or new_end >= reservation.end:
            return None
        before = snapshot(reservation)
        reservation.end = new_end
        reservation.save(update_fields=["end", "updated"])
        reservation.allocations.update(end=new_end)
        audit_record(
            action=AuditEntry.Action.RELEASE, reservation=reservation, reason=reason,
            before=before, after=snapshot(reservation),
        )
        notice_send(
            user=reservation.user, kind=Notice.Kind.RELEASED, reservation=reservation,
            message=f"Reservation #{reservation.pk} now ends at {new_end:%Y-%m-%d %H:%M} UTC: {reason}",
        )
        transaction.on_commit(lambda: waitlist_promote())
    return reservation


def reservations_advance(*, now=None):
    """The clock: confirmed bookings whose start has come become active, and ended ones complete."""
    now = now or timezone.now()
    changed = 0
    transitions = [
        (Status.CONFIRMED, {"start__lte": now, "end__gt": now}, Status.ACTIVE, AuditEntry.Action.ACTIVATE),
        (Status.CONFIRMED, {"end__lte": now}, Status.COMPLETED, AuditEntry.Action.COMPLETE),
        (Status.ACTIVE, {"end__lte": now}, Status.COMPLETED, AuditEntry.Action.COMPLETE),
    ]
    for old, when, new, action in transitions:
        with transaction.atomic():
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
    return changed


def node_register(*, hostname, devices, now=None):
    """Create or update a node and its devices from discovery. A device that disappeared is kept
    (bookings point at it) but marked unhealthy, so nothing new is booked on it."""
    now = now or timezone.now()
    with transaction.atomic():
        node, _ = Node.objects.select_for_update().get_or_create(hostname=hostname)
        node.online, node.last_heartbeat = True, now
        node.save(update_fields=["online", "last_heartbeat"])
        seen = []
        for device in devices:
            gpu, _ = GPU.objects.update_or_create(
                node=node,
                index=device.index,
                defaults={"model": device.model, "memory_mb": device.memory_mb, "uuid": device.uuid, "healthy": True},
            )
            seen.append(gpu.pk)
        node.gpus.exclude(pk__in=seen).update(healthy=False)
    return node


def idempotency_prune(*, older_than):
    return IdempotencyRecord.objects.filter(created__lt=older_than).delete()[0]
