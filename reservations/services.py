"""Writes. Every change to a reservation goes through a function here, inside one transaction that
also writes its audit entry.

Locking (so two bookings can never interleave their check and insert): a transaction that changes
an existing reservation locks that reservation's row first; any transaction that takes GPU time then
locks the GPU rows it needs in id order. Nothing locks a reservation while holding GPU rows, so the
order is the same everywhere and no two transactions can deadlock. On PostgreSQL an exclusion
constraint backs this up: should two live allocations ever overlap on one GPU, the insert fails.
"""

import json
import logging
import math
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.mail import send_mail
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F, Prefetch
from django.utils import timezone

from trainer.models import TrainingJob
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


def notice_send(*, user, kind, message, reservation=None, data=None, audited=False, actor=None):
    """A notice in the app and the API; after commit, also by e-mail (if the user has an address)
    and to the reservation's team webhook (if it has one). With `audited`, the audit log records
    that it was sent, in the same transaction."""
    notice = Notice.objects.create(
        user=user, kind=kind, message=message, reservation=reservation, data=data or {}
    )
    if audited:
        audit_record(
            action=AuditEntry.Action.NOTICE, actor=actor, reservation=reservation,
            target=f"notice:{notice.pk}", reason=f"{notice.get_kind_display()} to {user.get_username()}: {message}",
        )
    from .tasks import notice_deliver  # tasks import this module

    transaction.on_commit(lambda: notice_deliver(notice.pk))
    return notice


def notice_payload(notice):
    """What a team's webhook receives for a notice."""
    return {
        "id": notice.pk,
        "kind": notice.kind,
        "user": notice.user.get_username(),
        "team": notice.reservation.team.slug if notice.reservation else None,
        "reservation": notice.reservation_id,
        "message": notice.message,
        "data": notice.data,
        "created": notice.created.isoformat(),
    }


def notice_email(*, notice_id):
    """E-mail a notice to its user, once. SMTP errors propagate (the task retries)."""
    notice = Notice.objects.select_related("user").filter(pk=notice_id, emailed_at=None).first()
    if notice is None or not notice.user.email:
        return False
    send_mail(
        subject=f"[GPU scheduler] {notice.get_kind_display()}"
        + (f": reservation #{notice.reservation_id}" if notice.reservation_id else ""),
        message=notice.message,
        from_email=None,
        recipient_list=[notice.user.email],
    )
    Notice.objects.filter(pk=notice_id).update(emailed_at=timezone.now())
    return True


