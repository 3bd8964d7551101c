"""The booking rules, each in one place.

Services call these before they write; nothing else decides what a valid booking is.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.utils.functional import cached_property

from .errors import BookingError
from .models import Membership, Reservation, Team
from .utc_text import utc_moment

# The two words `start` takes besides a datetime: the nearest free window, or from now on.
EARLIEST = "earliest"
NOW = "now"
_EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)


def slot_length():
    return timedelta(minutes=settings.SLOT_MINUTES)


def _slot_words():
    minutes = settings.SLOT_MINUTES
    return f"{minutes // 60}-hour" if minutes % 60 == 0 else f"{minutes}-minute"


def floor_to_slot(moment):
    """The slot boundary at or before `moment`. Boundaries are counted from midnight UTC."""
    seconds = slot_length().total_seconds()
    elapsed = (moment - _EPOCH).total_seconds()
    return _EPOCH + timedelta(seconds=(elapsed // seconds) * seconds)


def ceil_to_slot(moment):
    floor = floor_to_slot(moment)
    return floor if floor == moment else floor + slot_length()


def is_on_boundary(moment):
    return floor_to_slot(moment) == moment


def horizon_end(now):
    """Nothing may be booked to end later than this."""
    return now + timedelta(days=settings.BOOKING_HORIZON_DAYS)


def longest_booking():
    """Rule: no booking is longer than the horizon plus one slot (a "now" booking's partial first
    slot on top): every write checks its window against the horizon. Reads use it to bound a
    search by time (a booking overlapping [a, b) starts after a - longest_booking())."""
    return timedelta(days=settings.BOOKING_HORIZON_DAYS) + slot_length()


def overlapping(start, end, prefix=""):
    """Rule: half-open windows [a, b) and [start, end) overlap when each starts before the other
    ends (so back-to-back bookings do not). As a filter on `start`/`end` fields (of `prefix`)."""
    return Q(**{f"{prefix}start__lt": end, f"{prefix}end__gt": start})


def require_aware(field, moment):
    """Rule: a time without a zone is refused, never read in some zone."""
    if moment.utcoffset() is None:
        raise BookingError(field, "Give the time zone (an offset or Z), e.g. 2030-01-01T10:00:00Z.")


def require_one_target(gpu_ids, gpu_count):
    """Rule: a booking names its GPUs or asks for a number of them, exactly one of the two."""
    if (gpu_ids is None) == (gpu_count is None):
        raise BookingError("gpus", "Give exactly one of gpus or gpu_count.")


def require_one_kind_of_work(work):
    """Rule: a booking carries at most one kind of work (a training job, or models to serve)."""
    given = sorted(field for field, spec in (work or {}).items() if spec is not None)
    if len(given) > 1:
        raise BookingError(given[-1], f"A booking carries one of {' or '.join(given)}, not both.")


def validate_slots(slots):
    # Rule: a booking is one or more whole slots; its length is checked against the horizon below.
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise BookingError("slots", "Book at least one whole slot.")


def validate_window(start, slots, now):
    """Rule: whole slots on UTC slot boundaries, not starting in the past, ending within the horizon.

    Returns the end of the window.
    """
    validate_slots(slots)
    require_aware("start", start)
    if not is_on_boundary(start):
        raise BookingError(
            "start",
            f"Start on a {_slot_words()} slot boundary (UTC), e.g. "
            f"{ceil_to_slot(start).astimezone(dt_timezone.utc):%Y-%m-%dT%H:%M}Z.",
        )
    if start < now:
        raise BookingError("start", "The start is in the past.")
    return _end_within_horizon(start, slots, now)


def _end_within_horizon(first_boundary, slots, now):
    """`slots` whole slots from `first_boundary`, if they end within the horizon. Counted in whole
    slots before any time is added, so no number of slots can overflow a datetime."""
    if slots > (horizon_end(now) - first_boundary) // slot_length():
        raise BookingError(
            "slots",
            f"The booking would end after the {settings.BOOKING_HORIZON_DAYS}-day booking horizon.",
        )
    return first_boundary + slots * slot_length()


def now_window(now, slots):
    """Rule: "start": "now" books from now to the end of the current slot, plus `slots - 1` more.
    When too little of the current slot is left to run anything (less than a tenth of a slot, five
    minutes at most), that rest comes on top of `slots` whole slots instead.

    Returns (start, end); the end is checked against the horizon like any other booking's."""
    validate_slots(slots)
    too_little_left = ceil_to_slot(now) - now < min(slot_length() / 10, timedelta(minutes=5))
    whole_slots = slots + 1 if too_little_left and not is_on_boundary(now) else slots
    return now.replace(microsecond=0), _end_within_horizon(floor_to_slot(now), whole_slots, now)


