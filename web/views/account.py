"""The profile page: who I am, my teams and rights, my API token and my calendar feed URLs."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from reservations import selectors, services as reservation_services

from .. import services
from ..models import CalendarFeed


@login_required
@require_GET
def profile(request):
    user = request.user
    memberships = selectors.memberships_of(user)
    feed_of = services.calendar_feeds_for(user=user)
    # A team left (or gone) since the memberships were read has no feed to show.
    feeds = [("My bookings", feed_of[None])] + [
        (f"Team {m.team.name}", feed_of[m.team_id]) for m in memberships if m.team_id in feed_of
    ]
    return render(
        request,
        "web/profile.html",
        {
            "memberships": memberships,
            "may_book_high": user.has_perm("reservations.book_high_priority"),
            "api_token": reservation_services.api_token_for(user=user),
            "feeds": [
                {
                    "label": label,
                    "feed": feed,
                    "url": request.build_absolute_uri(reverse("web:ical", args=[feed.token])),
                }
                for label, feed in feeds
            ],
        },
    )


@login_required
@require_POST
def api_token_rotate(request):
    reservation_services.api_token_rotate(user=request.user)
    messages.success(request, "Your API token was replaced; update your CI secrets.")
    return redirect("web:profile")


@login_required
@require_POST
def calendar_feed_rotate(request, feed_id):
    try:
        services.calendar_feed_rotate(user=request.user, feed_id=feed_id)
    except CalendarFeed.DoesNotExist:
        raise Http404("No such calendar feed.") from None
    messages.success(
        request, "The calendar feed has a new URL and the old one no longer works: subscribe again with the new one."
    )
    return redirect("web:profile")