def notice_webhook_post(*, notice_id):
    """POST a notice to its reservation's team webhook. Returns None when delivered (or nothing to
    deliver), else the error, for the task to retry. Never called inside a transaction."""
    notice = (
        Notice.objects.select_related("user", "reservation__team")
        .filter(pk=notice_id, webhook_delivered_at=None)
        .first()
    )
    if notice is None or notice.reservation is None or not notice.reservation.team.webhook_url:
        return None
    Notice.objects.filter(pk=notice_id).update(webhook_attempts=F("webhook_attempts") + 1)
    request = urllib.request.Request(
        notice.reservation.team.webhook_url,
        data=json.dumps(notice_payload(notice), cls=DjangoJSONEncoder).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "gpu-scheduler-webhook/1",
            # The same id on every retry, so a receiver can drop duplicates.
            "X-Notice-Id": str(notice.pk),
            "X-Notice-Kind": notice.kind,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as response:
            response.read(1024)
    except (OSError, ValueError) as exc:  # URLError, HTTPError (non-2xx), timeouts
        error = f"{type(exc).__name__}: {exc}"
        Notice.objects.filter(pk=notice_id).update(webhook_error=error[:2000])
        return error
    Notice.objects.filter(pk=notice_id).update(webhook_delivered_at=timezone.now(), webhook_error="")
    return None


def notice_webhook_gave_up(*, notice_id, error):
    Notice.objects.filter(pk=notice_id).update(webhook_error=f"Gave up after retries: {error}"[:2000])


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
    auto_rebook=True,
    actor=None,
    now=None,
):
    """Book `gpu_ids` (or any `gpu_count` GPUs) for `slots` slots from `start` ("earliest": the
    nearest free window). On conflict: BookingConflict, or with `waitlist` a waitlisted booking.
    `actor` is who asked, when not the owner (an admin booking for someone). `job` is a validated
    training spec (trainer.spec) to run in the booked slot. A booking that overlaps others may
    preempt them (rules in policy); `auto_rebook` says what happens if this one is preempted."""
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
        auto_rebook=auto_rebook,
    )

    if start == policy.EARLIEST and gpu_ids is not None:
        _bookable_gpus(gpu_ids, lock=False)  # a clear 400 for a bad id, not "no free window"
    refusal = None
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
        booking = dict(fields=fields, start=window_start, end=window_end, job=job, actor=actor or user, now=now)
        reservation, conflicts = _attempt(_book, gpu_ids=wanted, **booking)
        if reservation is None and start != policy.EARLIEST and priority != Reservation.Priority.LOW:
            # Taken: perhaps by bookings this one may preempt (rules in policy). "earliest" only
            # ever looks for free time.
            reservation, in_way, refusal = _preempt_or_refuse(gpu_ids=wanted, conflicts=conflicts, **booking)
            conflicts = in_way or conflicts
        if reservation is None and waitlist:
            reservation, conflicts = _attempt(_book, gpu_ids=wanted, waitlist=True, **booking)
        if reservation is not None:
            return reservation
    if conflicts is None:
        ids = wanted or [g for g in GPU.objects.filter(healthy=True).values_list("id", flat=True)]
        conflicts = list(selectors.conflicting_allocations(ids, window_start, window_end))
    suggestions = selectors.booking_suggestions(
        now=now, start=window_start, slots=slots, gpu_ids=gpu_ids, gpu_count=gpu_count,
        allow_multi_node=allow_multi_node,
    )
    message = "The GPUs are already booked for that window."
    earliest = None
    if refusal is not None:
        message = f"The GPUs are already booked for that window, and cannot be preempted: {refusal.reason}."
        earliest = refusal.earliest
        if earliest is not None:
            message = (
                f"Preempting needs {settings.PREEMPTION_NOTICE_MINUTES:g} minutes' notice to its owners: "
                f"start at {earliest:%Y-%m-%d %H:%M} UTC or later."
            )
            suggestions = [
                selectors.Window(tuple(refusal.gpu_ids), earliest, earliest + (window_end - window_start))
            ] + [w for w in suggestions if w.start >= earliest][:4]
    raise BookingConflict(message, conflicts=conflicts, suggestions=suggestions, earliest_allowed_start=earliest)


def _attempt(write, **kwargs):
    """One booking transaction. An overlap caught by the exclusion constraint (a race the locks did
    not cover) reads as "taken": (None, None)."""
    try:
        with transaction.atomic():
            return write(**kwargs)
    except IntegrityError as exc:
        if not _is_overlap_violation(exc):
            raise
        return None, None


def _book(*, fields, start, end, gpu_ids, job, actor, now, waitlist=False):
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
    # A waitlisted request remembers the exact GPUs it asked for, not live; a gpu_count request
    # picks its GPUs when promoted.
    reservation = _insert(
        fields, start, end, chosen or gpu_ids or [], confirmed=bool(chosen), job=job, actor=actor
    )
    return reservation, None


def _insert(fields, start, end, gpus, *, confirmed, job, actor, action=None, reason=""):
    """Write a reservation, its allocations (live when confirmed), its job and its audit entry."""
    status = Status.CONFIRMED if confirmed else Status.WAITLISTED
    reservation = Reservation.objects.create(start=start, end=end, status=status, **fields)
    _hold(reservation, gpus, live=confirmed)
    # Cache the reverse one-to-one either way, so rendering the booking asks nothing more.
    Reservation.job.related.set_cached_value(reservation, job_create(reservation=reservation, spec=job) if job else None)
    audit_record(
        action=action or (AuditEntry.Action.CREATE if confirmed else AuditEntry.Action.WAITLIST),
        actor=actor,
        reservation=reservation,
        reason=reason,
        after=snapshot(reservation),
    )
    return reservation