def resolve_preemptible(user, priority, preemptible):
    """Rule: `high` needs the book_high_priority permission and is never preemptible.

    Unless given, low bookings are preemptible and the others are not.
    """
    if priority == Reservation.Priority.HIGH:
        if not user.has_perm("reservations.book_high_priority"):
            raise PermissionDenied("You may not book high priority.")
        if preemptible:
            raise BookingError("preemptible", "A high-priority booking is never preemptible.")
        return False
    if preemptible is None:
        return priority == Reservation.Priority.LOW
    return bool(preemptible)


def bookable_teams(user):
    """Rule: a booking is charged to one of the booker's teams; staff may name any team."""
    return Team.objects.all() if user.is_staff else Team.objects.filter(memberships__user=user)


def resolve_team(user, slug):
    """The team a booking is charged to (bookable_teams): the one named by `slug`, or without a slug
    the user's only team; a member of several must say which."""
    if slug:
        team = Team.objects.filter(slug=slug).first()
        if team is None:
            raise BookingError("team", f"No team {slug!r}.")
        if not bookable_teams(user).filter(pk=team.pk).exists():
            raise BookingError("team", f"You are not a member of team {slug!r}.")
        return team
    teams = list(Team.objects.filter(memberships__user=user)[:2])
    if len(teams) == 1:
        return teams[0]
    if not teams:
        raise BookingError("team", "You belong to no team; ask an admin to add you to one.")
    raise BookingError("team", "You belong to several teams: name one.")


def can_manage(user, reservation):
    """Rule: the owner, an admin of the booking's team, or staff may cancel, transfer or move it."""
    if user.is_staff or reservation.user_id == user.pk:
        return True
    return Membership.objects.filter(
        team_id=reservation.team_id, user=user, role=Membership.Role.ADMIN
    ).exists()


def transfer_refusal(actor, reservation, target):
    """Rule: a booking passes only to a member of its team who may book its priority (staff may
    override both). Returns why not, or None."""
    if actor.is_staff:
        return None
    if not Membership.objects.filter(team_id=reservation.team_id, user=target).exists():
        return f"{target.get_username()} is not in team {reservation.team.slug}, which the booking is charged to."
    if reservation.priority == Reservation.Priority.HIGH and not target.has_perm("reservations.book_high_priority"):
        return f"{target.get_username()} may not book high priority."
    return None


class JobViewer:
    """Rule: a booking's training job (its log, checkpoints and paths) is for the booking's team, its
    owner and staff only; everyone sees the booking itself (the calendar is shared). `user` None:
    nobody to show it to."""

    def __init__(self, user):
        self.user = user

    @cached_property
    def teams(self):
        """The ids of the teams whose jobs the viewer sees; None for every team's (staff). Read only
        when needed: a booking's own owner needs no query."""
        if self.user is None:
            return frozenset()
        if self.user.is_staff:
            return None
        return frozenset(Membership.objects.filter(user=self.user).values_list("team_id", flat=True))

    def may_see(self, reservation):
        return self.may_see_booking_of(reservation.user_id, reservation.team_id)

    def may_see_booking_of(self, user_id, team_id):
        """The same, from the booking's owner and team ids (for rows read without a model)."""
        if self.user is not None and user_id == self.user.pk:
            return True
        return self.teams is None or team_id in self.teams

    def visible(self, queryset, prefix=""):
        """`queryset` narrowed to what the viewer may see (`prefix` leads to the reservation's fields)."""
        if self.teams is None:
            return queryset
        return queryset.filter(Q(**{f"{prefix}team_id__in": self.teams}) | Q(**{f"{prefix}user_id": self.user.pk}))


NOBODY = JobViewer(None)


# --- The slot lifecycle -----------------------------------------------------------------------

LIVE_STATUSES = (Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE)


def job_window_open(reservation, now):
    """Rule: a booking's job runs while the booking holds its GPUs: confirmed or active, and between
    its start and its end."""
    return reservation.status in LIVE_STATUSES and reservation.start <= now < reservation.end


