"""How the services write times into text that leaves the app (notices, which also go out by e-mail
and webhook, audit reasons, the API's messages): in UTC, in two forms only, which the pages read back
to show in the viewer's zone (web.templatetags.pages.local_times):

- a moment, "2026-12-07 08:00 UTC";
- a window, "2026-12-07 08:00-10:00 UTC", its end's day written too when it is another,
  "2026-12-07 22:00-2026-12-08 02:00 UTC".
"""

from datetime import timezone as dt_timezone


def utc_moment(moment):
    return f"{moment.astimezone(dt_timezone.utc):%Y-%m-%d %H:%M} UTC"


def utc_window(start, end):
    start, end = start.astimezone(dt_timezone.utc), end.astimezone(dt_timezone.utc)
    end_format = "%H:%M" if end.date() == start.date() else "%Y-%m-%d %H:%M"
    return f"{start:%Y-%m-%d %H:%M}-{end.strftime(end_format)} UTC"