# --- Preemption: the rules are in policy; here, taking the GPUs and what follows ---------------

PREEMPT_ATTEMPTS = 3
# Jobs in these states have nothing left to resume: their preempted booking is not rebooked.
ENDED_JOBS = TrainingJob.FINISHED


@dataclass(frozen=True)
class _Refusal:
    reason: str
    gpu_ids: tuple = ()
    earliest: object = None


def _preempt_or_refuse(*, fields, start, end, gpu_ids, conflicts, job, actor, now):
    """Book [start, end) by preempting the bookings in the way, if the rules allow. Returns
    (reservation, None, None) or (None, conflicts, refusal); refusal is None when there was nothing
    this booking could take."""
    for _ in range(PREEMPT_ATTEMPTS):
        if gpu_ids is None:
            plan = selectors.preemption_candidate(
                priority=fields["priority"], start=start, end=end, gpu_count=fields["gpu_count"],
                allow_multi_node=fields["allow_multi_node"],
            )
            if plan is None:
                return None, None, None
            wanted, victim_ids = plan
        else:
            wanted = gpu_ids
            if conflicts is None:
                conflicts = list(selectors.conflicting_allocations(gpu_ids, start, end))
            victims = {c.reservation_id: c.reservation for c in conflicts}
            victim_ids = set(victims)
            # Most conflicts are with bookings that may not be preempted: say so from what the
            # conflict check read, without the locks that taking needs.
            refusal = _preemption_refusal(fields["priority"], victims.values(), start, now, wanted)
            if refusal is not None:
                return None, conflicts, refusal
            conflicts = None  # read again under the locks
        outcome = _attempt(
            _take, fields=fields, start=start, end=end, gpu_ids=list(wanted), victim_ids=victim_ids,
            job=job, actor=actor, now=now,
        )
        if outcome != (None, None):  # not a race lost (bookings in the way changed): decided
            return outcome
    return None, None, None


def _preemption_refusal(priority, victims, start, now, gpu_ids):
    """Why the rules (policy) forbid taking the GPUs of `victims` for a booking starting at `start`."""
    victims = list(victims)
    why = policy.preemption_refusal(priority, victims)
    if why:
        return _Refusal(why)
    earliest = policy.earliest_preempting_start(now)
    if policy.needs_notice(victims, now) and start < earliest:
        return _Refusal("not enough notice", tuple(gpu_ids), earliest)
    return None


def _take(*, fields, start, end, gpu_ids, victim_ids, job, actor, now):
    """Inside a transaction: lock the bookings in the way, check the rules, and take their GPUs.
    Returns (None, None) if the bookings in the way changed since they were read."""
    # The usual order: reservations (id order), then GPUs (id order). Every GPU, because a victim
    # may be moved or rebooked onto any of them.
    victims = list(
        Reservation.objects.select_for_update(of=("self",))
        .select_related("user", "team")
        .filter(pk__in=victim_ids)
        .order_by("id")
    )
    _lock_gpus(GPU.objects.values("id"))
    gpus = _bookable_gpus(gpu_ids, lock=False)
    conflicts = list(selectors.conflicting_allocations(gpu_ids, start, end))
    in_way = {c.reservation_id for c in conflicts}
    if not in_way <= {v.pk for v in victims}:
        return None, None
    if not in_way:  # freed meanwhile
        return _insert(fields, start, end, gpus, confirmed=True, job=job, actor=actor), None, None
    victims = [v for v in victims if v.pk in in_way]
    refusal = _preemption_refusal(fields["priority"], victims, start, now, gpu_ids)
    if refusal is not None:
        return None, conflicts, refusal

    before = {v.pk: snapshot(v) for v in victims}
    original_end = {v.pk: v.end for v in victims}
    begun = {v.pk for v in victims if policy.has_begun(v, start, now)}
    for victim in victims:
        # Free what the new booking needs before inserting it: the exclusion constraint checks rows.
        if victim.pk in begun:
            victim.allocations.update(end=start)
        else:
            victim.allocations.update(live=False)
    preemptor = _insert(
        fields, start, end, gpus, confirmed=True, job=job, actor=actor,
        reason="Preempts " + ", ".join(f"#{v.pk}" for v in victims) + ".",
    )
    for victim in victims:
        if victim.pk in begun:
            _cut(victim, preemptor, before[victim.pk], original_end[victim.pk], actor=actor, now=now)
        else:
            _displace(victim, preemptor, before[victim.pk], actor=actor, now=now)
    transaction.on_commit(lambda: waitlist_promote())  # a victim may have freed more than was taken
    return preemptor, None, None


