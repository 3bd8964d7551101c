"""Reads: conflicts, free windows, the status board. No writes here."""

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import FieldDoesNotExist
from django.db.models import (
    Aggregate, Avg, Count, DurationField, ExpressionWrapper, F, FloatField, IntegerField, Max, OuterRef,
    Prefetch, Q, Subquery, Sum, Value,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, Extract, Greatest, Least

from . import jobs, policy
from .errors import BookingError
from .models import GPU, Allocation, AuditEntry, Notice, Reservation, Team


@dataclass(frozen=True)
class Window:
    gpus: tuple
    start: object
    end: object


def reservation_queryset():
    """Reservations with everything their JSON shows, in a fixed number of queries."""
    return Reservation.objects.select_related("user", "team", *jobs.hooks().related_names).prefetch_related(
        Prefetch(
            "allocations",
            queryset=Allocation.objects.select_related("gpu__node").order_by("gpu_id"),
            to_attr="held_allocations",
        )
    )


def overlapping_allocations(gpu_ids, start, end, *, exclude_reservation=None):
    """Live allocations on any of `gpu_ids` that overlap [start, end), bare: for an existence check."""
    qs = Allocation.objects.filter(policy.overlapping(start, end), gpu_id__in=gpu_ids, live=True)
    if exclude_reservation is not None:
        qs = qs.exclude(reservation_id=exclude_reservation)
    return qs


def conflicting_allocations(gpu_ids, start, end, *, exclude_reservation=None):
    """The same, with what a 409 shows about each."""
    return overlapping_allocations(
        gpu_ids, start, end, exclude_reservation=exclude_reservation
    ).select_related("reservation__user", "gpu__node").order_by("start", "gpu_id")


def _busy_by_gpu(gpu_ids, start, end):
    busy = defaultdict(list)
    rows = (
        overlapping_allocations(gpu_ids, start, end)
        .order_by("start")
        .values_list("gpu_id", "start", "end")
    )
    for gpu_id, s, e in rows:
        busy[gpu_id].append((s, e))
    return busy


class _FreeTracker:
    """Answers "is this GPU free for [t, t + length)" with one bisection over its busy intervals."""

    def __init__(self, intervals):
        self.intervals = intervals
        self.ends = [e for _, e in intervals]

    def free(self, t, length):
        # Live intervals on one GPU never overlap, so ends are sorted like starts.
        i = bisect_right(self.ends, t)
        return i == len(self.intervals) or self.intervals[i][0] >= t + length


def find_windows(
    *,
    slots,
    after,
    now,
    gpu_ids=None,
    gpu_count=None,
    gpu_model=None,
    allow_multi_node=False,
    latest_start=None,
    limit=5,
):
    """Free windows of `slots` slots starting at or after `after`, nearest first.

    Either exactly `gpu_ids`, or any `gpu_count` healthy GPUs on one node (best fit: the node with
    the fewest free GPUs that still fits, so big nodes stay whole for big jobs), or across nodes
    when `allow_multi_node` and no single node fits.
    """
    length = slots * policy.slot_length()
    first = policy.ceil_to_slot(max(after, now))
    last = policy.horizon_end(now) - length
    if latest_start is not None:
        last = min(last, latest_start)
    if first > last:
        return []

    gpus = GPU.objects.filter(healthy=True).select_related("node").order_by("id")
    if gpu_ids is not None:
        gpus = gpus.filter(id__in=gpu_ids)
    if gpu_model:
        gpus = gpus.filter(model=gpu_model)
    gpus = list(gpus)
    if gpu_ids is not None and len(gpus) != len(set(gpu_ids)):
        return []
    busy = _busy_by_gpu([g.id for g in gpus], first, last + length)
    trackers = {g.id: _FreeTracker(busy.get(g.id, [])) for g in gpus}

    windows = []
    t = first
    while t <= last and len(windows) < limit:
        free = [g for g in gpus if trackers[g.id].free(t, length)]
        if gpu_ids is not None:
            if len(free) == len(gpus):
                windows.append(Window(tuple(g.id for g in gpus), t, t + length))
        else:
            windows.extend(_fits(free, gpu_count, allow_multi_node, t, t + length))
        t += policy.slot_length()
    return windows[:limit]


def pick_gpus(*, start, end, gpu_count, allow_multi_node=False):
    """Any `gpu_count` healthy GPUs free for exactly [start, end), chosen as find_windows does, or None."""
    gpus = list(GPU.objects.filter(healthy=True).select_related("node").order_by("id"))
    busy = set(overlapping_allocations([g.id for g in gpus], start, end).values_list("gpu_id", flat=True))
    fits = _fits([g for g in gpus if g.id not in busy], gpu_count, allow_multi_node, start, end)
    return list(fits[0].gpus) if fits else None


def _fits(free_gpus, count, allow_multi_node, start, end):
    by_node = defaultdict(list)
    for gpu in free_gpus:
        by_node[gpu.node_id].append(gpu)
    fitting = sorted(
        (gpus for gpus in by_node.values() if len(gpus) >= count),
        key=lambda gpus: (len(gpus), gpus[0].node.hostname),
    )
    windows = [Window(tuple(g.id for g in gpus[:count]), start, end) for gpus in fitting]
    if not windows and allow_multi_node and len(free_gpus) >= count:
        # Fill from the emptiest nodes first so the job spans as few nodes as possible.
        pool = [g for gpus in sorted(by_node.values(), key=len, reverse=True) for g in gpus]
        windows.append(Window(tuple(sorted(g.id for g in pool[:count])), start, end))
    return windows


def preemption_candidate(*, priority, start, end, gpu_count, allow_multi_node=False):
    """For a gpu_count booking that found no free GPUs: the GPUs it could have by preempting, as
    (gpu ids, ids of the bookings in the way), or None. Only GPUs whose every booking in the window
    this one may preempt (policy.may_preempt) count; free GPUs are taken first, then those that
    evict the fewest bookings, on the node that evicts the fewest."""
    gpus = list(GPU.objects.filter(healthy=True).select_related("node").order_by("id"))
    holders, blocked = defaultdict(set), set()
    rows = Allocation.objects.filter(policy.overlapping(start, end), live=True).values_list(
        "gpu_id", "reservation_id", "reservation__priority", "reservation__preemptible"
    )
    for gpu_id, reservation_id, victim_priority, victim_preemptible in rows:
        if policy.may_preempt(priority, victim_priority=victim_priority, victim_preemptible=victim_preemptible):
            holders[gpu_id].add(reservation_id)
        else:
            blocked.add(gpu_id)
    takeable = [g for g in gpus if g.id not in blocked]

    def pick(pool):
        chosen = sorted(pool, key=lambda g: (len(holders[g.id]), g.id))[:gpu_count]
        return chosen, set().union(*(holders[g.id] for g in chosen))

    by_node = defaultdict(list)
    for gpu in takeable:
        by_node[gpu.node_id].append(gpu)
    options = [pick(pool) for pool in by_node.values() if len(pool) >= gpu_count]
    if not options and allow_multi_node and len(takeable) >= gpu_count:
        options = [pick(takeable)]
    if not options:
        return None
    chosen, victims = min(options, key=lambda option: (len(option[1]), option[0][0].node.hostname))
    return tuple(sorted(g.id for g in chosen)), victims


def booking_suggestions(*, now, start, slots, gpu_ids=None, gpu_count=None, allow_multi_node=False, limit=5):
    """Up to `limit` windows for a request that conflicted, nearest to its start first:
    the same GPUs later, or other GPUs at the same time (or later, for a gpu_count request)."""
    suggestions = []
    if gpu_ids is not None:
        suggestions += find_windows(
            slots=slots, after=start + policy.slot_length(), now=now, gpu_ids=gpu_ids, limit=limit
        )
        models = set(GPU.objects.filter(id__in=gpu_ids).values_list("model", flat=True))
        same_time = find_windows(
            slots=slots,
            after=start,
            now=now,
            gpu_count=len(gpu_ids),
            gpu_model=models.pop() if len(models) == 1 else None,
            allow_multi_node=allow_multi_node,
            latest_start=start,
            limit=limit,
        )
        suggestions += [w for w in same_time if set(w.gpus) != set(gpu_ids)]
    else:
        suggestions += find_windows(
            slots=slots, after=start, now=now, gpu_count=gpu_count,
            allow_multi_node=allow_multi_node, limit=limit,
        )
    suggestions.sort(key=lambda w: (abs((w.start - start).total_seconds()), w.gpus))
    return suggestions[:limit]


def gpu_status(*, now, upcoming_limit=3):
    """Per GPU: the reservation holding it now and the next few, for the status board."""
    gpus = list(GPU.objects.select_related("node").order_by("node__hostname", "index"))
    allocations = (
        Allocation.objects.filter(
            live=True,
            end__gt=now,
            reservation__status__in=[Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE],
        )
        .order_by("start")
        .values_list("gpu_id", "reservation_id", "start")
    )
    current, upcoming = {}, defaultdict(list)
    for gpu_id, reservation_id, start in allocations:
        if start <= now:
            current[gpu_id] = reservation_id
        elif len(upcoming[gpu_id]) < upcoming_limit:
            upcoming[gpu_id].append(reservation_id)
    wanted = set(current.values()) | {r for ids in upcoming.values() for r in ids}
    reservations = reservation_queryset().in_bulk(wanted)
    return [
        {
            "gpu": gpu,
            "current": reservations.get(current.get(gpu.id)),
            "upcoming": [reservations[r] for r in upcoming.get(gpu.id, [])],
        }
        for gpu in gpus
    ]


def notices_unread(user):
    """The user's unread notices, newest first (the pages' banner and list)."""
    return Notice.objects.filter(user=user, read_at__isnull=True).select_related("reservation")


# --- The calendar -------------------------------------------------------------------------------


def calendar_gpus():
    """Every GPU with its node, in the calendar's track order (grouped by node)."""
    return list(GPU.objects.select_related("node").order_by("node__hostname", "index"))


def calendar_bookings(*, start, end, gpu_ids):
    """The bookings holding any of `gpu_ids` during [start, end), as plain rows of what the calendar
    shows (the feed serves hundreds at a time: no model instances), each with its "gpus".

    The allocations are read through their (gpu, start, end) index over the window only: a booking
    overlapping it starts after start - policy.longest_booking(), so the cost grows with the window
    and not with the history."""
    held = defaultdict(list)
    rows = (
        overlapping_allocations(gpu_ids, start, end)
        .filter(start__gt=start - policy.longest_booking())
        .order_by("gpu_id")
        .values_list("reservation_id", "gpu_id")
    )
    for reservation_id, gpu_id in rows:
        held[reservation_id].append(gpu_id)
    bookings = list(
        Reservation.objects.filter(pk__in=list(held))
        .order_by("start", "id")
        .values(
            "id", "start", "end", "title", "priority", "preemptible", "status", "user_id", "team_id",
            "user__username", "team__slug", "team__colour",
        )
    )
    for booking in bookings:
        booking["gpus"] = held[booking["id"]]
    return bookings


def waitlisted(*, now, limit=50):
    """Waiting requests that could still be served, soonest first (the calendar lists them apart)."""
    return list(
        Reservation.objects.filter(status=Reservation.Status.WAITLISTED, end__gt=now)
        .select_related("user", "team")
        .order_by("start", "id")[:limit]
    )


def free_gpus_on_node(*, node_id, start, end, exclude=()):
    """Healthy GPUs of one node free for all of [start, end), in index order."""
    gpus = list(GPU.objects.filter(node_id=node_id, healthy=True).exclude(id__in=exclude).order_by("index"))
    busy = set(overlapping_allocations([g.id for g in gpus], start, end).values_list("gpu_id", flat=True))
    return [g for g in gpus if g.id not in busy]


@dataclass(frozen=True)
class Preemption:
    """What booking a window by preemption would do to one booking in the way, as the rules say
    (policy.has_begun, reclaim_time): asked before the person confirms."""

    reservation: Reservation
    begun: bool  # cut at the new booking's start (its job stopped); otherwise moved whole
    notice: object  # a timedelta: how long before the GPUs are taken


def preemption_preview(*, priority, start, end, now, gpu_ids=None, gpu_count=None, allow_multi_node=False):
    """The bookings a booking of `priority` for [start, end) would preempt, as a list of Preemption;
    [] when nothing is in the way or the rules forbid taking it (the booking itself then answers
    with its 409 and the reason). A preview: the booking decides again under its locks."""
    if not policy.may_try_preemption(start, priority):
        return []
    if gpu_ids is None:
        if pick_gpus(start=start, end=end, gpu_count=gpu_count, allow_multi_node=allow_multi_node):
            return []
        plan = preemption_candidate(
            priority=priority, start=start, end=end, gpu_count=gpu_count, allow_multi_node=allow_multi_node
        )
        if plan is None:
            return []
        victim_ids = plan[1]
        victims = list(Reservation.objects.filter(pk__in=victim_ids).select_related("user", "team"))
    else:
        victims = list({a.reservation_id: a.reservation for a in conflicting_allocations(gpu_ids, start, end)}.values())
    if not victims or policy.preemption_refusal(priority, victims):
        return []
    if policy.needs_notice(victims, now) and start < policy.earliest_preempting_start(now):
        return []
    return [
        Preemption(reservation=v, begun=policy.has_begun(v, start, now), notice=max(start, now) - now)
        for v in sorted(victims, key=lambda v: (v.start, v.pk))
    ]


def calendar_feed_reservations(*, start, end, user=None, team=None):
    """The bookings of one iCal feed: those `user` owns, or those of `team`, that overlap [start, end),
    cancelled ones included (a feed must say so, or calendar apps keep showing them).

    Each carries `revision`, the number of its audit entries: the log is append-only and every change
    to a booking writes an entry, so it only ever grows, as iCal's SEQUENCE must. The window bounds
    the cost, however long the history; the queries are a fixed two.
    """
    if (user is None) == (team is None):
        raise ValueError("Give exactly one of user or team.")
    qs = Reservation.objects.filter(policy.overlapping(start, end))
    qs = qs.filter(user=user) if user is not None else qs.filter(team=team)
    return (
        qs.select_related("user", "team")
        .prefetch_related(
            Prefetch(
                "allocations",
                queryset=Allocation.objects.select_related("gpu__node").order_by("gpu_id"),
                to_attr="held_allocations",
            )
        )
        .annotate(revision=Count("audit_entries"))
        .order_by("start", "id")
    )


# --- The pages: a person's bookings, a booking's page, notices ---------------------------------


def reservations_upcoming(user, *, now):
    """The user's bookings that still hold (or wait for) time, soonest first."""
    return reservation_queryset().filter(
        user=user, status__in=Reservation.OPEN_STATUSES, end__gt=now
    ).order_by("start", "id")


def reservations_past(user, *, now):
    """The user's other bookings: ended, cancelled, completed or preempted, latest first."""
    return (
        reservation_queryset()
        .filter(user=user)
        .exclude(status__in=Reservation.OPEN_STATUSES, end__gt=now)
        .order_by("-start", "-id")
    )


def _waitlist_order():
    # The order waitlist_promote() tries requests in: oldest request first.
    return Reservation.objects.filter(status=Reservation.Status.WAITLISTED).order_by("created", "id")


def waitlist_position(reservation):
    """How many waitlisted requests come before this one when the waitlist is promoted (0: it is
    tried first), or None when it is not waitlisted."""
    if reservation.status != Reservation.Status.WAITLISTED:
        return None
    return _waitlist_order().filter(
        Q(created__lt=reservation.created) | Q(created=reservation.created, id__lt=reservation.pk)
    ).count()


def waitlist_positions(reservations):
    """waitlist_position() of each waitlisted booking in `reservations`, by id, in one query."""
    wanted = {r.pk for r in reservations if r.status == Reservation.Status.WAITLISTED}
    if not wanted:
        return {}
    ahead = {}
    for index, reservation_id in enumerate(_waitlist_order().values_list("id", flat=True)):
        if reservation_id in wanted:
            ahead[reservation_id] = index
    return ahead


def reservation_page(reservation_id):
    """One booking with what its page shows (GPUs, owner, team, job, who preempted it, what it was
    rebooked from, its rebookings), or None."""
    reservation = (
        reservation_queryset()
        .select_related("preempted_by__user", "rebook_of")
        .prefetch_related(Prefetch("rebooks", queryset=Reservation.objects.order_by("start", "id")))
        .filter(pk=reservation_id)
        .first()
    )
    return reservation


def audit_history(reservation, *, with_details):
    """A booking's audit entries, oldest first. Without `with_details` (a viewer who may not see the
    booking's job: policy.JobViewer), each entry's reason and before/after are blanked, as they
    name jobs ("job 12 asked to stop") another team must not learn about: when, who and what remain."""
    entries = list(AuditEntry.objects.filter(reservation=reservation).select_related("actor").order_by("created", "id"))
    if not with_details:
        for entry in entries:
            entry.reason, entry.before, entry.after = "", None, None
    return entries


def notices_of(user):
    """All of the user's notices, newest first."""
    return Notice.objects.filter(user=user).select_related("reservation").order_by("-created", "-id")


def memberships_of(user):
    """The user's teams with their role in each, by team name (the profile page)."""
    return list(user.memberships.select_related("team").order_by("team__name"))


def gpu_names(gpu_ids):
    """{GPU id: "node/gpuN"} for `gpu_ids` (suggested windows name their GPUs by id)."""
    return {gpu.pk: gpu.name for gpu in GPU.objects.filter(pk__in=gpu_ids).select_related("node")}


# --- The usage report (staff) -------------------------------------------------------------------

# What the report may cover at once: a year (a leap year's too), so one request reads a bounded
# part of the history.
USAGE_MAX_PERIOD = timedelta(days=366)
USAGE_DEFAULT_PERIOD = timedelta(days=30)

# Bookings whose time was held (and so "booked"): what a waitlisted request wished for and a
# cancelled booking's time were never held (Allocation.live says the same).
_HELD = (Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE, Reservation.Status.COMPLETED,
         Reservation.Status.PREEMPTED)


class _Median(Aggregate):
    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def usage_period(*, start=None, end=None, now):
    """The report's period [start, end): by default the 30 days up to `now`; a BookingError names
    the field when it is empty or longer than USAGE_MAX_PERIOD."""
    end = end or now
    try:
        start = start or end - USAGE_DEFAULT_PERIOD
    except OverflowError:  # 30 days before year 1: callers that bound their input never get here
        raise BookingError("end", "The end is too early for a report of the default length.") from None
    if start >= end:
        raise BookingError("end", "The end must come after the start.")
    if end - start > USAGE_MAX_PERIOD:
        raise BookingError("end", f"Ask for at most {USAGE_MAX_PERIOD.days} days at a time.")
    return start, end


def _seconds(lo, hi):
    """SQL: the length of [lo, hi) in seconds, 0 when it is empty."""
    return _epoch(Greatest(_duration(lo, hi), Value(timedelta(0))))


def _duration(lo, hi):
    return ExpressionWrapper(hi - lo, output_field=DurationField())


def _epoch(duration):
    """SQL: a duration in seconds, as a float (EXTRACT gives a numeric)."""
    return Cast(Extract(duration, "epoch"), FloatField())


def _hours(seconds):
    return round((seconds or 0) / 3600, 2)


def _work_relations():
    """The reverse relations the apps behind each kind of work declare on bookings (reservations.jobs:
    this app never imports them): training jobs, servings. None on an installation without either:
    there, nothing counts as used."""
    return [name for name in jobs.hooks().related_names if _has_field(Reservation, name)]


def _has_field(model, name):
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


def usage_report(*, start, end, now):
    """Per team, what it booked and did with it over [start, end). All the rules of what counts are
    here, each computed by the database, in six queries whatever the number of bookings:

    - booked GPU-hours: the part of each held booking (confirmed, active, completed, preempted;
      not waitlisted or cancelled) inside the period, times its GPU count;
    - used GPU-hours: the part of that where its work ran (its training job, or its replicas serving
      from their start), [started_at, ended_at or now], times its GPU count; a booking without work
      (or whose work never started) adds nothing;
    - no-shows: held bookings starting in the period whose first slot passed with nothing begun
      (no work, or work with no started_at): the rule NO_SHOW_RELEASE applies
      (policy.no_show_cutoff), whether or not the release happened;
    - cancellations: `cancel` audit entries in the period made by a person (not the scheduler's own,
      e.g. a rebooking withdrawn with its preemptor), and how long before the booking's start they
      came, in hours (negative: after it began);
    - early releases: `release` audit entries in the period (unused slots given back: a finished
      job's or, with NO_SHOW_RELEASE, a no-show's);
    - preemptions suffered: `preempt` audit entries in the period on the team's bookings; caused:
      the same entries counted for the team of the preempting booking (the entry's after.preempted_by,
      else the victim's preempted_by);
    - waitlist waits: for requests promoted in the period, the hours from their `waitlist` entry to
      their `promote` entry.

    Returns a list of dicts, one per team with anything in the period, by team name.
    """
    Action = AuditEntry.Action
    rows = defaultdict(lambda: {
        "booked_gpu_hours": 0.0, "used_gpu_hours": 0.0, "bookings": 0, "no_shows": 0,
        "cancellations": 0, "cancel_lead_hours_median": None, "cancel_lead_hours_avg": None,
        "early_releases": 0, "preemptions_suffered": 0, "preemptions_caused": 0,
        "waitlist_promotions": 0, "waitlist_wait_hours_median": None, "waitlist_wait_hours_max": None,
    })

    held = Reservation.objects.filter(policy.overlapping(start, end), status__in=_HELD)
    in_period_lo, in_period_hi = Greatest(F("start"), Value(start)), Least(F("end"), Value(end))
    aggregates = {
        "booked": Sum(_seconds(in_period_lo, in_period_hi) * F("gpu_count")),
        "bookings": Count("id"),
    }
    nothing_ran = Q()
    for index, work in enumerate(_work_relations()):
        # One-to-one relations: each joins at most one row, so the sums count each booking once.
        ran_until = Coalesce(F(f"{work}__ended_at"), Value(now))
        aggregates[f"used_{index}"] = Sum(
            _seconds(Greatest(in_period_lo, F(f"{work}__started_at")), Least(in_period_hi, ran_until))
            * F("gpu_count"),
            filter=Q(**{f"{work}__started_at__isnull": False}),
        )
        nothing_ran &= Q(**{f"{work}__isnull": True}) | Q(**{f"{work}__started_at__isnull": True})
    aggregates["no_shows"] = Count(
        "id", filter=nothing_ran & Q(start__gte=start, start__lt=end, start__lte=policy.no_show_cutoff(now))
    )
    for row in held.values("team_id").annotate(**aggregates).order_by():
        team = rows[row["team_id"]]
        team["booked_gpu_hours"] = _hours(row["booked"])
        team["used_gpu_hours"] = _hours(sum(value for key, value in row.items() if key.startswith("used_") and value))
        team["bookings"] = row["bookings"]
        team["no_shows"] = row["no_shows"]

    entries = AuditEntry.objects.filter(created__gte=start, created__lt=end, reservation__isnull=False)
    cancels = Q(action=Action.CANCEL, actor__isnull=False)
    lead = _epoch(_duration(F("created"), F("reservation__start"))) / Value(3600.0)
    counted = (
        entries.values("reservation__team_id")
        .annotate(
            cancellations=Count("id", filter=cancels),
            cancel_lead_median=_Median(lead, filter=cancels),
            cancel_lead_avg=Avg(lead, filter=cancels),
            releases=Count("id", filter=Q(action=Action.RELEASE)),
            preempted=Count("id", filter=Q(action=Action.PREEMPT)),
        )
        .order_by()
    )
    for row in counted:
        if not (row["cancellations"] or row["releases"] or row["preempted"]):
            continue
        team = rows[row["reservation__team_id"]]
        team["cancellations"] = row["cancellations"]
        team["cancel_lead_hours_median"] = _round(row["cancel_lead_median"])
        team["cancel_lead_hours_avg"] = _round(row["cancel_lead_avg"])
        team["early_releases"] = row["releases"]
        team["preemptions_suffered"] = row["preempted"]

    preemptor = Coalesce(
        Cast(KeyTextTransform("preempted_by", "after"), IntegerField()), F("reservation__preempted_by_id")
    )
    preemptor_team = Reservation.objects.filter(pk=OuterRef("preemptor")).values("team_id")[:1]
    caused = (
        entries.filter(action=Action.PREEMPT)
        .annotate(preemptor=preemptor)
        .annotate(preemptor_team=Subquery(preemptor_team))
        .filter(preemptor_team__isnull=False)
        .values("preemptor_team")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in caused:
        rows[row["preemptor_team"]]["preemptions_caused"] = row["n"]

    waitlisted_at = (
        AuditEntry.objects.filter(reservation=OuterRef("reservation"), action=Action.WAITLIST)
        .order_by("created", "id").values("created")[:1]
    )
    wait = _epoch(_duration(F("waitlisted_at"), F("promoted_at"))) / Value(3600.0)
    waits = (
        entries.filter(action=Action.PROMOTE)
        .annotate(promoted_at=F("created"), waitlisted_at=Subquery(waitlisted_at))
        .filter(waitlisted_at__isnull=False)
        .values("reservation__team_id")
        .annotate(n=Count("id"), median=_Median(wait), longest=Max(wait))
        .order_by()
    )
    for row in waits:
        team = rows[row["reservation__team_id"]]
        team["waitlist_promotions"] = row["n"]
        team["waitlist_wait_hours_median"] = _round(row["median"])
        team["waitlist_wait_hours_max"] = _round(row["longest"])

    teams = Team.objects.filter(pk__in=list(rows)).order_by("name")
    return [{"team": t.slug, "team_name": t.name, "colour": t.colour, **rows[t.pk]} for t in teams]


def _round(hours):
    return None if hours is None else round(hours, 2)


# --- GPU health -------------------------------------------------------------------------------


def gpu_bookings_ahead(*, gpu_id, now):
    """The live bookings holding `gpu_id` now or later (confirmed or active, not yet ended), soonest
    first: whom a GPU's alert or failure concerns."""
    return list(
        Reservation.objects.filter(
            status__in=policy.LIVE_STATUSES, end__gt=now, allocations__gpu_id=gpu_id, allocations__live=True
        )
        .select_related("user", "team")
        .order_by("start", "id")
    )


def healthy_move_suggestion(reservation, now):
    """For a booking on a GPU the health check took out: the nearest free window of its size (as
    many GPUs, as many slots) on healthy GPUs, from its start (or now, for one under way): what its
    notice suggests and its page offers to move it to."""
    count = len(reservation.allocation_list) or reservation.gpu_count
    windows = booking_suggestions(
        now=now, start=max(reservation.start, now), slots=reservation.slots, gpu_count=count,
        allow_multi_node=reservation.allow_multi_node, limit=1,
    )
    if not windows:
        return None
    window = windows[0]
    names = gpu_names(list(window.gpus))
    return {
        "gpus": list(window.gpus),
        "gpu_names": [names[g] for g in window.gpus],
        "start": window.start,
        "end": window.end,
        "slots": reservation.slots,
    }
