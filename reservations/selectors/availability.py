"""Free time: conflicts, free windows, picking GPUs, what a preemption would take, where a booking on a
failing GPU could go. The booking services ask these under their locks; the pages and the API ask
them to suggest."""

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass

from django.db import connection
from django.db.models import Q

from .. import policy, sql
from ..models import GPU, Allocation, Reservation


@dataclass(frozen=True)
class Window:
    gpus: tuple
    start: object
    end: object


def overlapping_allocations(gpu_ids, start, end, *, exclude_reservation=None):
    """Live allocations on any of `gpu_ids` that overlap [start, end), bare: for an existence check.
    Bounded by start (one overlapping [start, end) starts after start - policy.longest_booking()), so
    the index on (gpu, start, end) reads the window, never the GPU's history."""
    qs = Allocation.objects.filter(_overlapping_bounded(start, end), gpu_id__in=gpu_ids, live=True)
    if exclude_reservation is not None:
        qs = qs.exclude(reservation_id=exclude_reservation)
    return qs


def any_overlapping(gpu_ids, start, end):
    """Whether any live allocation on `gpu_ids` overlaps [start, end): overlapping_allocations(...)
    .exists(), written out. Every booking asks it under its GPU locks, and building the ORM's query
    took four times the CPU of sending it and reading the answer (bench/booking_profile.py). The same
    filter: policy.overlapping's rule, bounded by start as _overlapping_bounded is (the tests compare
    the two, and the plan of each)."""
    if not gpu_ids:
        return False
    with connection.cursor() as cursor:
        cursor.execute(*overlap_check_sql(gpu_ids, start, end))
        return cursor.fetchone() is not None


def overlap_check_sql(gpu_ids, start, end):
    """any_overlapping's statement and its parameters."""
    vendor = sql.Vendor(connection)
    column = {name: vendor.q(Allocation._meta.get_field(name).column) for name in ("gpu", "live", "start", "end")}
    query = (
        f"SELECT 1 FROM {vendor.q(Allocation._meta.db_table)}"
        f" WHERE {column['gpu']} IN ({', '.join(['%s'] * len(gpu_ids))}) AND {column['live']} = %s"
        f" AND {column['start']} < %s AND {column['end']} > %s AND {column['start']} > %s LIMIT 1"
    )
    params = [*gpu_ids, True, end, start, start - policy.longest_booking()]
    return query, [vendor.param(value) for value in params]


def _overlapping_bounded(start, end):
    return policy.overlapping(start, end) & Q(start__gt=start - policy.longest_booking())


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
    return _search(
        gpus, busy, first=first, last=last, length=length, exact=gpu_ids is not None, gpu_count=gpu_count,
        allow_multi_node=allow_multi_node, limit=limit,
    )


def _search(gpus, busy, *, first, last, length, exact, gpu_count, allow_multi_node, limit):
    """find_windows' search over GPUs and their busy intervals already read (`busy` may hold more of
    their time than [first, last + length)): all of `gpus` when `exact`, else `gpu_count` of them."""
    trackers = {g.id: _FreeTracker(busy.get(g.id, [])) for g in gpus}
    windows = []
    t = first
    while t <= last and len(windows) < limit:
        free = [g for g in gpus if trackers[g.id].free(t, length)]
        if exact:
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


@dataclass(frozen=True)
class PreemptionPlan:
    gpu_ids: tuple  # the GPUs to book, sorted
    victim_ids: set  # the bookings in the way on them


def preemption_candidate(*, priority, start, end, gpu_count, allow_multi_node=False):
    """For a gpu_count booking that found no free GPUs: the GPUs it could have by preempting, as a
    PreemptionPlan, or None. Only GPUs whose every booking in the window this one may preempt
    (policy.may_preempt) count; free GPUs are taken first, then those that evict the fewest
    bookings, on the node that evicts the fewest."""
    gpus = list(GPU.objects.filter(healthy=True).select_related("node").order_by("id"))
    holders, blocked = defaultdict(set), set()
    rows = Allocation.objects.filter(_overlapping_bounded(start, end), live=True).values_list(
        "gpu_id", "reservation_id", "reservation__priority", "reservation__preemptible", "reservation__borrowed"
    )
    for gpu_id, reservation_id, victim_priority, victim_preemptible, victim_borrowed in rows:
        if policy.may_preempt(
            priority, victim_priority=victim_priority, victim_preemptible=victim_preemptible,
            victim_borrowed=victim_borrowed,
        ):
            holders[gpu_id].add(reservation_id)
        else:
            blocked.add(gpu_id)
    takeable = [g for g in gpus if g.id not in blocked]

    def pick(pool):
        chosen = sorted(pool, key=lambda g: (len(holders[g.id]), g.id))[:gpu_count]
        return PreemptionPlan(
            gpu_ids=tuple(sorted(g.id for g in chosen)), victim_ids=set().union(*(holders[g.id] for g in chosen))
        )

    by_node = defaultdict(list)
    for gpu in takeable:
        by_node[gpu.node_id].append(gpu)
    options = [pick(pool) for pool in by_node.values() if len(pool) >= gpu_count]
    if not options and allow_multi_node and len(takeable) >= gpu_count:
        options = [pick(takeable)]
    if not options:
        return None
    node_of = {g.id: g.node.hostname for g in takeable}
    return min(options, key=lambda plan: (len(plan.victim_ids), node_of[plan.gpu_ids[0]]))


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
        victim_ids = plan.victim_ids
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


def gpu_names(gpu_ids):
    """{GPU id: "node/gpuN"} for `gpu_ids` (suggested windows name their GPUs by id)."""
    return {gpu.pk: gpu.name for gpu in GPU.objects.filter(pk__in=gpu_ids).select_related("node")}


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
    return healthy_move_suggestions([reservation], now)[reservation.pk]


def healthy_move_suggestions(reservations, now):
    """healthy_move_suggestion() of each of `reservations`, by id, from one read of the healthy GPUs
    and one of their bookings up to the horizon, however many (a person's bookings on a failed GPU)."""
    if not reservations:
        return {}
    gpus = list(GPU.objects.filter(healthy=True).select_related("node").order_by("id"))
    starts = {r.pk: policy.ceil_to_slot(max(r.start, now)) for r in reservations}
    busy = _busy_by_gpu([g.id for g in gpus], min(starts.values()), policy.horizon_end(now))
    suggestions = {}
    for reservation in reservations:
        length = reservation.slots * policy.slot_length()
        windows = _search(
            gpus, busy, first=starts[reservation.pk], last=policy.horizon_end(now) - length, length=length,
            exact=False, gpu_count=len(reservation.allocation_list) or reservation.gpu_count,
            allow_multi_node=reservation.allow_multi_node, limit=1,
        )
        suggestions[reservation.pk] = _suggestion(windows[0], reservation, gpus) if windows else None
    return suggestions


def _suggestion(window, reservation, gpus):
    names = {gpu.pk: gpu.name for gpu in gpus if gpu.pk in window.gpus}
    return {
        "gpus": list(window.gpus),
        "gpu_names": [names[g] for g in window.gpus],
        "start": window.start,
        "end": window.end,
        "slots": reservation.slots,
    }