def _who(reservation):
    return f"#{reservation.pk} ({reservation.priority}, {reservation.user.get_username()})"


def _span(start, end):
    return f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC"


def _gpu_names(gpu_ids):
    names = {g.pk: g.name for g in GPU.objects.select_related("node").filter(pk__in=gpu_ids)}
    return [names[pk] for pk in sorted(gpu_ids)]


def _cut(victim, preemptor, before, original_end, *, actor, now):
    """A victim that has begun ends where the preemptor starts. Its job is stopped at the reclaim
    time (reservation_reclaim, and the node agent), and the unused part is rebooked."""
    job = TrainingJob.objects.filter(reservation=victim).first()
    live = job is not None and job.status in TrainingJob.LIVE
    victim.end_before_preemption = original_end
    victim.end = preemptor.start
    victim.preempted_by = preemptor
    victim.reclaim_at = policy.reclaim_time(victim.end, job.spawned_at if live else None)
    victim.save(update_fields=["end", "end_before_preemption", "preempted_by", "reclaim_at", "updated"])
    gpu_ids = before["gpus"]
    audit_record(
        action=AuditEntry.Action.PREEMPT, actor=actor, reservation=victim,
        reason=(
            f"Preempted by {_who(preemptor)}, booked {_span(preemptor.start, preemptor.end)}; "
            f"GPUs reclaimed at {victim.reclaim_at:%Y-%m-%d %H:%M:%S} UTC."
        ),
        before=before, after=snapshot(victim, gpu_ids),
    )
    rebook, not_rebooked = None, ""
    if not victim.auto_rebook:
        not_rebooked = "you opted out of automatic rebooking"
    elif job is not None and job.status in ENDED_JOBS:
        not_rebooked = f"its job has already ended ({job.status})"
    else:
        slots = math.ceil((original_end - victim.end) / policy.slot_length())
        rebook = _rebook(victim, preemptor, job, gpu_ids=gpu_ids, slots=slots, now=now)
        if rebook is None:
            not_rebooked = f"no free window of {slots} slot(s) within the booking horizon"

    gpu_names = _gpu_names(gpu_ids)
    message = (
        f"Reservation #{victim.pk} ({', '.join(gpu_names)}) is preempted by {_who(preemptor)}: "
        f"its GPUs are reclaimed at {victim.reclaim_at:%Y-%m-%d %H:%M} UTC"
        + (", when its job is stopped with a resumable checkpoint." if job is not None else ".")
    )
    if rebook is not None:
        message += f" Rebooked as #{rebook.pk} for {_span(rebook.start, rebook.end)}" + (
            "; the job resumes there from its checkpoint." if job is not None else "."
        )
    else:
        message += f" Not rebooked: {not_rebooked}."
    notice_send(
        user=victim.user, kind=Notice.Kind.PREEMPTION_WARNING, reservation=victim, message=message,
        audited=True, actor=actor,
        data={
            "reservation": victim.pk,
            "preempted_by": preemptor.pk,
            "reclaim_at": victim.reclaim_at,
            "gpus": gpu_ids,
            "gpu_names": gpu_names,
            "job": job.pk if job is not None else None,
            "rebooked_as": rebook.pk if rebook else None,
            "rebook_start": rebook.start if rebook else None,
            "rebook_end": rebook.end if rebook else None,
        },
    )
    from .tasks import reclaim_at  # tasks import this module

    victim_id, when = victim.pk, victim.reclaim_at
    transaction.on_commit(lambda: reclaim_at(victim_id, when))


