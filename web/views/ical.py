"""The iCal feeds (RFC 5545): a person's bookings, or a team's, for any calendar app to subscribe to.

No sign-in: calendar apps cannot log in, so the long random token in the URL is the credential
(web.selectors.calendar_feed_by_token). An unknown token and a closed feed look the same: a 404.

A booking is an event in UTC. A recurring booking (a series, issue 20) is one recurring event, in
the form Google Calendar, Outlook and Thunderbird all read:

- a master VEVENT, UID series-<id>@<host>, DTSTART;TZID=<the series' zone> at the first occurrence's
  wall-clock time (a UTC series: DTSTART in UTC), DTEND one booking length later, and the series'
  RRULE. An UNTIL date becomes the UTC end of that local day (RFC 5545 asks for a UTC UNTIL when
  DTSTART has a zone); a series cancelled from an occurrence on, or cancelled whole, ends with UNTIL
  at its last occurrence still going (recurrence.calendar_rule);
- EXDATE for each occurrence not held: cancelled one by one, skipped (it could not be booked),
  whose booking in the window was cancelled, or in the window, past, and never booked (beat books
  none late);
- an override VEVENT (same UID, RECURRENCE-ID;TZID= the wall-clock start the rule gives that
  occurrence; DTSTART and DTEND the booking's) for each booked occurrence in the window that an app
  would otherwise show differently from its booking: moved; booked in the slot before its wall-clock
  start (slots are counted from midnight UTC, so with two-hour slots a Berlin summer occurrence is
  booked an hour earlier: recurrence.py); spanning a change of UTC offset (apps disagree on where
  such an instance ends); or with details of its own (which GPUs a "number of GPUs" series got,
  other GPUs, title, owner or priority, waitlisted or preempted: the status is said only then);
- a VTIMEZONE for each zone used, over the series' time (Outlook needs one; Google and Thunderbird
  know the IANA names).

What the apps then show (tests/web/test_ical_series.py expands the feed as they do, with
recurring_ical_events): within the window, each live occurrence where and as it is booked, a
waitlisted one TENTATIVE, cancelled and skipped ones nowhere. Ahead of the window (beyond the booking
horizon, not booked yet), each occurrence at the rule's wall-clock time: one that the slot grid will
book an hour earlier moves there once beat has booked it. Before the window (ended more than 30 days
ago), each occurrence where the rule put it: moves and cancellations of those old bookings are no
longer sent, as old single bookings are no longer sent. An override counts where it is booked, its
RECURRENCE-ID wherever that lies (recurring_ical_events, like the apps, shows a booking moved into a
range from outside it), so overrides beyond the window are never needed. A series with nothing left
is one cancelled event, as a cancelled booking is. Every event of a series has the series' SEQUENCE:
the audit entries of the series and its bookings, a count that grows with any change to them. The
rebooked rest of a preempted occurrence is an event of its own, like a booking that is no
occurrence, and so is a live booking the rule no longer gives.
"""

from dataclasses import dataclass
from datetime import timedelta, timezone as dt_timezone

from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe
from icalendar import Calendar, Event, vDuration

from reservations import policy, recurrence, selectors

from ..selectors import calendar_feed_by_token

# Bookings that ended more than this long ago drop out of the feed: the window, not the history,
# sets the cost of a request.
FEED_PAST = timedelta(days=30)
# How often calendar apps that honour it should poll (Google Calendar sets its own pace).
REFRESH = timedelta(minutes=15)
# How far ahead a VTIMEZONE goes at most: a rule may reach centuries ahead, a calendar need not.
ZONE_AHEAD_YEARS = 30

ICAL_STATUS = {
    # A waiting request may or may not get its window; a cancelled (or expired) one must be sent as
    # CANCELLED, or apps that already have it keep showing it.
    "waitlisted": "TENTATIVE",
    "cancelled": "CANCELLED",
}
# An occurrence in one of these states is simply held as booked: its event says nothing more.
HELD = {"confirmed", "active", "completed"}


