"""Reads for recurring bookings: how each occurrence of a series would stand before it is booked
(the form's preview, and the check `on_conflict: fail` makes before booking anything), and a
series' occurrences for its page."""

from dataclasses import dataclass, field, replace
from datetime import datetime

from django.db.models import Prefetch

from .. import policy
from ..models import GPU, Allocation, Reservation, Series
from .availability import conflicting_allocations, pick_gpus, preemption_preview
from .pages import reservation_queryset
from .quotas import team_quota


@dataclass(frozen=True)
class OccurrencePreview:
    """One occurrence as it would be booked now. `state`:
    - free: the GPUs are free and it is within the team's quota (or the team has none);
    - preempts: booking it would preempt what is in the way (the rules allow it);
    - taken: something is in the way that it may not take;
    - over_quota: it passes the team's quota (`detail` says which limit);
    - borrowed: over the quota, but booked as borrowed time (the series borrows);
    - later: beyond the booking horizon: beat books it when the horizon reaches it."""

    start: datetime
    end: datetime
    state: str
    detail: str = ""
    conflicts: list = field(default_factory=list)

    @property
    def bookable(self):
        return self.state in ("free", "preempts", "borrowed", "later")


def occurrences_preview(*, team, priority, starts, slots, now, gpu_ids=None, gpu_count=None,
                        allow_multi_node=False, borrow=False):
    """An OccurrencePreview for each start (UTC slot starts), read without locks: what a page shows
    and what `fail` checks first; each booking decides again under its locks. The quota counts the
    earlier occurrences of the same preview as booked (each in its week). A few queries an
    occurrence within the horizon, none for the later ones."""
    length = slots * policy.slot_length()
    horizon = policy.horizon_end(now)
    gpus = len(gpu_ids) if gpu_ids is not None else gpu_count
    healthy = None if gpu_ids is not None else list(GPU.objects.filter(healthy=True).values_list("id", flat=True))
    previews, planned = [], []
    for start in starts:
        end = start + length
        if end > horizon:
            previews.append(OccurrencePreview(start, end, "later"))
            continue
        preview = _preview(
            team=team, priority=priority, start=start, end=end, now=now, gpu_ids=gpu_ids, gpu_count=gpu_count,
            gpus=gpus, healthy=healthy, allow_multi_node=allow_multi_node, borrow=borrow, planned=planned,
        )
        if preview.bookable:
            planned.append(policy.Booked(start=start, end=end, gpus=gpus, borrowed=preview.state == "borrowed"))
        previews.append(preview)
    return previews


def occurrences_preempting(*, team, priority, starts, slots, now, gpu_ids=None, gpu_count=None,
                           allow_multi_node=False, borrow=False):
    """The occurrences a series would book now (within the horizon) that would preempt bookings, as
    OccurrencePreview: what a person confirms before the series is booked."""
    due = [start for start in starts if policy.occurrence_in_horizon(start, slots, now)]
    previews = occurrences_preview(
        team=team, priority=priority, starts=due, slots=slots, now=now, gpu_ids=gpu_ids, gpu_count=gpu_count,
        allow_multi_node=allow_multi_node, borrow=borrow,
    )
    return [p for p in previews if p.state == "preempts"]


def _quota_state(*, team, start, end, gpus, borrow, planned):
    """(state, detail): within ("free"), "borrowed" or "over_quota", counting `planned` (the earlier
    occurrences) as booked."""
    quota = team_quota(team.pk, start, end)
    if quota is None:
        return "free", ""
    week_hours = dict(quota.week_hours)
    for week, (hours, borrowed) in policy.tally(planned, policy.weeks_of(start, end)).items():
        booked, lent = week_hours.get(week, (0, 0))
        week_hours[week] = (booked + hours, lent + borrowed)
    overlapping = tuple(p for p in planned if p.start < end and p.end > start)
    quota = replace(quota, week_hours=week_hours, booked=quota.booked + overlapping)
    excess = policy.quota_excess(quota, start=start, end=end, gpus=gpus, borrowed=False)
    if excess is None:
        return "free", ""
    if not (borrow and excess.borrowable):
        return "over_quota", excess.describe()
    over_borrowing = policy.quota_excess(quota, start=start, end=end, gpus=gpus, borrowed=True)
    if over_borrowing is not None:
        return "over_quota", over_borrowing.describe()
    return "borrowed", ""