def job_window_open_filter(now, prefix=""):
    """The same rule as a filter on reservation fields (of `prefix`)."""
    return Q(**{f"{prefix}status__in": LIVE_STATUSES, f"{prefix}start__lte": now, f"{prefix}end__gt": now})


def overrun_deadline(start, end, next_start):
    """Rule: a job still running past its booking may overrun by OVERRUN_GRACE_PCT of the booking's
    length (Slurm's OverTimeLimit), but never past `next_start`, the next booking on its GPUs."""
    deadline = end + (end - start) * settings.OVERRUN_GRACE_PCT / 100
    return min(deadline, next_start) if next_start else deadline


def released_end(reservation, now):
    """Rule: a started booking whose job has finished (or that is a no-show) gives back the whole
    slots it will not use; the slot in progress, and at least its first slot, are kept. Returns the
    new end, or None when there is nothing to give back."""
    started = reservation.status == Reservation.Status.ACTIVE or (
        reservation.status == Reservation.Status.CONFIRMED and reservation.start <= now  # before the clock's tick
    )
    new_end = max(ceil_to_slot(now), floor_to_slot(reservation.start) + slot_length())
    if not started or new_end >= reservation.end:
        return None
    return new_end


def has_started(reservation, now):
    """Rule: a booking whose start has come is under way (its job may be running), even before the
    clock marks it active: it can no longer be moved."""
    return reservation.start <= now


def no_show_cutoff(now):
    """Rule (with NO_SHOW_RELEASE): a booking that began before this and has no job is a no-show:
    its whole first slot passed with nothing to run."""
    return now - slot_length()


def may_move(reservation, now):
    """Rule: only a confirmed booking that has not started may be moved (a waiting request has no
    GPUs to keep; a started one may have a job running on them)."""
    return reservation.status == Reservation.Status.CONFIRMED and not has_started(reservation, now)


# --- Preemption -------------------------------------------------------------------------------
# A booking that overlaps others may take their GPUs (preempt them) under the rules below. The
# services apply them inside the booking's transaction; reservations.services.preemption does the
# taking (victims warned, cut, moved or rebooked) and reservation_reclaim the stop at the reclaim
# time.

_RANK = {Reservation.Priority.LOW: 0, Reservation.Priority.NORMAL: 1, Reservation.Priority.HIGH: 2}


def notice_length():
    return timedelta(minutes=settings.PREEMPTION_NOTICE_MINUTES)


def min_runtime():
    return timedelta(minutes=settings.PREEMPT_MIN_RUNTIME_MINUTES)


def may_try_preemption(start, priority, borrowed=False):
    """Rule: only a booking for a named start may preempt ("earliest" and "now" only look for free
    time); a borrowed one never does (reclaims()). A low one may only take borrowed time back
    (nothing else ranks below it)."""
    return start not in (EARLIEST, NOW) and not borrowed


def may_preempt(priority, *, victim_priority, victim_preemptible, borrowed=False, victim_borrowed=False):
    """Rule: only a preemptible booking of strictly lower priority may be preempted (so `high`,
    never preemptible, is never preempted, and equals never evict each other); a borrowed booking is
    taken back by any in-quota one (reclaims()), and a borrowed booking takes nothing."""
    if borrowed or victim_borrowed:
        return reclaims(borrowed=borrowed, victim_borrowed=victim_borrowed)
    return victim_preemptible and _RANK[victim_priority] < _RANK[priority]


def preemption_refusal(priority, victims, borrowed=False):
    """Why `victims` may not be preempted by a booking of `priority`, or None if they all may.
    Rule: every overlapping booking must be preemptible and of lower priority (or borrowed, for an
    in-quota booking), or none is taken."""
    for victim in victims:
        if borrowed:
            return "a borrowed booking takes only idle GPUs, never another booking's"
        if victim.borrowed:
            continue
        if not victim.preemptible:
            return f"reservation #{victim.pk} is not preemptible"
        if not may_preempt(priority, victim_priority=victim.priority, victim_preemptible=True):
            return f"reservation #{victim.pk} is {victim.priority} priority, not lower than {priority}"
    return None


def needs_notice(victims, now):
    """Rule: taking GPUs from a booking that has begun, or begins within the notice, needs notice."""
    return any(victim.start < now + notice_length() for victim in victims)