@require_safe
def feed(request, token):
    calendar_feed = calendar_feed_by_token(token)
    if calendar_feed is None:
        raise Http404("No such calendar feed.")
    now = timezone.now()
    team = calendar_feed.team
    rows = selectors.calendar_feed(
        user=None if team else calendar_feed.user,
        team=team,
        start=now - FEED_PAST,
        end=policy.horizon_end(now),
        now=now,
    )
    calendar = Calendar()
    calendar.add("prodid", "-//GPU slot scheduler//Calendar feed//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    name = f"GPU bookings: {team.name}" if team else f"GPU bookings: {calendar_feed.user.get_username()}"
    calendar.add("x-wr-calname", name)
    calendar.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", vDuration(REFRESH))
    # The host names the installation: UIDs stay stable for a subscription (its URL does not change)
    # and do not collide with another installation's bookings in the same calendar app.
    domain = request.get_host()
    for reservation in rows.reservations:
        calendar.add_component(_event(reservation, domain=domain, team_feed=team is not None))
    for series in rows.series:
        for event in _series_events(series, domain=domain, team_feed=team is not None):
            calendar.add_component(event)
    _add_timezones(calendar, rows.series)
    response = HttpResponse(calendar.to_ical(), content_type="text/calendar; charset=utf-8")
    # Personal data behind a secret URL: no shared cache may keep it.
    response["Cache-Control"] = "private"
    return response


@dataclass(frozen=True)
class Shown:
    """What a calendar app shows of an event besides its time."""

    summary: str
    description: str
    location: str
    status: str

    def add_to(self, event):
        event.add("summary", self.summary)
        event.add("description", self.description)
        if self.location:
            event.add("location", self.location)
        event.add("status", self.status)


def _summary(title, owner, team_feed):
    # In a team's calendar whose booking it is matters at a glance.
    title = title or "GPU booking"
    return f"{title} ({owner})" if team_feed else title


def _booking_gpus(reservation):
    """(its GPUs, its nodes), as the description and LOCATION name them."""
    allocations = reservation.allocation_list
    gpus = ", ".join(a.gpu.name for a in allocations) or f"any {reservation.gpu_count}"
    return gpus, ", ".join(sorted({a.gpu.node.hostname for a in allocations}))


def _about(*, gpus, team, owner, priority):
    """The description's first lines: what is booked, for whom."""
    return [f"GPUs: {gpus}", f"Team: {team.name}", f"Owner: {owner}", f"Priority: {priority}"]


def _event(reservation, *, domain, team_feed):
    gpus, nodes = _booking_gpus(reservation)
    owner = reservation.user.get_username()
    event = Event()
    event.add("uid", f"reservation-{reservation.pk}@{domain}")
    event.add("dtstamp", reservation.updated)
    event.add("created", reservation.created)
    event.add("last-modified", reservation.updated)
    event.add("dtstart", reservation.start.astimezone(dt_timezone.utc))
    event.add("dtend", reservation.end.astimezone(dt_timezone.utc))
    lines = _about(gpus=gpus, team=reservation.team, owner=owner, priority=reservation.get_priority_display())
    lines.append(f"Status: {reservation.get_status_display()}")
    Shown(
        summary=_summary(reservation.title, owner, team_feed), description="\n".join(lines), location=nodes,
        status=ICAL_STATUS.get(reservation.status, "CONFIRMED"),
    ).add_to(event)
    # Creating a booking writes its first audit entry, and a new event's SEQUENCE is 0.
    event.add("sequence", max(reservation.revision - 1, 0))
    return event


# --- Series -------------------------------------------------------------------------------------


def _series_shown(entry, *, team_feed):
    """What the master event shows: what each occurrence is booked with."""
    series = entry.series
    owner = series.user.get_username()
    gpus = ", ".join(g.name for g in entry.gpus) or f"any {series.gpu_count}"
    lines = _about(gpus=gpus, team=series.team, owner=owner, priority=series.get_priority_display())
    lines.append(f"Repeats: {_repeats(entry)}")
    return Shown(
        summary=_summary(series.title, owner, team_feed), description="\n".join(lines),
        location=", ".join(sorted({g.node.hostname for g in entry.gpus})), status="CONFIRMED",
    )


def _occurrence_shown(entry, reservation, *, team_feed):
    """What one booked occurrence shows: its booking's own details, its status where it is more than
    held (waitlisted, preempted)."""
    gpus, nodes = _booking_gpus(reservation)
    owner = reservation.user.get_username()
    lines = _about(gpus=gpus, team=reservation.team, owner=owner, priority=reservation.get_priority_display())
    lines.append(f"Repeats: {_repeats(entry)}")
    if reservation.status not in HELD:
        lines.append(f"Status: {reservation.get_status_display()}")
    return Shown(
        summary=_summary(reservation.title, owner, team_feed), description="\n".join(lines), location=nodes,
        status=ICAL_STATUS.get(reservation.status, "CONFIRMED"),
    )


def _repeats(entry):
    series = entry.series
    return recurrence.describe(entry.rule, series.first_start, entry.zone, series.time_zone)


def _rule_end(entry, instance):
    """Where the rule's instance ends: one booking length after its start, in time elapsed."""
    return (instance.local.astimezone(dt_timezone.utc) + entry.span).astimezone(entry.zone)


def _series_events(entry, *, domain, team_feed):
    """The master VEVENT of a series and its overrides (module docstring)."""
    series = entry.series
    uid = f"series-{series.pk}@{domain}"
    sequence = max(series.revision - 1, 0)
    shown = _series_shown(entry, team_feed=team_feed)
    master = Event()
    master.add("uid", uid)
    master.add("dtstamp", series.updated)
    master.add("created", series.created)
    master.add("last-modified", series.updated)
    if entry.cancelled:
        master.add("dtstart", entry.first.local)
        master.add("dtend", _rule_end(entry, entry.first))
        Shown(shown.summary, shown.description, shown.location, "CANCELLED").add_to(master)
        master.add("sequence", sequence)
        return [master]
    first = entry.instances[0]
    master.add("dtstart", first.local)
    master.add("dtend", _rule_end(entry, first))
    master.add("rrule", _rrule(entry.rule))
    if entry.excluded:
        master.add("exdate", [instance.local for instance in entry.excluded])
    shown.add_to(master)
    master.add("sequence", sequence)
    events = [master]
    for instance, reservation in entry.booked:
        own = _occurrence_shown(entry, reservation, team_feed=team_feed)
        if not _as_the_rule_shows(entry, instance, reservation) or own != shown:
            events.append(_override(entry, instance, reservation, own, uid=uid, sequence=sequence))
    return events


def _as_the_rule_shows(entry, instance, reservation):
    """Whether every app shows the rule's instance exactly at the booking's time: it starts and ends
    there, and spans no change of UTC offset (some apps then add the length in wall-clock time)."""
    end = _rule_end(entry, instance)
    spans_a_change = instance.local.utcoffset() != end.utcoffset()
    return reservation.start == instance.local and reservation.end == end and not spans_a_change


def _override(entry, instance, reservation, shown, *, uid, sequence):
    event = Event()
    event.add("uid", uid)
    event.add("recurrence-id", instance.local)
    event.add("dtstamp", reservation.updated)
    event.add("created", reservation.created)
    event.add("last-modified", reservation.updated)
    event.add("dtstart", reservation.start.astimezone(entry.zone))
    event.add("dtend", reservation.end.astimezone(entry.zone))
    shown.add_to(event)
    event.add("sequence", sequence)
    return event


def _rrule(rule):
    value = {"freq": rule.freq}
    if rule.interval != 1:
        value["interval"] = rule.interval
        if rule.freq == "WEEKLY":
            value["wkst"] = "MO"  # which weeks count: the default, said, as apps differ on it
    if rule.byday:
        value["byday"] = list(rule.byday)
    if rule.count is not None:
        value["count"] = rule.count
    if rule.until is not None:
        value["until"] = rule.until
    return value


def _add_timezones(calendar, series):
    """A VTIMEZONE for each zone the series' events name, from a day before the first of them begins
    to a day after the last ends (at most ZONE_AHEAD_YEARS ahead)."""
    if not series:
        return
    times = [entry.first.local for entry in series] + [entry.instances[-1].local for entry in series if entry.instances]
    times += [moment for entry in series for _, booking in entry.booked for moment in (booking.start, booking.end)]
    first = min(times).date() - timedelta(days=1)
    last = max(times).date() + timedelta(days=2)
    cap = timezone.now().date() + timedelta(days=365 * ZONE_AHEAD_YEARS)
    calendar.add_missing_timezones(first_date=first, last_date=min(last, cap))
