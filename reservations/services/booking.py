"""Booking: a request checked against the rules, a window chosen, the GPUs locked and taken (or
preempted, or waitlisted), or a 409 with the conflicts and what would do instead."""

from dataclasses import replace

from django.conf import settings
from django.utils import timezone

from .. import jobs, policy, selectors
from ..errors import BookingConflict, BookingError
from ..models import GPU, Reservation
from ..utc_text import utc_moment
from .preemption import book_by_preempting
from .quota import quota_decide
from .records import Attempt, Booking, attempt, bookable_gpus, check_gpu_count, check_gpu_ids, pick_free_gpus

# Attempts for an "earliest" booking whose chosen window was taken between search and lock.
EARLIEST_ATTEMPTS = 5


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
    work=None,
    auto_rebook=True,
    borrow=False,
    actor=None,
    now=None,
    on_booked=None,
    series=None,
    occurrence=None,
):
    """Book `gpu_ids` (or any `gpu_count` GPUs) for `slots` slots from `start` (a slot boundary;
    "earliest": the nearest free window; "now": from now to the end of this slot, plus slots - 1).
    On conflict: BookingConflict, or with `waitlist` a waitlisted booking. `actor` is who asked, when
    not the owner (an admin booking for someone). `work` is what runs in the booked slots: {"job": a
    training spec} or {"serve": models to serve} (reservations.jobs).
    A booking that overlaps others may preempt them (rules in policy); `auto_rebook` says what happens
    if this one is preempted. Over the team's quota it is refused (QuotaExceeded), or with `borrow`
    booked as borrowed time (services.quota). `on_booked(reservation)` runs inside the booking's transaction, so what
    it writes commits with the booking or not at all. Each step is its own short transaction: never
    call this inside another one (locks.py). `series` and `occurrence`: it is that occurrence (a UTC
    slot start) of a recurring booking (services.series)."""
    now = now or timezone.now()
    policy.require_one_target(gpu_ids, gpu_count)
    team = policy.resolve_team(user, team)
    fields = dict(
        user=user,
        team=team,
        title=title,
        priority=priority,
        preemptible=policy.resolve_preemptible(user, priority, preemptible),
        gpu_count=len(gpu_ids) if gpu_ids is not None else gpu_count,
        allow_multi_node=allow_multi_node,
        auto_rebook=auto_rebook,
        series=series,
        occurrence=occurrence,
    )
    policy.validate_slots(slots)
    if borrow:
        policy.may_borrow(priority)
    if gpu_ids is not None:
        gpu_ids = check_gpu_ids(list(gpu_ids))
    else:
        check_gpu_count(gpu_count, allow_multi_node)
    work = jobs.work_kinds.check(user=user, team=team, work=work, series=series is not None)
    request = Booking(
        fields=fields, start=None, end=None, work=work, actor=actor or user, now=now, on_booked=on_booked, borrow=borrow
    )

    for window in _windows_to_try(start, slots, gpu_ids, gpu_count, allow_multi_node, now):
        booking = replace(request, start=window.start, end=window.end)
        outcome = _book_window(
            booking, gpu_ids=window.gpus, waitlist=waitlist, may_preempt=policy.may_try_preemption(start, priority)
        )
        if outcome.reservation is not None:
            return outcome.reservation
    raise _conflict(booking, outcome, gpu_ids=gpu_ids, wanted=window.gpus, slots=slots)


def _windows_to_try(start, slots, gpu_ids, gpu_count, allow_multi_node, now):
    """The window asked for; for "earliest", the nearest free one, searched again after each race lost
    between the search and the locks. (gpus is None for a gpu_count request: picked under the lock.)"""
    if start == policy.NOW:
        window_start, window_end = policy.now_window(now, slots)
        yield selectors.Window(gpu_ids, window_start, window_end)
        return
    if start != policy.EARLIEST:
        yield selectors.Window(gpu_ids, start, policy.validate_window(start, slots, now))
        return
    if gpu_ids is not None:
        bookable_gpus(gpu_ids, lock=False)  # a clear 400 for a bad id, not "no free window"
    for _ in range(EARLIEST_ATTEMPTS):
        found = selectors.find_windows(
            slots=slots, after=now, now=now, gpu_ids=gpu_ids, gpu_count=gpu_count,
            allow_multi_node=allow_multi_node, limit=1,
        )
        if not found:
            raise BookingError("start", f"No free window of {slots} slot(s) within the booking horizon.")
        yield selectors.Window(list(found[0].gpus), found[0].start, found[0].end)


