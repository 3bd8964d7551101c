"""The booking rules, each in one place.

Services call these before they write; nothing else decides what a valid booking is.
"""

from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.core.exceptions import PermissionDenied

from .errors import BookingError
from .models import Membership, Reservation, Team

EARLIEST = "earliest"
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


def validate_slots(slots):
    # Rule: a booking is one or more whole slots; its length is checked against the horizon below.
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise BookingError("slots", "Book at least one whole slot.")


def validate_window(start, slots, now):
    """Rule: whole slots on UTC slot boundaries, not starting in the past, ending within the horizon.

    Returns the end of the window.
    """
    validate_slots(slots)
    if start.tzinfo is None:
        raise BookingError("start", "Give the time zone (an offset or Z).")
    if not is_on_boundary(start):
        raise BookingError(
            "start",
            f"Start on a {_slot_words()} slot boundary (UTC), e.g. "
            f"{ceil_to_slot(start).astimezone(dt_timezone.utc):%Y-%m-%dT%H:%M}Z.",
        )
    if start < now:
        raise BookingError("start", "The start is in the past.")
    end = start + slots * slot_length()
    if end > horizon_end(now):
        raise BookingError(
            "slots",
            f"The booking would end after the {settings.BOOKING_HORIZON_DAYS}-day booking horizon.",
        )
    return end


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


def resolve_team(user, slug):
    """Rule: a booking is charged to one of the booker's teams (staff may name any team).

    Without a slug, the user's only team; a member of several must say which.
    """
    if slug:
        team = Team.objects.filter(slug=slug).first()
        if team is None:
            raise BookingError("team", f"No team {slug!r}.")
        if not user.is_staff and not Membership.objects.filter(team=team, user=user).exists():
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


# --- Preemption -------------------------------------------------------------------------------
# A booking that overlaps others may take their GPUs (preempt them) under the rules below. The
# services apply them inside the booking's transaction; reservations.services.preemption_apply does
# the taking (victims warned, cut, moved or rebooked) and reservation_reclaim the stop at the
# reclaim time.

_RANK = {Reservation.Priority.LOW: 0, Reservation.Priority.NORMAL: 1, Reservation.Priority.HIGH: 2}


def notice_length():
    return timedelta(minutes=settings.PREEMPTION_NOTICE_MINUTES)


def min_runtime():
    return timedelta(minutes=settings.PREEMPT_MIN_RUNTIME_MINUTES)


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
