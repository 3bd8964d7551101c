"""Soft preemption: the rules are in policy; here, taking the GPUs and what follows (the victims
warned, cut short or moved, rebooked, reclaimed at the reclaim time, or given their time back)."""

import math

from django.db import transaction
from django.utils import timezone

from .. import jobs, policy, queue, selectors
from ..models import GPU, AuditEntry, Notice, Reservation
from ..utc_text import utc_moment, utc_window
from .audit import audit_change, snapshot
from .locks import (
    lock_all_gpus, lock_gpus, lock_quota_rows, lock_reservation, lock_reservations, lock_team_quota, service_transaction,
)
from .notices import notice_send
from .quota import quota_decide, quota_fits
from .records import Attempt, Refusal, attempt, bookable_gpus, cancel_locked, write_allocations, write_reservation
from .waitlist import waitlist_promote

Status = Reservation.Status
# A preemption whose victims changed between the plan and the locks is planned again, this often.
PREEMPT_ATTEMPTS = 3


def book_by_preempting(booking, *, gpu_ids, conflicts):
    """Book `booking`'s window by preempting the bookings in the way, if the rules allow: an Attempt
    that booked, or did not with what was in the way and why (its refusal is None when there was
    nothing this booking could take)."""
    priority = booking.fields["priority"]
    for _ in range(PREEMPT_ATTEMPTS):
        if gpu_ids is None:
            plan = selectors.preemption_candidate(
                priority=priority, start=booking.start, end=booking.end, gpu_count=booking.fields["gpu_count"],
                allow_multi_node=booking.fields["allow_multi_node"],
            )
            if plan is None:
                return Attempt()
            wanted, victim_ids = plan.gpu_ids, plan.victim_ids
        else:
            wanted = gpu_ids
            if conflicts is None:
                conflicts = list(selectors.conflicting_allocations(gpu_ids, booking.start, booking.end))
            victims = {c.reservation_id: c.reservation for c in conflicts}
            victim_ids = set(victims)
            # Most conflicts are with bookings that may not be preempted: say so from what the
            # conflict check read, without the locks that taking needs.
            refusal = _refusal(priority, victims.values(), booking, wanted)
            if refusal is not None:
                return Attempt(conflicts=conflicts, refusal=refusal)
            conflicts = None  # read again under the locks
        outcome = attempt(_take_gpus, booking=booking, gpu_ids=list(wanted), victim_ids=victim_ids)
        if not outcome.raced:
            return outcome
    return Attempt()


def _refusal(priority, victims, booking, gpu_ids):
    """Why the rules forbid taking the GPUs of `victims` for `booking`, or None."""
    victims = list(victims)
    why = policy.preemption_refusal(priority, victims)
    if why:
        return Refusal(why)
    earliest = policy.earliest_preempting_start(booking.now)
    if policy.needs_notice(victims, booking.now) and booking.start < earliest:
        return Refusal("not enough notice", tuple(gpu_ids), earliest)
    return None


