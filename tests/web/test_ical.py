"""The iCal feeds: what a calendar app that subscribed to a feed's secret URL gets."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from icalendar import Calendar

from reservations import services
from reservations.models import Membership
from web import services as web_services

from ..support import FROZEN_NOW, NEXT_SLOT, SLOT, book

pytestmark = pytest.mark.usefixtures("frozen")


def feed_url(user, team=None):
    return reverse("web:ical", args=[web_services.calendar_feed_for(user=user, team=team).token])


def subscribe(url):
    """What a calendar app fetches: no session, only the URL."""
    return Client().get(url)


def events(response):
    assert response.status_code == 200, response.content
    return {str(event["uid"]): event for event in Calendar.from_ical(response.content).walk("VEVENT")}


def uid(reservation):
    return f"reservation-{reservation.pk}@testserver"


def test_my_feed_lists_my_bookings_with_stable_uids_and_utc_times_and_no_one_elses(cluster, owner, outsider):
    mine = book(owner, cluster["node1"][:2], slots=2, title="nightly fine-tune")
    book(outsider, cluster["node2"][:1])

    response = subscribe(feed_url(owner))

    assert response["Content-Type"] == "text/calendar; charset=utf-8"
    assert response["Cache-Control"] == "private"
    found = events(response)
    assert list(found) == [uid(mine)]
    event = found[uid(mine)]
    assert event.decoded("dtstart") == NEXT_SLOT and event.decoded("dtend") == NEXT_SLOT + 2 * SLOT
    assert b"DTSTART:20300107T100000Z" in response.content  # UTC, no zone to resolve
    assert str(event["summary"]) == "nightly fine-tune"
    assert str(event["location"]) == "node1"
    assert str(event["status"]) == "CONFIRMED"
    assert int(event["sequence"]) == 0  # a new event
    assert str(event["description"]).splitlines() == [
        "GPUs: node1/gpu0, node1/gpu1", "Team: Vision", "Owner: owner", "Priority: Normal", "Status: Confirmed",
    ]
    assert event.decoded("dtstamp") is not None
    assert b"X-PUBLISHED-TTL:PT15M" in response.content


def test_the_same_booking_keeps_its_uid_from_one_fetch_to_the_next(cluster, owner):
    booking = book(owner, cluster["node1"][:1])
    url = feed_url(owner)

    assert list(events(subscribe(url))) == list(events(subscribe(url))) == [uid(booking)]


def test_a_booking_without_a_title_is_called_gpu_booking(cluster, owner):
    booking = book(owner, cluster["node1"][:1])

    assert str(events(subscribe(feed_url(owner)))[uid(booking)]["summary"]) == "GPU booking"


def test_a_team_feed_shows_teammates_bookings_with_owner_and_title_but_not_other_teams(
    cluster, team, owner, teammate, outsider
):
    theirs = book(teammate, cluster["node1"][:1], title="ablation")
    book(outsider, cluster["node2"][:1], title="other team")

    found = events(subscribe(feed_url(owner, team)))

    assert list(found) == [uid(theirs)]
    event = found[uid(theirs)]
    assert str(event["summary"]) == "ablation (teammate)"
    assert "Owner: teammate" in str(event["description"]).splitlines()


def test_cancelling_a_booking_sends_it_as_cancelled_with_a_higher_sequence(cluster, owner):
    booking = book(owner, cluster["node1"][:1])
    url = feed_url(owner)
    before = events(subscribe(url))[uid(booking)]

    services.reservation_cancel(reservation_id=booking.pk, actor=owner)

    after = events(subscribe(url))[uid(booking)]
    assert str(after["status"]) == "CANCELLED"
    assert int(after["sequence"]) > int(before["sequence"])


def test_moving_a_booking_moves_the_event_and_raises_its_sequence(cluster, owner):
    booking = book(owner, cluster["node1"][:1])
    url = feed_url(owner)
    before = events(subscribe(url))[uid(booking)]

    services.reservation_move(
        reservation_id=booking.pk, actor=owner, start=NEXT_SLOT + 3 * SLOT, slots=2, now=timezone.now()
    )

    after = events(subscribe(url))[uid(booking)]
    assert after.decoded("dtstart") == NEXT_SLOT + 3 * SLOT and after.decoded("dtend") == NEXT_SLOT + 5 * SLOT
    assert int(after["sequence"]) > int(before["sequence"])


def test_a_waitlisted_request_is_tentative(cluster, owner, teammate):
    gpu = cluster["node1"][:1]
    book(teammate, gpu)
    waiting = book(owner, gpu, waitlist=True)

    event = events(subscribe(feed_url(owner)))[uid(waiting)]

    assert str(event["status"]) == "TENTATIVE"


def test_bookings_that_ended_more_than_30_days_ago_drop_out(frozen, cluster, owner):
    frozen.move_to(FROZEN_NOW - timedelta(days=40))
    old = book(owner, cluster["node1"][:1], start=NEXT_SLOT - timedelta(days=40))
    frozen.move_to(FROZEN_NOW - timedelta(days=20))
    recent = book(owner, cluster["node1"][:1], start=NEXT_SLOT - timedelta(days=20))
    frozen.move_to(FROZEN_NOW)

    found = events(subscribe(feed_url(owner)))

    assert uid(recent) in found and uid(old) not in found


def test_the_feed_asks_the_database_the_same_number_of_queries_however_many_bookings(cluster, owner):
    url = feed_url(owner)
    book(owner, cluster["node1"][:1])
    with CaptureQueriesContext(connection) as one:
        subscribe(url)
    for i in range(1, 4):
        book(owner, cluster["node1"][:2], start=NEXT_SLOT + i * SLOT)
    services.reservation_cancel(reservation_id=book(owner, cluster["node2"][:1]).pk, actor=owner)

    with CaptureQueriesContext(connection) as five:
        assert len(events(subscribe(url))) == 5

    assert len(five) == len(one)


def test_a_rotated_feed_answers_404_at_its_old_url_and_works_at_its_new_one(cluster, owner):
    booking = book(owner, cluster["node1"][:1])
    feed = web_services.calendar_feed_for(user=owner)
    old_url = reverse("web:ical", args=[feed.token])

    web_services.calendar_feed_rotate(user=owner, feed_id=feed.pk)

    assert subscribe(old_url).status_code == 404
    assert uid(booking) in events(subscribe(feed_url(owner)))


def test_a_team_feed_closes_when_its_holder_leaves_the_team(cluster, team, owner, teammate):
    book(teammate, cluster["node1"][:1])
    team_url, own_url = feed_url(owner, team), feed_url(owner)

    Membership.objects.filter(user=owner, team=team).delete()

    assert subscribe(team_url).status_code == 404
    assert subscribe(own_url).status_code == 200


def test_a_deactivated_users_feeds_are_closed(cluster, owner):
    url = feed_url(owner)
    owner.is_active = False
    owner.save()

    assert subscribe(url).status_code == 404


def test_a_wrong_or_missing_token_is_a_404_with_no_data(cluster, owner):
    book(owner, cluster["node1"][:1])
    token = web_services.calendar_feed_for(user=owner).token

    wrong = [token[:-1], token + "x", token.upper(), "nope", ""]
    for url in [f"/ical/{t}.ics" for t in wrong]:
        response = subscribe(url)
        assert response.status_code == 404, url
        assert b"VEVENT" not in response.content


def test_no_sign_in_is_needed_and_a_signed_in_user_gets_nothing_more_without_the_token(cluster, owner):
    book(owner, cluster["node1"][:1])
    client = Client()
    client.force_login(owner)

    assert client.get("/ical/not-the-token.ics").status_code == 404
    assert subscribe(feed_url(owner)).status_code == 200


def test_someone_elses_team_has_no_feed_for_me(team, outsider):
    with pytest.raises(PermissionDenied, match="members"):
        web_services.calendar_feed_for(user=outsider, team=team)


def test_the_feed_answers_head_and_refuses_writes(owner):
    url = feed_url(owner)

    assert Client().head(url).status_code == 200
    assert Client().post(url).status_code == 405