def _book_window(booking, *, gpu_ids, waitlist, may_preempt):
    """Book the window: free GPUs, else by preempting (if the rules allow), else on the waitlist (if
    asked). The Attempt that booked, or the last one, with what was in the way and why."""
    outcome = attempt(_book, booking=booking, gpu_ids=gpu_ids)
    if outcome.reservation is None and may_preempt and not outcome.borrowed:
        preempting = book_by_preempting(booking, gpu_ids=gpu_ids, conflicts=outcome.conflicts)
        outcome = replace(preempting, conflicts=preempting.conflicts or outcome.conflicts)
    if outcome.reservation is None and waitlist:
        waiting = attempt(_book, booking=booking, gpu_ids=gpu_ids, waitlist=True)
        outcome = replace(waiting, refusal=outcome.refusal)
    return outcome


def _book(*, booking, gpu_ids, waitlist=False):
    """Inside a transaction: lock (the team's quota, then GPUs: locks.py), check, insert."""
    start, end = booking.start, booking.end
    quota = quota_decide(
        team_id=booking.fields["team"].pk, start=start, end=end, gpus=booking.fields["gpu_count"],
        borrow=booking.borrow, actor=booking.actor,
    )
    if gpu_ids is not None:
        gpus = bookable_gpus(gpu_ids, lock=True)
        # The common case is no conflict: ask cheaply, and build the details only for a 409.
        taken = selectors.any_overlapping(gpu_ids, start, end)
        conflicts = list(selectors.conflicting_allocations(gpu_ids, start, end)) if taken else None
        chosen = None if taken else gpus
    else:
        chosen = pick_free_gpus(
            start=start, end=end, gpu_count=booking.fields["gpu_count"],
            allow_multi_node=booking.fields["allow_multi_node"],
        )
        conflicts = None if chosen else list(
            selectors.conflicting_allocations(GPU.objects.filter(healthy=True).values("id"), start, end)
        )
    if chosen is None and not waitlist:
        return Attempt(conflicts=conflicts, borrowed=quota.borrowed)
    # A waitlisted request remembers the exact GPUs it asked for, not live; a gpu_count request
    # picks its GPUs when promoted.
    return Attempt(reservation=booking.write(chosen or gpu_ids or [], confirmed=bool(chosen), quota=quota))


def _conflict(booking, outcome, *, gpu_ids, wanted, slots):
    """The 409 for a window that could not be booked: what is in the way, and what would do."""
    start, end = booking.start, booking.end
    conflicts = outcome.conflicts
    if conflicts is None:
        ids = wanted or list(GPU.objects.filter(healthy=True).values_list("id", flat=True))
        conflicts = list(selectors.conflicting_allocations(ids, start, end))
    suggestions = selectors.booking_suggestions(
        now=booking.now, start=start, slots=slots, gpu_ids=gpu_ids,
        gpu_count=None if gpu_ids is not None else booking.fields["gpu_count"],
        allow_multi_node=booking.fields["allow_multi_node"],
    )
    refusal = outcome.refusal
    if refusal is None:
        borrowed = " Borrowed time takes only idle GPUs: it never preempts." if outcome.borrowed else ""
        return BookingConflict(
            "The GPUs are already booked for that window." + borrowed, conflicts=conflicts, suggestions=suggestions
        )
    if refusal.earliest is None:
        return BookingConflict(
            f"The GPUs are already booked for that window, and cannot be preempted: {refusal.reason}.",
            conflicts=conflicts, suggestions=suggestions,
        )
    earliest = refusal.earliest
    return BookingConflict(
        f"Preempting needs {settings.PREEMPTION_NOTICE_MINUTES:g} minutes' notice to its owners: "
        f"start at {utc_moment(earliest)} or later.",
        conflicts=conflicts,
        suggestions=[selectors.Window(tuple(refusal.gpu_ids), earliest, earliest + (end - start))]
        + [w for w in suggestions if w.start >= earliest][:4],
        earliest_allowed_start=earliest,
    )