def _take_gpus(*, booking, gpu_ids, victim_ids):
    """Inside a transaction: lock the bookings in the way, check the rules, and take their GPUs. A
    race lost when the bookings in the way changed since they were read."""
    # The lock order (locks.py): reservations, then GPUs. Every GPU: a victim may be moved or
    # rebooked onto any of them.
    victims = lock_reservations(Reservation.objects.filter(pk__in=victim_ids))
    # Then the quotas (the booking's team's, checked now; the victims' teams', whose moves and
    # rebookings are checked below), then every GPU: a victim may be moved or rebooked onto any.
    team = booking.fields["team"]
    lock_quota_rows({team.pk, *(v.team_id for v in victims)})
    quota = lock_team_quota(team.pk, booking.start, booking.end)
    decision = quota_decide(
        team_id=team.pk, start=booking.start, end=booking.end, gpus=booking.fields["gpu_count"],
        borrow=booking.borrow, actor=booking.actor, quota=quota,
    )
    lock_all_gpus()
    gpus = bookable_gpus(gpu_ids, lock=False)
    conflicts = list(selectors.conflicting_allocations(gpu_ids, booking.start, booking.end))
    in_way = {c.reservation_id for c in conflicts}
    if not in_way <= {v.pk for v in victims}:
        return Attempt(raced=True)
    if not in_way:  # freed meanwhile
        return Attempt(reservation=booking.write(gpus, quota=decision))
    if decision.borrowed:
        return Attempt(conflicts=conflicts, borrowed=True)
    victims = [v for v in victims if v.pk in in_way]
    refusal = _refusal(booking.fields["priority"], victims, booking, gpu_ids)
    if refusal is not None:
        return Attempt(conflicts=conflicts, refusal=refusal)

    before = {v.pk: snapshot(v) for v in victims}
    original_end = {v.pk: v.end for v in victims}
    begun = {v.pk for v in victims if policy.has_begun(v, booking.start, booking.now)}
    for victim in victims:
        # Free what the new booking needs before inserting it: the exclusion constraint checks rows.
        if victim.pk in begun:
            victim.allocations.update(end=booking.start)
        else:
            victim.allocations.update(live=False)
    preemptor = booking.write(gpus, reason="Preempts " + ", ".join(f"#{v.pk}" for v in victims) + ".", quota=decision)
    reclaim = _reclaim_reason(preemptor, quota)
    for victim in victims:
        why = reclaim if victim.borrowed else ""
        if victim.pk in begun:
            _cut_short(victim, preemptor, before[victim.pk], original_end[victim.pk], booking, reclaim=why)
        else:
            _move_or_cancel(victim, preemptor, before[victim.pk], booking, reclaim=why)
    transaction.on_commit(lambda: waitlist_promote(), robust=True)  # a victim may have freed more than was taken
    return Attempt(reservation=preemptor)


def _reclaim_reason(preemptor, quota):
    """Why a borrowed booking gives its GPUs back: the reclaiming team is within its quota."""
    team = preemptor.team
    if quota is None:
        return f"team {team.name}, which has no quota (unlimited), takes its borrowed GPUs back"
    week = policy.weeks_of(preemptor.start, preemptor.end)[0]
    used = quota.hours(week, borrowed=False) + policy.gpu_hours(preemptor.gpu_count, preemptor.start, preemptor.end, week)
    label = policy.week_label(week[0])
    if quota.gpu_hours_per_week is not None:
        standing = f"{used:.4g} of {quota.gpu_hours_per_week} GPU-h in week {label}"
    else:
        standing = f"{used:.4g} GPU-h in week {label}, no GPU-hour limit"
    return f"team {team.name} is within its quota ({standing}) and takes borrowed GPUs back"


def describe(reservation):
    return f"#{reservation.pk} ({reservation.priority}, {reservation.user.get_username()})"


def _gpu_names(gpu_ids):
    names = {g.pk: g.name for g in GPU.objects.select_related("node").filter(pk__in=gpu_ids)}
    return [names[pk] for pk in sorted(gpu_ids)]