def _preview(*, team, priority, start, end, now, gpu_ids, gpu_count, gpus, healthy, allow_multi_node, borrow, planned):
    state, detail = _quota_state(team=team, start=start, end=end, gpus=gpus, borrow=borrow, planned=planned)
    if state == "over_quota":
        return OccurrencePreview(start, end, state, detail)
    if gpu_ids is not None:
        conflicts = list(conflicting_allocations(gpu_ids, start, end))
        free = not conflicts
    else:
        free = pick_gpus(start=start, end=end, gpu_count=gpu_count, allow_multi_node=allow_multi_node) is not None
        conflicts = [] if free else list(conflicting_allocations(healthy, start, end))
    if free:
        return OccurrencePreview(start, end, state)
    # Borrowed time takes only idle GPUs: it never preempts.
    victims = [] if state == "borrowed" else preemption_preview(
        priority=priority, start=start, end=end, now=now, gpu_ids=gpu_ids, gpu_count=gpu_count,
        allow_multi_node=allow_multi_node,
    )
    if victims:
        names = ", ".join(f"#{v.reservation.pk}" for v in victims)
        return OccurrencePreview(start, end, "preempts", f"would preempt {names}", conflicts)
    taken = sorted({f"#{a.reservation_id}" for a in conflicts})
    return OccurrencePreview(start, end, "taken", "taken by " + ", ".join(taken) if taken else "no GPUs free", conflicts)


def series_occurrences(series):
    """A series' bookings (its occurrences, and the rebooked rest of preempted ones), in start order,
    with what their rows show loaded. Bounded: a series has at most SERIES_MAX_OCCURRENCES
    occurrences."""
    return list(reservation_queryset().filter(series=series).order_by("start", "id"))


@dataclass(frozen=True)
class ScheduledOccurrence:
    """One occurrence of a series as its page and its API show it. `status`: the booking's status
    when it was booked (confirmed, active, completed, waitlisted, cancelled, preempted), else
    cancelled (cancelled before it was booked), skipped (could not be booked: `reason`), later (not
    within the booking horizon yet: beat books it), due (within it: beat books it within the hour)
    or missed (its start passed unbooked)."""

    start: datetime
    end: datetime
    status: str
    reservation: Reservation | None = None
    reason: str = ""
    rebooks: tuple = ()  # the rebooked rest of a preempted occurrence


def series_schedule(series, starts, bookings, *, now):
    """Every occurrence of `series` (its rule's `starts`, from recurrence.expand) with what became of
    it, from its bookings (series_occurrences). Bounded by the series' size."""
    length = series.slots * policy.slot_length()
    horizon = policy.horizon_end(now)
    own = {r.occurrence: r for r in bookings if r.rebook_of_id is None}
    rebooks = {}
    for r in bookings:
        if r.rebook_of_id is not None:
            rebooks.setdefault(r.occurrence, []).append(r)
    skipped = {s["at"]: s["reason"] for s in series.skipped}
    schedule = []
    for start in starts:
        booked = own.get(start)
        if booked is not None:
            schedule.append(ScheduledOccurrence(
                booked.start, booked.end, booked.status, booked, rebooks=tuple(rebooks.get(start, ()))
            ))
        elif not policy.occurrence_going(series, start):
            schedule.append(ScheduledOccurrence(start, start + length, "cancelled"))
        elif start.isoformat() in skipped:
            schedule.append(ScheduledOccurrence(start, start + length, "skipped", reason=skipped[start.isoformat()]))
        elif start < now:
            schedule.append(ScheduledOccurrence(start, start + length, "missed"))
        else:
            schedule.append(ScheduledOccurrence(start, start + length, "later" if start + length > horizon else "due"))
    return schedule


def series_queryset():
    return Series.objects.select_related("user", "team")