def _rebook(victim, preemptor, job, *, gpu_ids, slots, now):
    """The unused part of a cut victim, in the nearest free window of the same size (on its own
    node when one there starts as early), its job resuming from the victim's checkpoint."""
    windows = selectors.find_windows(
        slots=slots, after=preemptor.start, now=now, gpu_count=victim.gpu_count,
        allow_multi_node=victim.allow_multi_node, limit=5,
    )
    if not windows:
        return None
    node_of = dict(GPU.objects.values_list("id", "node_id"))
    own_nodes = {node_of[g] for g in gpu_ids}
    earliest = [w for w in windows if w.start == windows[0].start]
    window = next((w for w in earliest if {node_of[g] for g in w.gpus} <= own_nodes), earliest[0])
    fields = dict(
        user=victim.user, team=victim.team, title=victim.title, priority=victim.priority,
        preemptible=victim.preemptible, gpu_count=victim.gpu_count, allow_multi_node=victim.allow_multi_node,
        auto_rebook=victim.auto_rebook, rebook_of=victim,
    )
    spec = dict(job.spec, resume_from=job.pk) if job is not None else None
    rebook = _insert(
        fields, window.start, window.end, list(window.gpus), confirmed=True, job=spec, actor=None,
        action=AuditEntry.Action.REBOOK,
        reason=(
            f"The unused part of #{victim.pk}, preempted by {_who(preemptor)}"
            + (f"; job resumes from job {job.pk}'s checkpoint." if job is not None else ".")
        ),
    )
    return rebook


def _displace(victim, preemptor, before, *, actor, now):
    """A victim that has not begun is moved whole to the nearest free window of its size, or
    cancelled if its owner opted out of rebooking (or there is no such window)."""
    window = None
    if victim.auto_rebook:
        found = selectors.find_windows(
            slots=max(victim.slots, 1), after=victim.start, now=now, gpu_count=victim.gpu_count,
            allow_multi_node=victim.allow_multi_node, limit=1,
        )
        window = found[0] if found else None
    taken = f"its GPUs were taken by {_who(preemptor)} for {_span(preemptor.start, preemptor.end)}"
    if window is not None:
        victim.start, victim.end = window.start, window.end
        victim.save(update_fields=["start", "end", "updated"])
        victim.allocations.all().delete()
        _hold(victim, window.gpus)
        audit_record(
            action=AuditEntry.Action.MOVE, actor=actor, reservation=victim,
            reason=f"Moved before it began: {taken}.", before=before, after=snapshot(victim),
        )
        kind = Notice.Kind.MOVED
        message = (
            f"Reservation #{victim.pk} had not begun; {taken}. It is moved to {_span(window.start, window.end)} "
            f"on {', '.join(_gpu_names(window.gpus))}."
        )
    else:
        why = "you opted out of automatic rebooking" if not victim.auto_rebook else "no free window of its size"
        _cancel_locked(
            victim, action=AuditEntry.Action.PREEMPT, actor=actor, before=before, preempted_by=preemptor,
            reason=f"Cancelled before it began: {taken}; not moved: {why}.",
            job_reason=f"Reservation preempted by #{preemptor.pk} before it began.",
        )
        kind = Notice.Kind.CANCELLED
        message = f"Reservation #{victim.pk} had not begun; {taken}. It is cancelled ({why})."
    notice_send(
        user=victim.user, kind=kind, reservation=victim, message=message, audited=True, actor=actor,
        data={
            "reservation": victim.pk,
            "preempted_by": preemptor.pk,
            "status": victim.status,
            "start": victim.start,
            "end": victim.end,
            "gpus": list(window.gpus) if window is not None else before["gpus"],
        },
    )