def _cut_short(victim, preemptor, before, original_end, booking, reclaim=""):
    """A victim that has begun ends where the preemptor starts. Its job is stopped at the reclaim
    time (reservation_reclaim, and the node agent), and the unused part is rebooked (borrowed time
    stays borrowed). `reclaim`: why borrowed time is taken back (the reclaiming team's quota)."""
    job = jobs.work_kinds.state(victim)
    victim.end_before_preemption = original_end
    victim.end = preemptor.start
    victim.preempted_by = preemptor
    victim.reclaim_at = policy.reclaim_time(victim.end, job.spawned_at if job and job.live else None)
    victim.save(update_fields=["end", "end_before_preemption", "preempted_by", "reclaim_at", "updated"])
    gpu_ids = before["gpus"]
    audit_change(
        action=AuditEntry.Action.PREEMPT, actor=booking.actor, reservation=victim, before=before,
        reason=(
            f"Preempted by {describe(preemptor)}, booked {utc_window(preemptor.start, preemptor.end)}; "
            f"GPUs reclaimed at {utc_moment(victim.reclaim_at)}." + (f" Borrowed time: {reclaim}." if reclaim else "")
        ),
    )
    rebook, not_rebooked = None, ""
    if not victim.auto_rebook:
        not_rebooked = "you opted out of automatic rebooking"
    elif job is not None and job.ended:
        not_rebooked = f"its job has already ended ({job.status})"
    else:
        slots = math.ceil((original_end - victim.end) / policy.slot_length())
        rebook = _rebook_unused_part(victim, preemptor, job, gpu_ids=gpu_ids, slots=slots, now=booking.now)
        if rebook is None:
            not_rebooked = f"no free window of {slots} slot(s) within the booking horizon and the team's quota"

    gpu_names = _gpu_names(gpu_ids)
    reclaimed = f"its GPUs are reclaimed at {utc_moment(victim.reclaim_at)}" + (
        ", when its job is stopped with a resumable checkpoint." if job is not None else "."
    )
    if reclaim:
        message = (
            f"Borrowed reservation #{victim.pk} ({', '.join(gpu_names)}) is reclaimed by {describe(preemptor)}: "
            f"{reclaim}. It{reclaimed[2:]}"
        )
    else:
        message = f"Reservation #{victim.pk} ({', '.join(gpu_names)}) is preempted by {describe(preemptor)}: {reclaimed}"
    if rebook is not None:
        message += f" Rebooked as #{rebook.pk}{' (borrowed)' if rebook.borrowed else ''} for {utc_window(rebook.start, rebook.end)}" + (
            "; the job resumes there from its checkpoint." if job is not None else "."
        )
    else:
        message += f" Not rebooked: {not_rebooked}."
    notice_send(
        user=victim.user, kind=Notice.Kind.PREEMPTION_WARNING, reservation=victim, message=message,
        audited=True, actor=booking.actor,
        data={
            "reservation": victim.pk,
            "preempted_by": preemptor.pk,
            "reclaim_at": victim.reclaim_at,
            "gpus": gpu_ids,
            "gpu_names": gpu_names,
            "job": job.id if job is not None else None,
            "rebooked_as": rebook.pk if rebook else None,
            "rebook_start": rebook.start if rebook else None,
            "rebook_end": rebook.end if rebook else None,
            "borrowed": victim.borrowed,
            "reclaimed_by_team": preemptor.team.slug if reclaim else None,
        },
    )
    victim_id, when = victim.pk, victim.reclaim_at
    transaction.on_commit(lambda: queue.reclaim_at(victim_id, when))


def _rebook_unused_part(victim, preemptor, job, *, gpu_ids, slots, now):
    """The unused part of a cut victim, in the nearest free window of the same size (policy), its
    job resuming from the victim's checkpoint. Checked against the team's quota like any booking:
    in quota, else as borrowed time (a borrowed victim's stays borrowed), else not rebooked."""
    windows = selectors.find_windows(
        slots=slots, after=preemptor.start, now=now, gpu_count=victim.gpu_count,
        allow_multi_node=victim.allow_multi_node, limit=5,
    )
    node_of = dict(GPU.objects.values_list("id", "node_id"))
    window = policy.rebook_window(windows, {node_of[g] for g in gpu_ids}, node_of)
    if window is None:
        return None
    borrowed = quota_fits(
        team_id=victim.team_id, start=window.start, end=window.end, gpus=victim.gpu_count,
        borrowed=victim.borrowed, may_borrow=True,
    )
    if borrowed is None:
        return None
    fields = dict(
        user=victim.user, team=victim.team, title=victim.title, priority=victim.priority,
        preemptible=victim.preemptible, gpu_count=victim.gpu_count, allow_multi_node=victim.allow_multi_node,
        auto_rebook=victim.auto_rebook, rebook_of=victim, borrowed=borrowed,
        # The rest of an occurrence stays in its series (its page, and a job resuming from "previous").
        series_id=victim.series_id, occurrence=victim.occurrence,
    )
    work, note = jobs.work_kinds.rebook(job) if job is not None else (None, "")
    return write_reservation(
        fields, window.start, window.end, list(window.gpus), confirmed=True, work=work, actor=None, now=now,
        action=AuditEntry.Action.REBOOK,
        reason=f"The unused part of #{victim.pk}, preempted by {describe(preemptor)}" + (f"; {note}." if note else "."),
    )


