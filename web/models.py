import re
import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from reservations.models import Team


def new_feed_token():
    # 32 random bytes (43 characters): the token is the feed's only credential, so it must not be
    # guessable, and a calendar app stores it in the URL it polls.
    return secrets.token_urlsafe(32)


# What new_feed_token makes (base64url, no padding): anything else in a feed URL is no feed, and
# is not worth a query (a NUL there is an error in PostgreSQL, not just no match).
FEED_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


class CalendarFeed(models.Model):
    """A secret iCal URL: one for the bookings a user owns (no team), one per team they belong to."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="calendar_feeds")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, blank=True, related_name="calendar_feeds")
    token = models.CharField(max_length=64, unique=True, default=new_feed_token, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "team"], name="calendar_feed_unique_team"),
            # NULLs are distinct in a unique index, so the own-bookings feed needs a rule of its own.
            models.UniqueConstraint(fields=["user"], condition=Q(team__isnull=True), name="calendar_feed_unique_own"),
        ]

    def __str__(self):
        return f"{self.user} · {self.team or 'my bookings'}"