def reservation_reclaim(*, reservation_id, now=None):
    """At the reclaim time: the preempted booking ends with status preempted and its job gets the
    stop request of the slot lifecycle (checkpoint, grace, kill). Returns the time to try again when
    the job's minimum runtime still protects it, else None. Safe to call any number of times."""
    now = now or timezone.now()
    with transaction.atomic():
        victim = (
            Reservation.objects.select_for_update(of=("self",))
            .select_related("user", "team")
            .filter(pk=reservation_id, preempted_by__isnull=False, status__in=[Status.CONFIRMED, Status.ACTIVE])
            .first()
        )
        if victim is None:
            return None
        job = TrainingJob.objects.filter(reservation=victim).first()
        live = job is not None and job.status in TrainingJob.LIVE
        due = policy.reclaim_time(victim.end, job.spawned_at if live else None)
        if due > now:
            if victim.reclaim_at != due:
                Reservation.objects.filter(pk=victim.pk).update(reclaim_at=due)
            return due
        before = snapshot(victim)
        victim.status = Status.PREEMPTED
        victim.reclaim_at = due
        victim.save(update_fields=["status", "reclaim_at", "updated"])
        reason = f"Preempted by reservation #{victim.preempted_by_id}: stopping with a resumable checkpoint."
        audit_record(
            action=AuditEntry.Action.RECLAIM, reservation=victim,
            reason=f"GPUs reclaimed for #{victim.preempted_by_id}" + (f"; job {job.pk} asked to stop." if live else "."),
            before=before, after=snapshot(victim, before["gpus"]),
        )
        job_stop_for_booking(reservation=victim, reason=reason)
        rebooks = list(victim.rebooks.filter(status__in=[Status.CONFIRMED, Status.WAITLISTED]))
        if job is not None and job.status == TrainingJob.Status.COMPLETED:
            for rebook in rebooks:
                _cancel_rebook(rebook.pk, f"Job {job.pk} completed before #{victim.pk} was preempted.")
            rebooks = []
        message = f"Reservation #{victim.pk} was preempted by #{victim.preempted_by_id} at {due:%Y-%m-%d %H:%M} UTC"
        message += "; its job is stopping with a resumable checkpoint" if live else ""
        message += "".join(f"; it continues in #{r.pk} at {_span(r.start, r.end)}" for r in rebooks) + "."
        notice_send(
            user=victim.user, kind=Notice.Kind.PREEMPTED, reservation=victim, message=message, audited=True,
            data={
                "reservation": victim.pk, "preempted_by": victim.preempted_by_id, "reclaim_at": due,
                "job": job.pk if job is not None else None, "rebooked_as": [r.pk for r in rebooks],
            },
        )
    return None


def _cancel_rebook(reservation_id, reason, *, notify=True):
    rebook = Reservation.objects.select_for_update(of=("self",)).select_related("user", "team").get(pk=reservation_id)
    _cancel_locked(rebook, action=AuditEntry.Action.CANCEL, actor=None, reason=reason, job_reason=reason)
    if notify:
        notice_send(user=rebook.user, kind=Notice.Kind.CANCELLED, reservation=rebook, audited=True,
                    message=f"Rebooked reservation #{rebook.pk} is cancelled: {reason}")


