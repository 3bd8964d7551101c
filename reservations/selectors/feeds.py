"""What an iCal feed lists (web.views.ical): a person's or a team's bookings in the feed's window,
and their recurring bookings as series, each read as a calendar app will expand it.

A series is in a feed when any occurrence its rule gives overlaps the window. Its state comes from
the series row (cancelled one by one, skipped, cut off from an occurrence on, cancelled whole) and,
within the window only, from its bookings: where each was booked or moved to, and which were
cancelled since. Occurrences outside the window are read from the rule alone. The queries are a fixed
few, however many series or bookings: the series, the bookings (their GPUs prefetched), and the GPUs
the series name.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db.models import CharField, F, Func, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Cast, Concat
from zoneinfo import ZoneInfo

from .. import policy, recurrence
from ..errors import BookingError
from ..models import GPU, AuditEntry, Reservation, Series
from .pages import calendar_feed_reservations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedSeries:
    """One series as a feed states it.

    `series` carries `revision`: its audit entries and those of all its bookings, a count that only
    grows, so it serves as the iCal SEQUENCE of every event of the series. `rule` is the rule as a
    calendar states it under a DTSTART in `zone` (recurrence.calendar_rule: cut short with UNTIL where
    the rest was cancelled). `instances` are the rule's instances still going, in order; none when
    nothing of the series is left (`first` is then where it began). `excluded` are those of them not
    held: cancelled one by one, skipped, whose booking (within the window) was cancelled, or in the
    window, past, and never booked. `booked`
    pairs each other instance with its live booking, within the window. `gpus` are the GPUs the series
    names, with their nodes (none when it asks for a number of them)."""

    series: Series
    zone: ZoneInfo
    rule: recurrence.Rule
    first: recurrence.Instance
    instances: tuple
    excluded: tuple
    booked: tuple
    gpus: tuple

    @property
    def cancelled(self):
        return not self.instances

    @property
    def span(self):
        return recurrence.span(self.series.slots)


@dataclass(frozen=True)
class CalendarFeedRows:
    """A feed's rows: its series (FeedSeries), and the bookings shown as events of their own (those
    not part of a series in the feed, and the rebooked rest of preempted occurrences)."""

    series: list
    reservations: list


def _count(queryset):
    """A subquery counting `queryset`'s rows: 0, never NULL, when there are none."""
    counted = queryset.order_by().annotate(n=Func(F("pk"), function="COUNT")).values("n")
    return Subquery(counted, output_field=IntegerField())


def calendar_feed_series(*, start, end, user=None, team=None):
    """The series `user` owns, or those of `team`, that may have an occurrence overlapping [start,
    end) (calendar_feed() reads each rule for the exact answer), with their `revision`: a queryset.

    Bounded on both sides: begun before the window ends, and booked (or skipped) through a time after
    the window's start less the longest booking, since an occurrence overlapping the window starts
    after that and beat books each one before the horizon (the window's end) reaches its end."""
    if (user is None) == (team is None):
        raise ValueError("Give exactly one of user or team.")
    reach = start - policy.longest_booking()
    qs = Series.objects.filter(first_start__lt=end).filter(
        Q(booked_through__gt=reach) | Q(booked_through=None, first_start__gt=reach)
    )
    qs = qs.filter(user=user) if user is not None else qs.filter(team=team)
    target = Concat(Value("series:"), Cast(OuterRef("pk"), output_field=CharField()), output_field=CharField())
    return (
        qs.select_related("user", "team")
        .annotate(
            revision=_count(AuditEntry.objects.filter(target=target))
            + _count(AuditEntry.objects.filter(reservation__series=OuterRef("pk")))
        )
        .order_by("first_start", "id")
    )


def calendar_feed(*, start, end, now, user=None, team=None):
    """The rows of one iCal feed (CalendarFeedRows): the series of `user` (or `team`) with an
    occurrence overlapping [start, end), each with its bookings in the window whoever holds them now,
    and the other bookings of `user` (or `team`) overlapping it, cancelled ones included."""
    candidates = list(calendar_feed_series(start=start, end=end, user=user, team=team))
    reservations = list(
        calendar_feed_reservations(start=start, end=end, user=user, team=team, series=[s.pk for s in candidates])
    )
    named = {pk for s in candidates for pk in s.gpu_ids or ()}
    gpus = {g.pk: g for g in GPU.objects.filter(pk__in=named).select_related("node")} if named else {}
    of_series = defaultdict(list)
    for reservation in reservations:
        if reservation.series_id is not None and reservation.rebook_of_id is None:
            of_series[reservation.series_id].append(reservation)
    shown, placed = [], set()
    for series in candidates:
        try:
            entry = _feed_series(series, of_series[series.pk], start=start, end=end, now=now, gpus=gpus)
        except BookingError:
            # A rule or zone no longer valid here (a lower SERIES_MAX_OCCURRENCES, a zone gone from
            # tzdata) must not take the whole feed down: its bookings are shown one by one.
            log.exception("series %s: its rule cannot be read for the calendar feed", series.pk)
            continue
        if entry is None:
            continue
        shown.append(entry)
        # Its cancelled bookings are excluded instances, or cut off with the rest of the rule; its
        # live ones are instances. A live booking its rule does not give is never lost: it is shown
        # as an event of its own, with the rebooked rest of preempted occurrences.
        placed.update(r.pk for r in of_series[series.pk] if r.status == Reservation.Status.CANCELLED)
        placed.update(r.pk for _, r in entry.booked)
    alone = [r for r in reservations if r.pk not in placed]
    return CalendarFeedRows(series=shown, reservations=alone)


def _feed_series(series, bookings, *, start, end, now, gpus):
    """The FeedSeries of `series` given its `bookings` in the window, or None when no occurrence of
    its rule overlaps [start, end)."""
    rule, zone = recurrence.stored_rule(series)
    every = recurrence.instances(rule, series.first_start, zone, capped=False)
    span = recurrence.span(series.slots)
    if not any(i.start < end and i.start + span > start for i in every):
        return None
    # What is left of the rule: occurrences cut off from `ends_before` on, and, once the whole series
    # is cancelled, those it had not booked by then (it books none after).
    kept = [
        i for i in every
        if (series.ends_before is None or i.start < series.ends_before)
        and (series.cancelled_at is None or (series.booked_through is not None and i.start <= series.booked_through))
    ]
    cut = kept[-1].local if kept and len(kept) < len(every) else None
    gone = {datetime.fromisoformat(at) for at in series.cancelled_occurrences}
    gone.update(datetime.fromisoformat(skip["at"]) for skip in series.skipped)
    # An occurrence in the window with no booking whose time has come was never booked (beat books
    # none late): it did not happen.
    missed = policy.floor_to_slot(now)
    by_occurrence = {r.occurrence: r for r in bookings}
    excluded, booked = [], []
    for instance in kept:
        booking = by_occurrence.get(instance.start)
        if booking is not None and booking.status != Reservation.Status.CANCELLED:
            booked.append((instance, booking))
            continue
        cancelled = booking is not None or instance.start in gone
        never_booked = booking is None and start < instance.start + span and instance.start < missed
        if cancelled or never_booked:
            excluded.append(instance)
    return FeedSeries(
        series=series, zone=zone, rule=recurrence.calendar_rule(rule, zone, last=cut), first=every[0],
        instances=tuple(kept), excluded=tuple(excluded), booked=tuple(booked),
        gpus=tuple(gpus[pk] for pk in series.gpu_ids or () if pk in gpus),
    )
