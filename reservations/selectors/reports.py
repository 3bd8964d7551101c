"""The staff usage report: per team, what it booked and did with it over a period."""

from collections import defaultdict
from datetime import timedelta

from django.core.exceptions import FieldDoesNotExist
from django.db.models import (
    Avg, Count, DurationField, ExpressionWrapper, F, IntegerField, Max, OuterRef, Q, Subquery, Sum, Value,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, Greatest, Least

from .. import jobs, policy
from ..errors import BookingError
from ..models import AuditEntry, Reservation, Team
from ..sql import EpochSeconds, Median

# What the report may cover at once: a year (a leap year's too), so one request reads a bounded
# part of the history.
USAGE_MAX_PERIOD = timedelta(days=366)
USAGE_DEFAULT_PERIOD = timedelta(days=30)

# Bookings whose time was held (and so "booked"): what a waitlisted request wished for and a
# cancelled booking's time were never held (Allocation.live says the same).
_HELD = (Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE, Reservation.Status.COMPLETED,
         Reservation.Status.PREEMPTED)


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
    """SQL: a duration in seconds, as a float."""
    return EpochSeconds(duration)


def _hours(seconds):
    return round((seconds or 0) / 3600, 2)


def _work_relations():
    """The reverse relations the apps behind each kind of work declare on bookings (reservations.jobs:
    this app never imports them): training jobs, servings. None on an installation without either:
    there, nothing counts as used."""
    return [name for name in jobs.work_kinds.related_names if _has_field(Reservation, name)]


def _has_field(model, name):
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


def usage_report(*, start, end, now):
    """Per team, what it booked and did with it over [start, end). All the rules of what counts are
    here, each computed by the database, in five queries whatever the number of bookings:

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
    rows = defaultdict(_team_row)
    _add_bookings(rows, start, end, now)
    entries = AuditEntry.objects.filter(created__gte=start, created__lt=end, reservation__isnull=False)
    _add_booking_events(rows, entries)
    _add_preemptions_caused(rows, entries)
    _add_waitlist_waits(rows, entries)
    teams = Team.objects.filter(pk__in=list(rows)).order_by("name")
    return [{"team": t.slug, "team_name": t.name, "colour": t.colour, **rows[t.pk]} for t in teams]


def _team_row():
    return {
        "booked_gpu_hours": 0.0, "used_gpu_hours": 0.0, "bookings": 0, "no_shows": 0,
        "cancellations": 0, "cancel_lead_hours_median": None, "cancel_lead_hours_avg": None,
        "early_releases": 0, "preemptions_suffered": 0, "preemptions_caused": 0,
        "waitlist_promotions": 0, "waitlist_wait_hours_median": None, "waitlist_wait_hours_max": None,
    }


def _add_bookings(rows, start, end, now):
    """Booked and used GPU-hours, bookings and no-shows, from the held bookings (one query)."""
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


def _add_booking_events(rows, entries):
    """Cancellations (and how long before the start), early releases and preemptions suffered, from
    the period's audit `entries` (one query)."""
    Action = AuditEntry.Action
    cancels = Q(action=Action.CANCEL, actor__isnull=False)
    lead = _epoch(_duration(F("created"), F("reservation__start"))) / Value(3600.0)
    counted = (
        entries.values("reservation__team_id")
        .annotate(
            cancellations=Count("id", filter=cancels),
            cancel_lead_median=Median(lead, filter=cancels),
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


def _add_preemptions_caused(rows, entries):
    """The period's preemptions counted for the preempting booking's team (one query)."""
    preemptor = Coalesce(
        Cast(KeyTextTransform("preempted_by", "after"), IntegerField()), F("reservation__preempted_by_id")
    )
    preemptor_team = Reservation.objects.filter(pk=OuterRef("preemptor")).values("team_id")[:1]
    caused = (
        entries.filter(action=AuditEntry.Action.PREEMPT)
        .annotate(preemptor=preemptor)
        .annotate(preemptor_team=Subquery(preemptor_team))
        .filter(preemptor_team__isnull=False)
        .values("preemptor_team")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in caused:
        rows[row["preemptor_team"]]["preemptions_caused"] = row["n"]


def _add_waitlist_waits(rows, entries):
    """For the requests promoted in the period, the hours each waited since it was waitlisted (one
    query)."""
    Action = AuditEntry.Action
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
        .annotate(n=Count("id"), median=Median(wait), longest=Max(wait))
        .order_by()
    )
    for row in waits:
        team = rows[row["reservation__team_id"]]
        team["waitlist_promotions"] = row["n"]
        team["waitlist_wait_hours_median"] = _round(row["median"])
        team["waitlist_wait_hours_max"] = _round(row["longest"])


def _round(hours):
    return None if hours is None else round(hours, 2)
