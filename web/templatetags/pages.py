import re
from datetime import date, datetime, time, timedelta, timezone as dt_timezone

from django import template
from django.utils import dateformat, timezone
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import mark_safe

register = template.Library()

# How the pages write a moment (the notices page, a booking's page): the zone is named beside it.
MOMENT_FORMAT = "D j M Y, H:i"
# The two forms the services write times in (reservations.utc_text), in UTC because the same text goes
# out by e-mail and webhook: a moment "2026-12-07 08:00 UTC", a window "2026-12-07 08:00-10:00 UTC" or
# "2026-12-07 22:00-2026-12-08 02:00 UTC". Nothing else is read as a time (not "08:00:30 UTC").
DAY, CLOCK = r"(\d{4}-\d{2}-\d{2})", r"(\d{2}):(\d{2})"
UTC_TIMES = re.compile(rf"(?<![\w:-]){DAY} {CLOCK}(?:-(?:{DAY} )?{CLOCK})? UTC\b")


@register.filter
def duration(delta):
    """A timedelta as people say it: "45 min", "2 h 30 min", "3 days 2 h"."""
    if delta is None:
        return ""
    minutes = max(int(delta.total_seconds() // 60), 0)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = []
    if days:
        parts.append(f"{days} day{'s' if days != 1 else ''}")
    if hours:
        parts.append(f"{hours} h")
    if minutes or not parts:
        parts.append(f"{minutes} min")
    return " ".join(parts)


@register.filter(needs_autoescape=True)
def local_times(text, autoescape=True):
    """A notice's message with the UTC times in it shown as the pages show times: in the viewer's
    zone, named. Text that only looks like a time (no such day, 25:00) stays as it is."""
    escape = conditional_escape if autoescape else str
    parts, last = [], 0
    for match in UTC_TIMES.finditer(text):
        shown = _local_window(match)
        if shown is None:
            continue
        parts += [escape(text[last:match.start()]), shown]
        last = match.end()
    parts.append(escape(text[last:]))
    return mark_safe("".join(parts))


def _local_window(match):
    day, hour, minute, end_day, end_hour, end_minute = match.groups()
    try:
        start = _utc_moment(day, hour, minute)
        end = None if end_hour is None else _utc_moment(end_day or day, end_hour, end_minute)
    except ValueError:
        return None
    if end is not None and end <= start:  # "22:00-00:00" written without the next day
        end += timedelta(days=1)
    local_start = timezone.localtime(start)
    shown = dateformat.format(local_start, MOMENT_FORMAT)
    if end is not None:
        local_end = timezone.localtime(end)
        same_day = local_end.date() == local_start.date()
        shown += "–" + dateformat.format(local_end, "H:i" if same_day else MOMENT_FORMAT)
    return format_html(
        '<time datetime="{}">{}</time> ({})', start.isoformat(), shown, timezone.get_current_timezone_name()
    )


def _utc_moment(day, hour, minute):
    return datetime.combine(date.fromisoformat(day), time(int(hour), int(minute)), tzinfo=dt_timezone.utc)