def preemption_withdraw(*, preemptor_id, now=None):
    """The preemptor is gone (cancelled) before it took the GPUs: each booking it cut and has not yet
    reclaimed gets its time back, where that time is still free and its rebooking has not begun
    (the rebooking, no longer needed, is cancelled). Otherwise the cut stands: the booking ends at the
    cut and continues in its rebooking, as it was told."""
    now = now or timezone.now()
    pending = Reservation.objects.filter(
        preempted_by_id=preemptor_id, status__in=[Status.CONFIRMED, Status.ACTIVE], end__gt=now
    )
    restored = []
    for victim_id in pending.order_by("id").values_list("pk", flat=True):
        with transaction.atomic():
            victim = pending.select_for_update(of=("self",)).select_related("user", "team").filter(pk=victim_id).first()
            original = victim.end_before_preemption if victim else None
            if original is None:
                continue
            rebooks = list(
                victim.rebooks.select_for_update(of=("self",)).select_related("user", "team")
                .filter(status=Status.CONFIRMED).order_by("id")
            )
            if any(r.start <= now for r in rebooks):
                continue  # its job may be running there already
            gpu_ids = sorted(victim.allocations.values_list("gpu_id", flat=True))
            _lock_gpus(gpu_ids)
            taken = selectors.overlapping_allocations(gpu_ids, victim.end, original).exclude(
                reservation__in=[victim.pk, *(r.pk for r in rebooks)]
            )
            if taken.exists():
                continue  # someone else has the time now
            reason = f"Preemptor #{preemptor_id} was cancelled before it took the GPUs."
            for rebook in rebooks:
                _cancel_rebook(rebook.pk, f"Not needed: #{victim.pk} keeps its time. {reason}", notify=False)
            before = snapshot(victim, gpu_ids)
            victim.end, victim.end_before_preemption = original, None
            victim.preempted_by, victim.reclaim_at = None, None
            victim.save(update_fields=["end", "end_before_preemption", "preempted_by", "reclaim_at", "updated"])
            victim.allocations.update(end=original)
            audit_record(
                action=AuditEntry.Action.WITHDRAW, reservation=victim, reason=reason,
                before=before, after=snapshot(victim, gpu_ids),
            )
            notice_send(
                user=victim.user, kind=Notice.Kind.PREEMPTION_WITHDRAWN, reservation=victim, audited=True,
                message=(
                    f"{reason} Reservation #{victim.pk} keeps its GPUs until {original:%Y-%m-%d %H:%M} UTC"
                    + "".join(f"; rebooking #{r.pk} is cancelled" for r in rebooks) + "."
                ),
                data={"reservation": victim.pk, "end": original, "cancelled_rebooks": [r.pk for r in rebooks]},
            )
            restored.append(victim.pk)
    return restored


def reservations_reclaim_due(*, now=None):
    """Level-triggered twin of the reclaim task: every preempted booking whose time has come."""
    now = now or timezone.now()
    due = Reservation.objects.filter(
        preempted_by__isnull=False, status__in=[Status.CONFIRMED, Status.ACTIVE], end__lte=now
    ).values_list("pk", flat=True)
    return sum(1 for pk in list(due) if reservation_reclaim(reservation_id=pk, now=now) is None)


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


def _cancel_locked(reservation, *, action, actor, reason, job_reason, before=None, **changes):
    """Inside a transaction, on a locked reservation: cancel it (with `changes` to other fields),
    free its GPU time, stop its job, and audit it. Returns the state before."""
    before = before or snapshot(reservation)
    reservation.status = Status.CANCELLED
    for field, value in changes.items():
        setattr(reservation, field, value)
    reservation.save(update_fields=["status", *changes, "updated"])
    reservation.allocations.update(live=False)
    audit_record(
        action=action, actor=actor, reservation=reservation, reason=reason,
        before=before, after=snapshot(reservation, before["gpus"]),
    )
    job_stop_for_booking(reservation=reservation, reason=job_reason)
    return before


def reservation_cancel(*, reservation_id, actor, reason=""):
    with transaction.atomic():
        reservation = _locked_open_reservation(reservation_id, actor)
        _require_reason(actor, reservation, reason)
        before = _cancel_locked(
            reservation, action=AuditEntry.Action.CANCEL, actor=actor, reason=reason,
            job_reason=f"Reservation cancelled by {actor.get_username()}: {reason}",
        )
        if actor.pk != reservation.user_id:
            notice_send(
                user=reservation.user, kind=Notice.Kind.CANCELLED, reservation=reservation,
                message=f"{actor.get_username()} cancelled your reservation #{reservation.pk}: {reason}",
            )
        if reservation.preempted.filter(status__in=[Status.CONFIRMED, Status.ACTIVE]).exists():
            # Bookings it was about to preempt get their time back first, before the waitlist.
            preemptor_id = reservation.pk
            transaction.on_commit(lambda: preemption_withdraw(preemptor_id=preemptor_id))
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
        # A preempted booking ends through reservation_reclaim, as "preempted".
        (Status.CONFIRMED, {"end__lte": now, "preempted_by": None}, Status.COMPLETED, AuditEntry.Action.COMPLETE),
        (Status.ACTIVE, {"end__lte": now, "preempted_by": None}, Status.COMPLETED, AuditEntry.Action.COMPLETE),
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
