"""Fair-sharing reads: what a team's bookings count against its quota in a window (per week, per
day, at a moment), the recent use that orders the waitlist, and where a team stands. Each read is
bounded by its window (bookings are found by start: policy.longest_booking), never by the history."""

from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.db.models import Case, DateTimeField, F, Q, Sum, Value, When
from django.db.models.functions import Greatest, Least

from .. import policy
from ..models import Reservation, TeamQuota
from .. import sql
from ..sql import EpochSeconds
from .used import seconds, used_gpu_seconds, with_runs

Status = Reservation.Status


def counted(lo, hi):
    """The bookings whose counted time (policy.counted_end) overlaps [lo, hi), annotated with
    `counted_end` and `counted_seconds` (GPUs x seconds inside [lo, hi))."""
    end = Case(
        When(status=Status.CANCELLED, then=Least(F("end"), F("cancelled_at"))),
        default=F("end"),
        output_field=DateTimeField(),
    )
    inside = Least(F("counted_end"), Value(hi)) - Greatest(F("start"), Value(lo))
    return (
        Reservation.objects.filter(
            Q(status__in=policy.COUNTED_STATUSES) | Q(status=Status.CANCELLED, cancelled_at__isnull=False),
            start__gt=lo - policy.longest_booking(), start__lt=hi, end__gt=lo,
        )
        .annotate(counted_end=end)
        .filter(Q(counted_end__gt=lo), Q(counted_end__gt=F("start")))
        .annotate(counted_seconds=F("gpu_count") * EpochSeconds(inside))
    )


def quota_tally(team_id, start, end, *, exclude=()):
    """What counts against a team's quota around [start, end), in one query whose answer does not
    grow with the team's week: ({week start: (in-quota GPU-hours, borrowed GPU-hours)} for each quota
    week the window touches, [policy.Booked] of the bookings overlapping the window itself). The
    bookings in `exclude` do not count (one being moved, rebookings about to be cancelled).

    The rows are grouped so that every booking outside the window falls into one group per kind (in
    quota, borrowed) and each booking overlapping the window into a group of its own. The same rules
    as counted(), in SQL written out: every booking of a team with a quota runs it, and building it
    with the ORM cost more than running it (bench/fair_share.py)."""
    weeks = policy.weeks_of(start, end)
    lo, hi = weeks[0][0], weeks[-1][1]
    vendor = sql.Vendor(connection)
    week_sums, week_params = [], []
    for week_start, week_end in weeks:
        inside = vendor.seconds(vendor.least("r.e", "%s"), vendor.greatest("r.s", "%s"))
        week_sums.append(f"SUM(CASE WHEN r.s < %s AND r.e > %s THEN r.gpus * {inside} END)")
        week_params += [week_end, week_start, week_end, week_start]
    statuses = [Status.CANCELLED, team_id, *policy.COUNTED_STATUSES, Status.CANCELLED]
    not_excluded = f"AND id NOT IN ({', '.join(['%s'] * len(exclude))})" if exclude else ""
    query = f"""
        SELECT r.borrowed, CASE WHEN r.s < %s AND r.e > %s THEN r.id ELSE 0 END, MIN(r.s), MAX(r.e), MAX(r.gpus),
               {", ".join(week_sums)}
        FROM (
            SELECT id, borrowed, gpu_count AS gpus, {vendor.q("start")} AS s,
                   CASE WHEN status = %s THEN {vendor.least(vendor.q("end"), "cancelled_at")} ELSE {vendor.q("end")} END AS e
            FROM {vendor.q(Reservation._meta.db_table)}
            WHERE team_id = %s
              AND (status IN ({", ".join(["%s"] * len(policy.COUNTED_STATUSES))}) OR (status = %s AND cancelled_at IS NOT NULL))
              AND {vendor.q("start")} > %s AND {vendor.q("start")} < %s AND {vendor.q("end")} > %s {not_excluded}
        ) r
        WHERE r.e > %s AND r.e > r.s
        GROUP BY 1, 2
    """
    params = [
        end, start, *week_params, *statuses, lo - policy.longest_booking(), hi, lo, *exclude, lo,
    ]
    with connection.cursor() as cursor:
        cursor.execute(query, [vendor.param(value) for value in params])
        groups = cursor.fetchall()
    hours, booked = {week_start: [0.0, 0.0] for week_start, _ in weeks}, []
    for borrowed, held, first, last, gpus, *seconds in groups:
        for (week_start, _), week_seconds in zip(weeks, seconds):
            hours[week_start][1 if borrowed else 0] += (week_seconds or 0) / 3600
        if held:
            booked.append(policy.Booked(vendor.moment(first), vendor.moment(last), gpus, bool(borrowed), held))
    return {week: tuple(pair) for week, pair in hours.items()}, booked