def _move_or_cancel(victim, preemptor, before, booking, reclaim=""):
    """A victim that has not begun is moved whole to the nearest free window of its size (within its
    team's quota, or as borrowed time), or cancelled if its owner opted out of rebooking (or there is
    no such window)."""
    window = borrowed = None
    if victim.auto_rebook:
        found = selectors.find_windows(
            slots=max(victim.slots, 1), after=victim.start, now=booking.now, gpu_count=victim.gpu_count,
            allow_multi_node=victim.allow_multi_node, limit=1,
        )
        window = found[0] if found else None
    if window is not None:
        borrowed = quota_fits(
            team_id=victim.team_id, start=window.start, end=window.end, gpus=victim.gpu_count,
            borrowed=victim.borrowed, may_borrow=True, exclude=(victim.pk,),
        )
        window = window if borrowed is not None else None
    taken = f"its GPUs were taken by {describe(preemptor)} for {utc_window(preemptor.start, preemptor.end)}"
    if reclaim:
        taken += f": {reclaim}"
    if window is not None:
        victim.start, victim.end = window.start, window.end
        victim.borrowed = borrowed
        victim.preemptible = victim.preemptible or borrowed
        victim.save(update_fields=["start", "end", "borrowed", "preemptible", "updated"])
        victim.allocations.all().delete()
        write_allocations(victim, window.gpus)
        audit_change(
            action=AuditEntry.Action.MOVE, actor=booking.actor, reservation=victim, before=before,
            gpu_ids=sorted(window.gpus), reason=f"Moved before it began: {taken}.",
        )
        kind = Notice.Kind.MOVED
        message = (
            f"{'Borrowed r' if victim.borrowed else 'R'}eservation #{victim.pk} had not begun; {taken}. It is moved to "
            f"{utc_window(window.start, window.end)} on {', '.join(_gpu_names(window.gpus))}"
            + (" as borrowed time." if borrowed else ".")
        )
    else:
        why = "you opted out of automatic rebooking" if not victim.auto_rebook else "no free window of its size within the team's quota"
        cancel_locked(
            victim, action=AuditEntry.Action.PREEMPT, actor=booking.actor, before=before, preempted_by=preemptor,
            reason=f"Cancelled before it began: {taken}; not moved: {why}.",
            job_reason=f"Reservation preempted by #{preemptor.pk} before it began.",
        )
        kind = Notice.Kind.CANCELLED
        message = f"{'Borrowed r' if victim.borrowed else 'R'}eservation #{victim.pk} had not begun; {taken}. It is cancelled ({why})."
    notice_send(
        user=victim.user, kind=kind, reservation=victim, message=message, audited=True, actor=booking.actor,
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
    with service_transaction():
        victim = lock_reservation(reservation_id)
        if victim is None or victim.preempted_by_id is None or victim.status not in policy.LIVE_STATUSES:
            return None
        job = jobs.work_kinds.state(victim)
        live = job is not None and job.live
        due = policy.reclaim_time(victim.end, job.spawned_at if live else None)
        if due > now:
            if victim.reclaim_at != due:
                Reservation.objects.filter(pk=victim.pk).update(reclaim_at=due)
            return due
        before = snapshot(victim)
        victim.status = Status.PREEMPTED
        victim.reclaim_at = due
        victim.save(update_fields=["status", "reclaim_at", "updated"])
        audit_change(
            action=AuditEntry.Action.RECLAIM, reservation=victim, before=before,
            reason=f"GPUs reclaimed for #{victim.preempted_by_id}" + (f"; job {job.id} asked to stop." if live else "."),
        )
        # Its rebookings (higher ids) are locked before the job is stopped: reservations come before
        # jobs in the lock order.
        rebooks = lock_reservations(victim.rebooks.filter(status__in=[Status.CONFIRMED, Status.WAITLISTED]))
        jobs.work_kinds.stop(
            reservation=victim,
            reason=f"Preempted by reservation #{victim.preempted_by_id}: stopping with a resumable checkpoint.",
        )
        if job is not None and job.completed:
            for rebook in rebooks:
                _cancel_rebook(rebook, f"Job {job.id} completed before #{victim.pk} was preempted.")
            rebooks = []
        message = f"Reservation #{victim.pk} was preempted by #{victim.preempted_by_id} at {utc_moment(due)}"
        message += "; its job is stopping with a resumable checkpoint" if live else ""
        message += "".join(f"; it continues in #{r.pk} at {utc_window(r.start, r.end)}" for r in rebooks) + "."
        notice_send(
            user=victim.user, kind=Notice.Kind.PREEMPTED, reservation=victim, message=message, audited=True,
            data={
                "reservation": victim.pk, "preempted_by": victim.preempted_by_id, "reclaim_at": due,
                "job": job.id if job is not None else None, "rebooked_as": [r.pk for r in rebooks],
            },
        )
    return None


def _cancel_rebook(rebook, reason, *, notify=True):
    """Cancel a locked rebooking that is no longer needed."""
    cancel_locked(rebook, action=AuditEntry.Action.CANCEL, actor=None, reason=reason, job_reason=reason)
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
        preempted_by_id=preemptor_id, status__in=policy.LIVE_STATUSES, end__gt=now
    )
    restored = []
    for victim_id in pending.order_by("id").values_list("pk", flat=True):
        with service_transaction():
            if _give_time_back(victim_id, preemptor_id, now):
                restored.append(victim_id)
    return restored