def earliest_preempting_start(now):
    """Rule: with notice needed, a preempting booking starts no sooner than now + the notice (on
    the next slot boundary at or after it)."""
    return ceil_to_slot(now + notice_length())


def has_begun(victim, start, now):
    """A victim that has begun is cut at the preemptor's start (its job stopped with a checkpoint,
    the rest rebooked); one that has not is moved whole, or cancelled if its owner opted out."""
    return victim.start <= now and victim.start < start


def reclaim_time(cut_at, job_spawned_at):
    """Rule: a job is not stopped within its first PREEMPT_MIN_RUNTIME_MINUTES, against start-stop
    thrashing (Kueue, KAI). The reclaim moves to after it; the preemptor's job waits for the GPUs."""
    if job_spawned_at is None:
        return cut_at
    return max(cut_at, job_spawned_at + min_runtime())


def stop_deadline(reservation, job_spawned_at, next_start):
    """When a live job must stop: a preempted booking's at the reclaim time (never within the job's
    minimum runtime); any other at its booking's end plus the overrun grace."""
    if reservation.preempted_by_id is not None:
        return reclaim_time(reservation.end, job_spawned_at)
    return overrun_deadline(reservation.start, reservation.end, next_start)


def rebook_window(windows, own_node_ids, node_of):
    """Rule: a cut victim's unused part goes to the earliest free window of its size, on its own
    node(s) when a window there starts as early. `node_of` maps GPU id -> node id."""
    if not windows:
        return None
    earliest = [w for w in windows if w.start == windows[0].start]
    return next((w for w in earliest if {node_of[g] for g in w.gpus} <= own_node_ids), earliest[0])


# --- Fair sharing: quotas, borrowing, reclaim, fair-share order -------------------------------
# A team may have a quota (models.TeamQuota): GPU-hours per week and GPUs at once for its in-quota
# bookings, a borrow limit for its borrowed ones, and a fair-share weight. The booking services lock
# the quota row and read the team's bookings around the window in one statement
# (locks.lock_team_quota), then ask quota_excess() below.

_WEEK = timedelta(days=7)
# Statuses whose booked time was held, and counts against a quota (and as "booked" in the usage
# report), as booked: ended, released early or cut by a preemption, its `end` says how far. A
# cancelled booking counts against a quota up to its cancellation; a waitlisted request never held any.
COUNTED_STATUSES = (
    Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE, Reservation.Status.COMPLETED, Reservation.Status.PREEMPTED,
)