def team_recent_gpu_hours(now):
    """{team id: GPU-hours booked over the fair-share window (policy.fair_share_window)}, every team
    with any, in one query."""
    lo, hi = policy.fair_share_window(now)
    rows = counted(lo, hi).values("team_id").annotate(seconds=Sum("counted_seconds")).values_list("team_id", "seconds")
    return {team_id: (seconds or 0) / 3600 for team_id, seconds in rows}


def fair_share_weights():
    """{team id: weight} of the teams with a quota; the others weigh 1."""
    return dict(TeamQuota.objects.values_list("team_id", "weight"))


def waitlist_order(now):
    """The waitlisted requests' ids in the order waitlist_promote() tries them (policy.fair_share_key)."""
    waiting = list(
        Reservation.objects.filter(status=Status.WAITLISTED).values_list("id", "team_id", "created")
    )
    if not waiting:
        return []
    recent, weights = team_recent_gpu_hours(now), fair_share_weights()
    waiting.sort(key=lambda row: policy.fair_share_key(recent.get(row[1], 0), weights.get(row[1], 1), row[2], row[0]))
    return [row[0] for row in waiting]


@dataclass(frozen=True)
class Standing:
    """Where a team stands this week: its quota (None: unlimited) and what it has booked."""

    team: object
    quota: TeamQuota | None
    week_start: object
    booked_hours: float  # in quota, this week
    borrowed_hours: float  # this week
    gpus_now: int  # in quota, held now

    @property
    def week(self):
        return policy.week_label(self.week_start)

    @property
    def week_end(self):
        return self.week_start + timedelta(days=7)

    @property
    def remaining_hours(self):
        return _remaining(self.quota, self.booked_hours)


def _remaining(quota, booked_hours):
    """GPU-hours left in quota this week; None: no limit of GPU-hours."""
    if quota is None or quota.gpu_hours_per_week is None:
        return None
    return max(quota.gpu_hours_per_week - booked_hours, 0)


def team_standings(teams, now):
    """A Standing for each of `teams` (this quota week), in two queries whatever the number of teams."""
    teams = list(teams)
    first = policy.week_start(now)
    week = (first, first + timedelta(days=7))
    quotas = {q.team_id: q for q in TeamQuota.objects.filter(team__in=teams)}
    hours, borrowed, gpus_now = {}, {}, {}
    rows = counted(*week).filter(team__in=teams).values_list(
        "team_id", "start", "counted_end", "gpu_count", "borrowed", "counted_seconds"
    )
    for team_id, start, end, count, is_borrowed, seconds in rows:
        bucket = borrowed if is_borrowed else hours
        bucket[team_id] = bucket.get(team_id, 0) + (seconds or 0) / 3600
        if not is_borrowed and start <= now < end:
            gpus_now[team_id] = gpus_now.get(team_id, 0) + count
    return [
        Standing(
            team=team, quota=quotas.get(team.pk), week_start=first, booked_hours=hours.get(team.pk, 0),
            borrowed_hours=borrowed.get(team.pk, 0), gpus_now=gpus_now.get(team.pk, 0),
        )
        for team in teams
    ]


_DAY = timedelta(days=1)


@dataclass(frozen=True)
class DayUsage:
    """One day (24 hours from the quota week's start, or from the day before's) of a team's week."""

    start: object
    end: object
    booked_hours: float  # in quota
    borrowed_hours: float
    used_hours: float  # in which the bookings' work ran (selectors.used)


@dataclass(frozen=True)
class WeekUsage:
    """A team's quota week, day by day: what it booked in quota, borrowed, and used."""

    team: object
    quota: TeamQuota | None
    week_start: object
    days: tuple  # of DayUsage, 7

    @property
    def week(self):
        return policy.week_label(self.week_start)

    @property
    def week_end(self):
        return self.week_start + 7 * _DAY

    @property
    def booked_hours(self):
        return sum(day.booked_hours for day in self.days)

    @property
    def borrowed_hours(self):
        return sum(day.borrowed_hours for day in self.days)

    @property
    def used_hours(self):
        return sum(day.used_hours for day in self.days)

    @property
    def remaining_hours(self):
        return _remaining(self.quota, self.booked_hours)


