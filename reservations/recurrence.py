"""Recurring bookings' rules: the RFC 5545 RRULE subset a series may use, read and expanded with
python-dateutil's `rrule`, in the series' IANA time zone.

The subset: `FREQ=DAILY|WEEKLY`, `INTERVAL`, `BYDAY` (weekdays, no ordinals), and exactly one of
`COUNT` or `UNTIL`; at most SERIES_MAX_OCCURRENCES occurrences. Anything else is refused with a
BookingError naming the field, never ignored.

Time zone and daylight saving (README, "Recurring bookings"): the rule is expanded in local wall-clock
time, so "every day at 01:00 Berlin time" stays at 01:00 Berlin time all year. Each local start is
then turned into UTC and booked in the slot that contains it (slots are counted from midnight UTC):
with two-hour slots, a series whose first start lies on the grid in winter is booked an hour earlier
in local time in summer (its wall-clock start still falls inside the booked slot). A wall-clock time
that a change to summer time skips (02:30 on the night clocks go 02:00 -> 03:00) is read with the offset
before the change (it becomes 03:30 local); one that the change back to winter time repeats is the
first of the two (fold=0). No occurrence is ever dropped or doubled by a change.
"""

import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from dateutil import rrule as du
from django.conf import settings

from . import policy
from .errors import BookingError

FIELD = "recurrence"
FREQUENCIES = {"DAILY": du.DAILY, "WEEKLY": du.WEEKLY}
WEEKDAYS = {"MO": du.MO, "TU": du.TU, "WE": du.WE, "TH": du.TH, "FR": du.FR, "SA": du.SA, "SU": du.SU}
DAY_NAMES = {
    "MO": "Monday", "TU": "Tuesday", "WE": "Wednesday", "TH": "Thursday", "FR": "Friday", "SA": "Saturday",
    "SU": "Sunday",
}
ALLOWED = ("FREQ", "INTERVAL", "BYDAY", "COUNT", "UNTIL")
_UNTIL = re.compile(r"^([0-9]{8})(?:T([0-9]{6})(Z?))?$")
_DIGITS = re.compile(r"^[0-9]{1,7}$")
# The years an UNTIL may name (as the API's times: apibase.fields), so that no zone's offset takes
# it out of what a datetime holds.
UNTIL_YEARS = (1970, 9000)


@dataclass(frozen=True)
class Rule:
    """A parsed rule: what dateutil needs, and its text in the subset's one spelling."""

    freq: str
    interval: int = 1
    byday: tuple = ()
    count: int | None = None
    until: datetime | date | None = None  # a UTC datetime (…Z), or a date (the whole day, local)

    @property
    def text(self):
        parts = [f"FREQ={self.freq}"]
        if self.interval != 1:
            parts.append(f"INTERVAL={self.interval}")
        if self.byday:
            parts.append("BYDAY=" + ",".join(self.byday))
        if self.count is not None:
            parts.append(f"COUNT={self.count}")
        if isinstance(self.until, datetime):
            parts.append(f"UNTIL={self.until:%Y%m%dT%H%M%SZ}")
        elif self.until is not None:
            parts.append(f"UNTIL={self.until:%Y%m%d}")
        return ";".join(parts)


def _refuse(message):
    raise BookingError(FIELD, message)


