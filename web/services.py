"""Writes of the pages' own data: calendar feed tokens (API tokens are reservations.services').

Keyword-only functions named `<entity>_<action>`, as in reservations.services, each in a short
transaction of its own (durable: never inside another, so a lock is never held longer than its write).
"""

from django.core.exceptions import PermissionDenied
from django.db import transaction

from reservations.models import Membership

from .models import CalendarFeed, new_feed_token


def calendar_feed_for(*, user, team=None):
    """The user's feed of their own bookings (no team), or of `team`'s, made on first use."""
    if team is not None and not Membership.objects.filter(user=user, team=team).exists():
        raise PermissionDenied("Only the team's members have a calendar feed of its bookings.")
    feed = CalendarFeed.objects.filter(user=user, team=team).first()
    if feed is not None:
        return feed
    with transaction.atomic(durable=True):
        # get_or_create: two first page views at once make one feed (the unique constraints decide).
        return CalendarFeed.objects.get_or_create(user=user, team=team)[0]


def calendar_feeds_for(*, user):
    """The user's feed of their own bookings and one for each team they are in, made on first use,
    as {team id (None: their own): feed}: a fixed number of queries however many teams (the profile
    lists them all)."""
    wanted = {None, *Membership.objects.filter(user=user).values_list("team_id", flat=True)}
    feeds = {feed.team_id: feed for feed in CalendarFeed.objects.filter(user=user)}
    missing = wanted - set(feeds)
    if missing:
        with transaction.atomic(durable=True):
            # Conflicts ignored: two first page views at once make one feed of each (the unique
            # constraints decide), and both read back the one made.
            CalendarFeed.objects.bulk_create(
                [CalendarFeed(user=user, team_id=team_id) for team_id in missing], ignore_conflicts=True
            )
        feeds = {feed.team_id: feed for feed in CalendarFeed.objects.filter(user=user)}
    return {team_id: feeds[team_id] for team_id in wanted}


def calendar_feed_rotate(*, user, feed_id):
    """A new secret for one of the user's feeds: the old URL stops working at once."""
    with transaction.atomic(durable=True):
        feed = CalendarFeed.objects.select_for_update().filter(pk=feed_id, user=user).first()
        if feed is None:
            raise CalendarFeed.DoesNotExist(f"You have no calendar feed {feed_id}.")
        feed.token = new_feed_token()
        feed.save(update_fields=["token"])
    return feed