def team_week_usage(team, week_start, now):
    """The team's quota week from `week_start` (policy.week_start), day by day: GPU-hours counted
    against its quota (in quota and borrowed, as `counted` counts them) and GPU-hours its bookings'
    work actually ran (as the usage report counts them: held bookings only). Two queries: the quota,
    and one aggregate over the team's bookings in the week."""
    days = [(week_start + i * _DAY, week_start + (i + 1) * _DAY) for i in range(7)]
    aggregates, used_keys = {}, []
    for i, (lo, hi) in enumerate(days):
        inside = seconds(Greatest(F("start"), Value(lo)), Least(F("counted_end"), Value(hi))) * F("gpu_count")
        aggregates[f"booked_{i}"] = Sum(inside, filter=Q(borrowed=False))
        aggregates[f"borrowed_{i}"] = Sum(inside, filter=Q(borrowed=True))
        used = used_gpu_seconds(lo, hi, now, where=Q(status__in=policy.COUNTED_STATUSES))
        used_keys.append([f"used_{i}_{kind}" for kind in range(len(used))])
        aggregates.update(zip(used_keys[i], used))
    totals = with_runs(counted(days[0][0], days[-1][1]).filter(team=team), days[0][0]).aggregate(**aggregates)

    def hours(*keys):
        return sum(totals[key] or 0 for key in keys) / 3600

    return WeekUsage(
        team=team,
        quota=TeamQuota.objects.filter(team=team).first(),
        week_start=week_start,
        days=tuple(
            DayUsage(
                start=lo, end=hi, booked_hours=hours(f"booked_{i}"), borrowed_hours=hours(f"borrowed_{i}"),
                used_hours=hours(*used_keys[i]),
            )
            for i, (lo, hi) in enumerate(days)
        ),
    )


QUOTA_VALUES = ("team__slug", "gpu_hours_per_week", "max_gpus", "borrow_gpu_hours_per_week", "weight")


def quota_of(row, team_id, start, end, *, exclude=()):
    """A policy.Quota from a quota row's QUOTA_VALUES and what counts against it around [start, end)
    (quota_tally)."""
    week_hours, booked = quota_tally(team_id, start, end, exclude=exclude)
    return policy.Quota(
        team_slug=row["team__slug"], gpu_hours_per_week=row["gpu_hours_per_week"], max_gpus=row["max_gpus"],
        borrow_gpu_hours_per_week=row["borrow_gpu_hours_per_week"], weight=row["weight"],
        week_hours=week_hours, booked=tuple(booked),
    )


def team_quota(team_id, start, end):
    """The team's quota and what counts against it around [start, end), as a policy.Quota, or None
    for a team without one: what locks.lock_team_quota reads under the quota row's lock, read here
    without it, for a page to say how a booking would stand before it is sent (the booking checks
    again under the lock). Two queries, bounded by the window's weeks."""
    row = TeamQuota.objects.filter(team_id=team_id).values(*QUOTA_VALUES).first()
    return None if row is None else quota_of(row, team_id, start, end)


@dataclass(frozen=True)
class QuotaPreview:
    """How a booking of `gpus` GPUs for [start, end) would stand against its team's quota (quota_preview):
    `excess` is the limit it passes in quota, `borrow_excess` the borrow limit it would pass as
    borrowed time (asked only when it is over in quota and may borrow)."""

    team: object
    quota: policy.Quota | None
    start: object
    end: object
    gpus: int
    excess: policy.QuotaExcess | None = None
    borrow_excess: policy.QuotaExcess | None = None

    @property
    def state(self):
        """unlimited (no quota), within, borrowable (over, and it fits as borrowed time) or over."""
        if self.quota is None:
            return "unlimited"
        if self.excess is None:
            return "within"
        if self.excess.borrowable and self.borrow_excess is None:
            return "borrowable"
        return "over"

    @property
    def week(self):
        """The quota week the booking starts in: the one its figures below are of."""
        return policy.weeks_of(self.start, self.end)[0]

    @property
    def week_label(self):
        return policy.week_label(self.week[0])

    @property
    def booked_hours(self):
        """The team's in-quota GPU-hours that week, without this booking."""
        return self.quota.hours(self.week, borrowed=False)

    @property
    def borrowed_hours(self):
        return self.quota.hours(self.week, borrowed=True)

    @property
    def requested_hours(self):
        """What this booking adds to that week."""
        return policy.gpu_hours(self.gpus, self.start, self.end, self.week)

    @property
    def hours_with_booking(self):
        return self.booked_hours + self.requested_hours


def quota_preview(*, team, start, end, gpus):
    """A QuotaPreview of a booking of `gpus` GPUs for [start, end) charged to `team`, decided by the
    rules the booking services apply (policy.quota_excess), on a reading taken without a lock
    (team_quota): a page's preview, never the decision."""
    quota = team_quota(team.pk, start, end)
    if quota is None:
        return QuotaPreview(team=team, quota=None, start=start, end=end, gpus=gpus)
    excess = policy.quota_excess(quota, start=start, end=end, gpus=gpus, borrowed=False)
    borrow_excess = None
    if excess is not None and excess.borrowable:
        borrow_excess = policy.quota_excess(quota, start=start, end=end, gpus=gpus, borrowed=True)
    return QuotaPreview(
        team=team, quota=quota, start=start, end=end, gpus=gpus, excess=excess, borrow_excess=borrow_excess
    )
