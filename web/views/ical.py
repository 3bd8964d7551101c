"""The iCal feeds (RFC 5545): a person's bookings, or a team's, for any calendar app to subscribe to.

No sign-in: calendar apps cannot log in, so the long random token in the URL is the credential
(web.selectors.calendar_feed_by_token). An unknown token and a closed feed look the same: a 404.
"""

from datetime import timedelta, timezone as dt_timezone

from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe
from icalendar import Calendar, Event, vDuration

from reservations import policy, selectors

from ..selectors import calendar_feed_by_token

# Bookings that ended more than this long ago drop out of the feed: the window, not the history,
# sets the cost of a request.
FEED_PAST = timedelta(days=30)
# How often calendar apps that honour it should poll (Google Calendar sets its own pace).
REFRESH = timedelta(minutes=15)

ICAL_STATUS = {
    # A waiting request may or may not get its window; a cancelled (or expired) one must be sent as
    # CANCELLED, or apps that already have it keep showing it.
    "waitlisted": "TENTATIVE",
    "cancelled": "CANCELLED",
}


@require_safe
def feed(request, token):
    calendar_feed = calendar_feed_by_token(token)
    if calendar_feed is None:
        raise Http404("No such calendar feed.")
    now = timezone.now()
    team = calendar_feed.team
    reservations = selectors.calendar_feed_reservations(
        user=None if team else calendar_feed.user,
        team=team,
        start=now - FEED_PAST,
        end=policy.horizon_end(now),
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
    for reservation in reservations:
        calendar.add_component(_event(reservation, domain=domain, team_feed=team is not None))
    response = HttpResponse(calendar.to_ical(), content_type="text/calendar; charset=utf-8")
    # Personal data behind a secret URL: no shared cache may keep it.
    response["Cache-Control"] = "private"
    return response


def _event(reservation, *, domain, team_feed):
    allocations = reservation.allocation_list
    gpus = ", ".join(a.gpu.name for a in allocations) or f"any {reservation.gpu_count}"
    nodes = sorted({a.gpu.node.hostname for a in allocations})
    owner = reservation.user.get_username()
    title = reservation.title or "GPU booking"
    event = Event()
    event.add("uid", f"reservation-{reservation.pk}@{domain}")
    event.add("dtstamp", reservation.updated)
    event.add("created", reservation.created)
    event.add("last-modified", reservation.updated)
    event.add("dtstart", reservation.start.astimezone(dt_timezone.utc))
    event.add("dtend", reservation.end.astimezone(dt_timezone.utc))
    # In a team's calendar whose booking it is matters at a glance.
    event.add("summary", f"{title} ({owner})" if team_feed else title)
    event.add(
        "description",
        "\n".join(
            [
                f"GPUs: {gpus}",
                f"Team: {reservation.team.name}",
                f"Owner: {owner}",
                f"Priority: {reservation.get_priority_display()}",
                f"Status: {reservation.get_status_display()}",
            ]
        ),
    )
    if nodes:
        event.add("location", ", ".join(nodes))
    # Creating a booking writes its first audit entry, and a new event's SEQUENCE is 0.
    event.add("sequence", max(reservation.revision - 1, 0))
    event.add("status", ICAL_STATUS.get(reservation.status, "CONFIRMED"))
    return event
