"""The staff usage report: per team, what it booked and did with it over a period."""

from collections import defaultdict
from datetime import timedelta

from django.db.models import Avg, Count, F, IntegerField, Max, OuterRef, Q, Subquery, Sum, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, Greatest, Least

from .. import policy
from ..errors import BookingError
from ..models import AuditEntry, Reservation, Team
from ..sql import EpochSeconds, Median
from .used import duration, nothing_ran, seconds, used_gpu_seconds, with_runs

# What the report may cover at once: a year (a leap year's too), so one request reads a bounded
# part of the history.
USAGE_MAX_PERIOD = timedelta(days=366)
USAGE_DEFAULT_PERIOD = timedelta(days=30)


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


def _hours(gpu_seconds):
    return round((gpu_seconds or 0) / 3600, 2)


def usage_report(*, start, end, now):
    """Per team, what it booked and did with it over [start, end). All the rules of what counts are
    here, each computed by the database, in five queries whatever the number of bookings:

    - booked GPU-hours: the part of each held booking (confirmed, active, completed, preempted;
      not waitlisted or cancelled) inside the period, times its GPU count;
    - borrowed GPU-hours: the part of those booked as borrowed time, over the team's quota
      (Reservation.borrowed); the quota shown is the team's GPU-hours per week as it is now;
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
    entries = AuditEntry.objects.filter(created__gte=start, created__lt=end, reservation_id__isnull=False)
    _add_booking_events(rows, entries)
    _add_preemptions_caused(rows, entries)
    _add_waitlist_waits(rows, entries)
    teams = Team.objects.filter(pk__in=list(rows)).select_related("quota").order_by("name")
    return [
        {"team": t.slug, "team_name": t.name, "colour": t.colour, "quota_gpu_hours_per_week": _weekly_hours(t), **rows[t.pk]}
        for t in teams
    ]


def _weekly_hours(team):
    """The team's quota of GPU-hours per week as it is now; None: unlimited."""
    quota = getattr(team, "quota", None)
    return quota.gpu_hours_per_week if quota is not None else None


def _team_row():
    return {
        "booked_gpu_hours": 0.0, "borrowed_gpu_hours": 0.0, "used_gpu_hours": 0.0, "bookings": 0, "no_shows": 0,
        "cancellations": 0, "cancel_lead_hours_median": None, "cancel_lead_hours_avg": None,
        "early_releases": 0, "preemptions_suffered": 0, "preemptions_caused": 0,
        "waitlist_promotions": 0, "waitlist_wait_hours_median": None, "waitlist_wait_hours_max": None,
    }


def _add_bookings(rows, start, end, now):
    """Booked, borrowed and used GPU-hours, bookings and no-shows, from the held bookings (one query)."""
    held = with_runs(Reservation.objects.filter(policy.overlapping(start, end), status__in=policy.COUNTED_STATUSES), start)
    in_period = seconds(Greatest(F("start"), Value(start)), Least(F("end"), Value(end))) * F("gpu_count")
    aggregates = {
        "booked": Sum(in_period),
        "borrowed": Sum(in_period, filter=Q(borrowed=True)),
        "bookings": Count("id"),
    }
    used = used_gpu_seconds(start, end, now)
    aggregates.update({f"used_{index}": each for index, each in enumerate(used)})
    aggregates["no_shows"] = Count(
        "id", filter=nothing_ran() & Q(start__gte=start, start__lt=end, start__lte=policy.no_show_cutoff(now))
    )
    for row in held.values("team_id").annotate(**aggregates).order_by():
        team = rows[row["team_id"]]
        team["booked_gpu_hours"] = _hours(row["booked"])
        team["borrowed_gpu_hours"] = _hours(row["borrowed"])
        team["used_gpu_hours"] = _hours(sum(row[f"used_{index}"] or 0 for index in range(len(used))))
        team["bookings"] = row["bookings"]
        team["no_shows"] = row["no_shows"]


def _of_booking(field, key="reservation_id"):
    """An entry's booking's `field`, looked up by its key (a subquery per entry): a join would let
    PostgreSQL hash every booking ever made to match a month of entries."""
    return Subquery(Reservation.objects.filter(pk=OuterRef(key)).order_by().values(field)[:1])


def _add_booking_events(rows, entries):
    """Cancellations (and how long before the start), early releases and preemptions suffered, from
    the period's audit `entries` (one query)."""
    Action = AuditEntry.Action
    cancels = Q(action=Action.CANCEL, actor__isnull=False)
    lead = EpochSeconds(duration(F("created"), F("booking_start"))) / Value(3600.0)
    counted = (
        entries.filter(action__in=[Action.CANCEL, Action.RELEASE, Action.PREEMPT])
        .annotate(team_id=_of_booking("team_id"), booking_start=_of_booking("start"))
        .values("team_id")
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
        team = rows[row["team_id"]]
        team["cancellations"] = row["cancellations"]
        team["cancel_lead_hours_median"] = _round(row["cancel_lead_median"])
        team["cancel_lead_hours_avg"] = _round(row["cancel_lead_avg"])
        team["early_releases"] = row["releases"]
        team["preemptions_suffered"] = row["preempted"]


def _add_preemptions_caused(rows, entries):
    """The period's preemptions counted for the preempting booking's team (one query)."""
    preemptor = Coalesce(
        Cast(KeyTextTransform("preempted_by", "after"), IntegerField()), _of_booking("preempted_by_id")
    )
    caused = (
        entries.filter(action=AuditEntry.Action.PREEMPT)
        .annotate(preemptor=preemptor)
        .annotate(preemptor_team=_of_booking("team_id", key="preemptor"))
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
    wait = EpochSeconds(duration(F("waitlisted_at"), F("promoted_at"))) / Value(3600.0)
    waits = (
        entries.filter(action=Action.PROMOTE)
        .annotate(promoted_at=F("created"), waitlisted_at=Subquery(waitlisted_at))
        .filter(waitlisted_at__isnull=False)
        .annotate(team_id=_of_booking("team_id"))
        .values("team_id")
        .annotate(n=Count("id"), median=Median(wait), longest=Max(wait))
        .order_by()
    )
    for row in waits:
        team = rows[row["team_id"]]
        team["waitlist_promotions"] = row["n"]
        team["waitlist_wait_hours_median"] = _round(row["median"])
        team["waitlist_wait_hours_max"] = _round(row["longest"])


def _round(hours):
    return None if hours is None else round(hours, 2)
