"""Writes of the pages' own data: calendar feed tokens and the API token for CI.

Keyword-only functions named `<entity>_<action>`, as in reservations.services, each in a short
transaction of its own (durable: never inside another, so a lock is never held longer than its write).
"""

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from rest_framework.authtoken.models import Token

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


def calendar_feed_rotate(*, user, feed_id):
    """A new secret for one of the user's feeds: the old URL stops working at once."""
    with transaction.atomic(durable=True):
        feed = CalendarFeed.objects.select_for_update().filter(pk=feed_id, user=user).first()
        if feed is None:
            raise CalendarFeed.DoesNotExist(f"You have no calendar feed {feed_id}.")
        feed.token = new_feed_token()
        feed.save(update_fields=["token"])
    return feed


def api_token_for(*, user):
    """The user's API token (REST API, CI pipelines), made on first use."""
    token = Token.objects.filter(user=user).first()
    if token is not None:
        return token
    with transaction.atomic(durable=True):
        return Token.objects.get_or_create(user=user)[0]


def api_token_rotate(*, user):
    """Replace the user's API token: the old key is refused (401) from the moment this commits."""
    with transaction.atomic(durable=True):
        # Lock the user row: two rotations at once run one after the other instead of both deleting
        # the old key and then colliding on the one-token-per-user rule.
        get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk").first()
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)
