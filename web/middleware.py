"""Times are stored in UTC and shown in the viewer's zone (STYLE.md 6: convert only at the edges)."""

import zoneinfo
from urllib.parse import unquote

from django.utils import timezone

# Set by static/js/app.js from the browser (Intl), or to "UTC" by the page's UTC toggle.
ZONE_COOKIE = "tz"


def viewer_zone(request, name=None):
    """The zone the viewer asked for (`name`, else their cookie's), or None (then pages show
    settings.TIME_ZONE, UTC by default)."""
    name = unquote(name or request.COOKIES.get(ZONE_COOKIE, ""))
    if not name or len(name) > 64:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


class ViewerTimeZoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        zone = viewer_zone(request)
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