def parse_rule(text, *, capped=True):
    """The Rule in `text` ("FREQ=WEEKLY;BYDAY=MO,TH;COUNT=8", an optional "RRULE:" before it), or a
    BookingError on the field `recurrence` saying what the subset does not allow. `capped`: COUNT is
    held to SERIES_MAX_OCCURRENCES (a new series); a stored series' rule is read as it was accepted,
    whatever the setting says since (stored_rule)."""
    if not isinstance(text, str) or not text.strip():
        _refuse('Give a rule, e.g. "FREQ=DAILY;COUNT=30".')
    body = text.strip()
    if body.upper().startswith("RRULE:"):
        body = body[6:]
    values = {}
    for part in body.split(";"):
        key, sep, value = part.partition("=")
        key = key.strip().upper()
        if not sep or not value.strip():
            _refuse(f"Write the rule as NAME=value pairs separated by ';' (got {part!r}).")
        if key not in ALLOWED:
            _refuse(f"{key} is not allowed: a series rule uses only {', '.join(ALLOWED)}.")
        if key in values:
            _refuse(f"{key} is given twice.")
        values[key] = value.strip().upper()
    freq = values.get("FREQ")
    if freq not in FREQUENCIES:
        _refuse(f"FREQ must be DAILY or WEEKLY (got {freq or 'nothing'}).")
    interval = _positive(values.get("INTERVAL", "1"), "INTERVAL", most=366)
    byday = ()
    if "BYDAY" in values:
        days = values["BYDAY"].split(",")
        unknown = [d for d in days if d not in WEEKDAYS]
        if unknown:
            _refuse(f"BYDAY takes weekdays (MO, TU, WE, TH, FR, SA, SU), without numbers; got {', '.join(unknown)}.")
        if len(set(days)) != len(days):
            _refuse("BYDAY names a day twice.")
        byday = tuple(sorted(days, key=list(WEEKDAYS).index))
    if ("COUNT" in values) == ("UNTIL" in values):
        _refuse(
            "Give exactly one of COUNT or UNTIL: a series ends, with at most "
            f"{settings.SERIES_MAX_OCCURRENCES} occurrences."
        )
    count = until = None
    if "COUNT" in values:
        count = _positive(values["COUNT"], "COUNT", most=settings.SERIES_MAX_OCCURRENCES if capped else 10**6)
    else:
        until = _until(values["UNTIL"])
    return Rule(freq=freq, interval=interval, byday=byday, count=count, until=until)


def _positive(value, name, *, most):
    if not _DIGITS.match(value) or not 1 <= int(value) <= most:
        _refuse(f"{name} must be a whole number from 1 to {most} (got {value}).")
    return int(value)


def _until(value):
    match = _UNTIL.match(value)
    if match is None:
        _refuse(f"UNTIL is a date (20270131) or a UTC time (20270131T000000Z); got {value}.")
    day, clock, utc = match.groups()
    if not UNTIL_YEARS[0] <= int(day[:4]) <= UNTIL_YEARS[1]:
        _refuse(f"UNTIL must fall in the years {UNTIL_YEARS[0]} to {UNTIL_YEARS[1]}; got {value}.")
    try:
        if clock is None:
            return datetime.strptime(day, "%Y%m%d").date()
        if not utc:
            _refuse("UNTIL with a time must be in UTC (end it with Z), as RFC 5545 asks when the start has a zone.")
        return datetime.strptime(day + clock, "%Y%m%d%H%M%S").replace(tzinfo=dt_timezone.utc)
    except ValueError:
        _refuse(f"UNTIL is not a real date: {value}.")


def zone(name):
    """The ZoneInfo for an IANA name ("Europe/Berlin"), or a BookingError on `timezone`."""
    if not isinstance(name, str) or name not in _zone_names():
        raise BookingError("timezone", f"Not an IANA time zone name (like Europe/Berlin or UTC): {name!r}.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BookingError("timezone", f"Not an IANA time zone name (like Europe/Berlin or UTC): {name!r}.") from None


_ZONES = None


def _zone_names():
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones()) | {"UTC"}
    return _ZONES


@dataclass(frozen=True)
class Instance:
    """One occurrence as the rule gives it: `local`, its wall-clock start in the series' zone (what a
    calendar app expanding the RRULE from a DTSTART in that zone gives), and `start`, the UTC slot
    start it is booked at (`local` floored to the slot grid)."""

    local: datetime
    start: datetime