def week_start(moment):
    """Rule: quota weeks start on Monday 00:00 UTC, or where QUOTA_WEEK_START says."""
    offset = timedelta(minutes=settings.QUOTA_WEEK_OFFSET_MINUTES)
    monday = datetime(1970, 1, 5, tzinfo=dt_timezone.utc) + offset  # a Monday
    return monday + ((moment - monday) // _WEEK) * _WEEK


def weeks_of(start, end):
    """The quota weeks [week_start, week_end) that the window [start, end) touches, in order."""
    weeks, first = [], week_start(start)
    while first < end:
        weeks.append((first, first + _WEEK))
        first += _WEEK
    return weeks


def week_label(first):
    """A week's name: the ISO week of its first day, e.g. 2026-W50."""
    year, week, _ = first.astimezone(dt_timezone.utc).isocalendar()
    return f"{year}-W{week:02d}"


def week_of_label(label):
    """The quota week named by an ISO week (2026-W50): the one starting in that ISO week. Raises
    ValueError for anything else."""
    monday = datetime.strptime(label + "-1", "%G-W%V-%u").replace(tzinfo=dt_timezone.utc)
    return week_start(monday + timedelta(minutes=settings.QUOTA_WEEK_OFFSET_MINUTES))


def gpu_hours(gpus, start, end, within=None):
    """Rule: booked time is counted as GPUs x hours, of the part inside `within` (a window) if given."""
    if within is not None:
        start, end = max(start, within[0]), min(end, within[1])
    return gpus * max((end - start).total_seconds(), 0) / 3600


def counted_end(status, end, cancelled_at):
    """Rule: where a booking's counted time ends: a booking counts as booked, to its end (released
    early or cut by a preemption, its end says so); a cancelled one up to its cancellation; a
    waitlisted request counts nothing until it is confirmed."""
    if status in COUNTED_STATUSES:
        return end
    if status == Reservation.Status.CANCELLED and cancelled_at is not None:
        return min(end, cancelled_at)
    return None


@dataclass(frozen=True)
class Booked:
    """One of a team's bookings as a quota counts it."""

    start: datetime
    end: datetime  # counted_end()
    gpus: int
    borrowed: bool
    pk: int | None = None


@dataclass(frozen=True)
class Quota:
    """A team's quota and what counts against it around the window being checked
    (locks.lock_team_quota): the GPU-hours of each quota week the window touches, and the bookings
    that overlap the window itself (for GPUs at once)."""

    team_slug: str
    gpu_hours_per_week: int | None
    max_gpus: int | None
    borrow_gpu_hours_per_week: int | None
    weight: int
    week_hours: dict  # {week start: (in-quota GPU-hours, borrowed GPU-hours)}
    booked: tuple = ()  # of Booked: those overlapping the window

    def hours(self, week, *, borrowed):
        return self.week_hours.get(week[0], (0, 0))[1 if borrowed else 0]

    def gpus_at(self, moment):
        return sum(b.gpus for b in self.booked if not b.borrowed and b.start <= moment < b.end)

    def peak(self, start, end):
        """The most GPUs the team's in-quota bookings hold at once within [start, end), and when."""
        moments = [start] + sorted(b.start for b in self.booked if start < b.start < end and not b.borrowed)
        return max(((self.gpus_at(m), m) for m in moments), key=lambda pair: pair[0])

    def frees_at(self, moment):
        """When the first in-quota booking holding GPUs at `moment` ends."""
        ends = [b.end for b in self.booked if not b.borrowed and b.start <= moment < b.end]
        return min(ends, default=None)


def tally(booked, weeks):
    """{week start: (in-quota GPU-hours, borrowed GPU-hours)} of `booked` in `weeks` (what
    selectors.quota_tally sums in SQL)."""
    return {
        week[0]: tuple(sum(gpu_hours(b.gpus, b.start, b.end, week) for b in booked if b.borrowed == kind) for kind in (False, True))
        for week in weeks
    }


@dataclass(frozen=True)
class QuotaExcess:
    """Which limit a booking would pass: `limit` names it (gpu_hours_per_week, max_gpus,
    borrow_gpu_hours_per_week); `used` is the team's use in that week (or at that moment) without
    the booking, `requested` what the booking adds, `allowed` the limit; `frees_at` when room frees."""

    team_slug: str
    limit: str
    used: float
    requested: float
    allowed: int
    week: datetime | None = None  # the week's start, for the GPU-hour limits
    at: datetime | None = None  # the moment, for max_gpus
    frees_at: datetime | None = None
    in_quota_slots: int = 0  # for gpu_hours_per_week: how many slots from the start would fit

    @property
    def borrowable(self):
        return self.limit != "borrow_gpu_hours_per_week"

    def describe(self):
        if self.limit == "max_gpus":
            what = f"at most {self.allowed} GPUs at once: it holds {self.used:g} at {utc_moment(self.at)}, this adds {self.requested:g}"
        else:
            kind = "borrowed GPU-hours" if self.limit == "borrow_gpu_hours_per_week" else "GPU-hours"
            what = (
                f"{self.allowed} {kind} in week {week_label(self.week)}: {self.used:.4g} booked, "
                f"this adds {self.requested:.4g}"
            )
        return f"Team {self.team_slug} is over its quota of {what}."


def quota_excess(quota, *, start, end, gpus, borrowed):
    """Rule: a booking of `gpus` GPUs for [start, end) fits its team's quota (None) or which limit it
    passes (QuotaExcess). In-quota bookings count against GPU-hours per week (each week the booking
    touches) and GPUs at once; borrowed ones against the borrow limit only. No quota: no limit."""
    if quota is None:
        return None
    if borrowed:
        return _hours_excess(quota, "borrow_gpu_hours_per_week", start, end, gpus, borrowed=True)
    excess = _hours_excess(quota, "gpu_hours_per_week", start, end, gpus, borrowed=False)
    if excess is None and quota.max_gpus is not None:
        held, at = quota.peak(start, end)
        if held + gpus > quota.max_gpus:
            excess = QuotaExcess(
                team_slug=quota.team_slug, limit="max_gpus", used=held, requested=gpus, allowed=quota.max_gpus,
                at=at, frees_at=quota.frees_at(at),
            )
    return excess


def _hours_excess(quota, limit, start, end, gpus, *, borrowed):
    allowed = getattr(quota, limit)
    if allowed is None:
        return None
    for week in weeks_of(start, end):
        used, requested = quota.hours(week, borrowed=borrowed), gpu_hours(gpus, start, end, week)
        if used + requested > allowed + 1e-6:
            return QuotaExcess(
                team_slug=quota.team_slug, limit=limit, used=used, requested=requested, allowed=allowed,
                week=week[0], frees_at=week[1],
                in_quota_slots=_slots_that_fit(quota, limit, start, end, gpus, borrowed=borrowed),
            )
    return None


def _slots_that_fit(quota, limit, start, end, gpus, *, borrowed):
    """How many slots from `start` a booking could keep within the GPU-hour limit (the split a
    refusal suggests: that many in quota, the rest borrowed)."""
    fit, step = 0, slot_length()
    first_end = min(floor_to_slot(start) + step, end)
    while True:
        part_end = min(first_end + fit * step, end)
        if any(
            quota.hours(week, borrowed=borrowed) + gpu_hours(gpus, start, part_end, week) > getattr(quota, limit) + 1e-6
            for week in weeks_of(start, part_end)
        ):
            return fit
        fit += 1
        if part_end >= end:
            return fit


def may_borrow(priority, field="borrow"):
    """Rule: borrowed time is never high priority (it is always preemptible)."""
    if priority == Reservation.Priority.HIGH:
        raise BookingError(field, "Borrowed time is never high priority: book it normal or low.")


def require_borrowed_terms(priority, preemptible):
    """Rule: borrowed time stays preemptible and below high priority, whatever it is edited to."""
    may_borrow(priority, field="priority")
    if not preemptible:
        raise BookingError("preemptible", "Borrowed time is always preemptible.")


def reclaims(*, borrowed, victim_borrowed):
    """Rule: an in-quota booking (not borrowed) may take a borrowed booking's GPUs back at any
    priority; a borrowed booking never takes anyone's GPUs (it only borrows idle ones)."""
    return victim_borrowed and not borrowed


def fair_share_key(recent_gpu_hours, weight, created, pk):
    """Rule: waiting requests are confirmed in fair-share order: the team with the least booked
    GPU-hours over the last FAIR_SHARE_DAYS per fair-share weight first, first come within a team."""
    return (recent_gpu_hours / max(weight, 1), created, pk)


def fair_share_window(now):
    """The past window whose booked GPU-hours order the waitlist."""
    return now - timedelta(days=settings.FAIR_SHARE_DAYS), now


# --- Recurring bookings (services.series; the RRULE subset itself: recurrence.py) ----------------


def require_occurrences_apart(starts, slots):
    """Rule: a series' occurrences never overlap one another (each is `slots` slots long)."""
    span = slots * slot_length()
    for earlier, later in zip(starts, starts[1:]):
        if later - earlier < span:
            raise BookingError(
                "slots", f"Occurrences {utc_moment(earlier)} and {utc_moment(later)} would overlap: book fewer slots."
            )


def occurrence_going(series, start):
    """Rule: an occurrence of a series is still to be booked (or kept) unless the series is cancelled,
    cut off before it ("this and the following"), or it was cancelled on its own."""
    if series.cancelled_at is not None:
        return False
    if series.ends_before is not None and start >= series.ends_before:
        return False
    return start.isoformat() not in series.cancelled_occurrences


def occurrence_in_horizon(start, slots, now):
    """Rule: an occurrence is booked once its booking would end within the booking horizon (when its
    series is made, or later by beat); until then it is "later"."""
    return start + slots * slot_length() <= horizon_end(now)


def beat_refusal(series, start, now):
    """Rule: why beat does not book a going occurrence now, or None. Never late (beat was down when it
    came due: a booking in the past is no booking), and only for an owner who may still book for
    the series' team (one who left it, or was deactivated, gets the occurrences skipped and is told)."""
    if start < now:
        return "Its start passed before it could be booked."
    if not series.user.is_active or not bookable_teams(series.user).filter(pk=series.team_id).exists():
        return f"{series.user.get_username()} can no longer book for team {series.team.slug}."
    return None