def _give_time_back(victim_id, preemptor_id, now):
    victim = lock_reservation(victim_id)
    if (
        victim is None or victim.preempted_by_id != preemptor_id or victim.status not in policy.LIVE_STATUSES
        or victim.end_before_preemption is None
    ):
        return False
    original = victim.end_before_preemption
    # Rebookings were made after their victim: higher ids, so this keeps the reservation lock order.
    rebooks = lock_reservations(victim.rebooks.filter(status=Status.CONFIRMED))
    if any(r.start <= now for r in rebooks):
        return False  # its job may be running there already
    gpu_ids = sorted(victim.allocations.values_list("gpu_id", flat=True))
    # The time given back is checked against the team's quota like any time added (locks.py: the
    # quota row after the reservations, before GPUs), without the rebookings it replaces.
    fits = quota_fits(
        team_id=victim.team_id, start=victim.end, end=original, gpus=len(gpu_ids), borrowed=victim.borrowed,
        exclude=tuple(r.pk for r in rebooks),
    )
    if fits is None:
        return False  # the team used the freed quota meanwhile: the cut stands
    lock_gpus(gpu_ids)
    taken = selectors.overlapping_allocations(gpu_ids, victim.end, original).exclude(
        reservation__in=[victim.pk, *(r.pk for r in rebooks)]
    )
    if taken.exists():
        return False  # someone else has the time now
    reason = f"Preemptor #{preemptor_id} was cancelled before it took the GPUs."
    for rebook in rebooks:
        _cancel_rebook(rebook, f"Not needed: #{victim.pk} keeps its time. {reason}", notify=False)
    before = snapshot(victim, gpu_ids)
    victim.end, victim.end_before_preemption = original, None
    victim.preempted_by, victim.reclaim_at = None, None
    victim.save(update_fields=["end", "end_before_preemption", "preempted_by", "reclaim_at", "updated"])
    victim.allocations.update(end=original)
    audit_change(action=AuditEntry.Action.WITHDRAW, reservation=victim, reason=reason, before=before)
    notice_send(
        user=victim.user, kind=Notice.Kind.PREEMPTION_WITHDRAWN, reservation=victim, audited=True,
        message=(
            f"{reason} Reservation #{victim.pk} keeps its GPUs until {utc_moment(original)}"
            + "".join(f"; rebooking #{r.pk} is cancelled" for r in rebooks) + "."
        ),
        data={"reservation": victim.pk, "end": original, "cancelled_rebooks": [r.pk for r in rebooks]},
    )
    return True


def reservations_reclaim_due(*, now=None):
    """Level-triggered twin of the reclaim task: every preempted booking whose time has come."""
    now = now or timezone.now()
    due = Reservation.objects.filter(
        preempted_by__isnull=False, status__in=policy.LIVE_STATUSES, end__lte=now
    ).values_list("pk", flat=True)
    return sum(1 for pk in list(due) if reservation_reclaim(reservation_id=pk, now=now) is None)
