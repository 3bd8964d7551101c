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
    return timedelta(hours=settings.SLOT_HOURS)


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
            f"Start on a {settings.SLOT_HOURS}-hour slot boundary (UTC), e.g. "
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
