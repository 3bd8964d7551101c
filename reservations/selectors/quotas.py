"""Fair-sharing reads: what a team's bookings count against its quota in a window (per week, per
day, at a moment), the recent use that orders the waitlist, and where a team stands. Each read is
bounded by its window (bookings are found by start: policy.longest_booking), never by the history."""

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Case, DateTimeField, F, Q, Sum, Value, When
from django.db.models.functions import Greatest, Least

from .. import policy
from ..models import Reservation, TeamQuota
from ..sql import EpochSeconds

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
    def remaining_hours(self):
        if self.quota is None or self.quota.gpu_hours_per_week is None:
            return None
        return max(self.quota.gpu_hours_per_week - self.booked_hours, 0)


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


def team_quota(team_id, start, end):
    """The team's quota with its bookings in the quota weeks [start, end) touches, as a policy.Quota,
    or None for a team without one: what locks.lock_team_quota reads under the quota row's lock, read
    here without it, for a page to say how a booking would stand before it is sent (the booking
    checks again under the lock). Two queries, bounded by those weeks."""
    row = (
        TeamQuota.objects.filter(team_id=team_id)
        .values("team__slug", "gpu_hours_per_week", "max_gpus", "borrow_gpu_hours_per_week", "weight")
        .first()
    )
    if row is None:
        return None
    weeks = policy.weeks_of(start, end)
    rows = counted(weeks[0][0], weeks[-1][1]).filter(team_id=team_id).values_list(
        "start", "counted_end", "gpu_count", "borrowed", "id"
    )
    return policy.Quota(
        team_slug=row["team__slug"], gpu_hours_per_week=row["gpu_hours_per_week"], max_gpus=row["max_gpus"],
        borrow_gpu_hours_per_week=row["borrow_gpu_hours_per_week"], weight=row["weight"],
        booked=tuple(policy.Booked(*booked) for booked in rows),
    )


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
