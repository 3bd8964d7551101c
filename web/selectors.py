"""Reads of the pages' own data (the booking reads are in reservations.selectors)."""

from reservations.models import Membership

from .models import FEED_TOKEN, CalendarFeed


def calendar_feed_by_token(token):
    """The feed this secret opens, or None: an unknown token, a deactivated user, or a team feed
    whose holder has left the team (checked on every request, so leaving closes the feed at once).
    A string not shaped like a token is no feed, without a query."""
    if not isinstance(token, str) or not FEED_TOKEN.fullmatch(token):
        return None
    feed = CalendarFeed.objects.select_related("user", "team").filter(token=token).first()
    if feed is None or not feed.user.is_active:
        return None
    if feed.team_id is not None and not Membership.objects.filter(user_id=feed.user_id, team_id=feed.team_id).exists():
        return None
    return feed
