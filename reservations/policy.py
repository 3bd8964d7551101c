"""The booking rules, each in one place.

Services call these before they write; nothing else decides what a valid booking is.
"""

from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.utils.functional import cached_property

from .errors import BookingError
from .models import Membership, Reservation, Team

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


def may_try_preemption(start, priority):
    """Rule: only a booking for a named start may preempt ("earliest" and "now" only look for free
    time), and a low one never does (nothing ranks below it)."""
    return start not in (EARLIEST, NOW) and priority != Reservation.Priority.LOW


def may_preempt(priority, *, victim_priority, victim_preemptible):
    """Rule: only a preemptible booking of strictly lower priority may be preempted (so `high`,
    never preemptible, is never preempted, and equals never evict each other)."""
    return victim_preemptible and _RANK[victim_priority] < _RANK[priority]


def preemption_refusal(priority, victims):
    """Why `victims` may not be preempted by a booking of `priority`, or None if they all may.
    Rule: every overlapping booking must be preemptible and of lower priority, or none is taken."""
    for victim in victims:
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