def instances(rule, first_start, tz, *, capped=True):
    """Every occurrence as an Instance, in order: the rule expanded in `tz`'s wall-clock time from
    `first_start`'s local time, each start then floored to its slot (module docstring). Refuses
    (BookingError) a rule with no occurrence, or (`capped`: a new series) more than
    SERIES_MAX_OCCURRENCES."""
    most = settings.SERIES_MAX_OCCURRENCES if capped else None
    first_local = first_start.astimezone(tz)
    local = first_local.replace(tzinfo=None)
    until = rule.until
    if isinstance(until, date) and not isinstance(until, datetime):
        until = datetime.combine(until, time.max)  # the whole last day, local
    elif until is not None:
        until = until.astimezone(tz).replace(tzinfo=None)
    generated = du.rrule(
        FREQUENCIES[rule.freq], dtstart=local, interval=rule.interval,
        byweekday=[WEEKDAYS[d] for d in rule.byday] or None, count=rule.count, until=until,
    )
    found = []
    for wall in generated:
        if most is not None and len(found) == most:
            _refuse(f"The rule gives more than {most} occurrences (SERIES_MAX_OCCURRENCES); end it sooner.")
        # The first start keeps its own reading of a wall-clock time the change back to winter time
        # repeats (its fold): it is the start asked for, in the second pass of that hour too.
        wall = wall.replace(tzinfo=tz, fold=first_local.fold if wall == local else 0)
        found.append(Instance(local=wall, start=policy.floor_to_slot(wall.astimezone(dt_timezone.utc))))
    if not found:
        _refuse("The rule gives no occurrence from the first start on.")
    return found


def expand(rule, first_start, tz, *, capped=True):
    """Every occurrence's start, as UTC slot boundaries in order (instances())."""
    return [instance.start for instance in instances(rule, first_start, tz, capped=capped)]


def stored_rule(series):
    """(Rule, zone) of a stored series, read as it was accepted: a SERIES_MAX_OCCURRENCES lowered
    since never makes a series unreadable (its pages, its feed, beat)."""
    return parse_rule(series.rule, capped=False), zone(series.time_zone)


def stored_starts(series):
    """Every occurrence start of a stored series (UTC slot starts), cancelled ones included."""
    rule, tz = stored_rule(series)
    return expand(rule, series.first_start, tz, capped=False)


def stored_words(series):
    """A stored series' rule in words (describe())."""
    rule, tz = stored_rule(series)
    return describe(rule, series.first_start, tz, series.time_zone)


def calendar_rule(rule, tz, *, last=None):
    """The rule as an RFC 5545 calendar states it with its DTSTART in `tz` (the first instance's
    wall-clock time): a date UNTIL becomes the UTC end of that local day, as RFC 5545 (3.3.10) asks of
    an UNTIL when DTSTART has a zone; a series cut short (`last`: the wall-clock start of its last
    instance still going) ends there with a UTC UNTIL in place of its COUNT or UNTIL."""
    if last is not None:
        return replace(rule, count=None, until=last.astimezone(dt_timezone.utc))
    if isinstance(rule.until, date) and not isinstance(rule.until, datetime):
        day_end = datetime.combine(rule.until, time(23, 59, 59), tzinfo=tz)
        return replace(rule, until=day_end.astimezone(dt_timezone.utc))
    return rule


def describe(rule, first_start, tz, tz_name):
    """The rule in words: "every weekday at 00:00 Europe/Berlin time, until 31 Jan 2027"."""
    local = first_start.astimezone(tz)
    unit = {"DAILY": "day", "WEEKLY": "week"}[rule.freq]
    every = f"every {rule.interval} {unit}s" if rule.interval > 1 else f"every {unit}"
    if rule.byday == ("MO", "TU", "WE", "TH", "FR") and rule.interval == 1:
        every = "every weekday"
    elif rule.byday:
        days = [DAY_NAMES[d] for d in rule.byday]
        on = ", ".join(days[:-1]) + " and " + days[-1] if len(days) > 1 else days[0]
        every = f"{every} on {on}"
    elif rule.freq == "WEEKLY":
        every = f"{every} on {local:%A}"
    where = "UTC" if tz_name == "UTC" else f"{tz_name} time"
    text = f"{every} at {local:%H:%M} {where}"
    if rule.count is not None:
        return f"{text}, {rule.count} time{'s' if rule.count != 1 else ''}"
    until = rule.until if not isinstance(rule.until, datetime) else rule.until.astimezone(tz)
    return f"{text}, until {until.day} {until:%b %Y}"


def first_start_check(first_start, slots, now):
    """The first start: aware, on the slot grid, not in the past, and its booking within the horizon
    (the rules any booking's start follows; policy.validate_window)."""
    policy.validate_window(first_start, slots, now)


def span(slots):
    return slots * policy.slot_length()


