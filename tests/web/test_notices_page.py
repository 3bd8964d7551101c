"""The notices page: a person's notices, newest first, the unread ones marked and then read.

Time is frozen at FROZEN_NOW (Monday 09:17 UTC).
"""

import re
from datetime import timedelta

import pytest
from django.test import Client

from reservations import services
from reservations.models import Notice

from ..support import FROZEN_NOW, NEXT_SLOT, SLOT, book, page_client, text_of

pytestmark = pytest.mark.usefixtures("frozen")




def notice(user, message, *, minutes_ago=0, kind=Notice.Kind.MOVED, **fields):
    return Notice.objects.create(
        user=user, kind=kind, message=message, created=FROZEN_NOW - timedelta(minutes=minutes_ago), **fields
    )


def test_notices_are_listed_newest_first_with_the_unread_ones_marked_then_read(owner):
    old = notice(owner, "an old one", minutes_ago=60, read_at=FROZEN_NOW - timedelta(minutes=30))
    older_unread = notice(owner, "an unread one", minutes_ago=10)
    newest = notice(owner, "the newest one", kind=Notice.Kind.WAITLIST_CONFIRMED)
    client = page_client(owner)

    first = client.get("/notices/")

    page = text_of(first)
    assert page.index("the newest one") < page.index("an unread one") < page.index("an old one")
    assert "New (unread) Waitlist confirmed" in page
    assert re.findall(r'class="card notice( unread)?" id="notice-(\d+)"', first.content.decode()) == [
        (" unread", str(newest.pk)), (" unread", str(older_unread.pk)), ("", str(old.pk)),
    ]
    # Shown, so read now: the second visit marks nothing new.
    assert set(Notice.objects.filter(read_at__isnull=True).values_list("pk", flat=True)) == set()
    assert Notice.objects.get(pk=newest.pk).read_at == FROZEN_NOW
    assert Notice.objects.get(pk=old.pk).read_at == FROZEN_NOW - timedelta(minutes=30)
    assert "(unread)" not in text_of(client.get("/notices/"))


def test_only_the_notices_on_the_page_shown_are_marked_read(owner):
    for i in range(30):
        notice(owner, f"notice {i:02d}", minutes_ago=i)
    client = page_client(owner)

    client.get("/notices/")

    unread = Notice.objects.filter(read_at__isnull=True).order_by("-created")
    assert [n.message for n in unread] == [f"notice {i:02d}" for i in range(25, 30)]
    second = client.get("/notices/?page=2")
    assert "notice 29" in text_of(second) and "Page 2 of 2" in text_of(second)
    assert not Notice.objects.filter(read_at__isnull=True).exists()


def test_other_peoples_notices_are_neither_shown_nor_marked(owner, teammate):
    theirs = notice(teammate, "for the teammate only")
    notice(owner, "for the owner")

    page = text_of(page_client(owner).get("/notices/"))

    assert "for the owner" in page and "for the teammate only" not in page
    assert Notice.objects.get(pk=theirs.pk).read_at is None


def test_the_mark_read_service_touches_only_the_given_users_unread_notices(owner, teammate):
    mine, theirs = notice(owner, "mine"), notice(teammate, "theirs")

    changed = services.notices_mark_read(user=owner, ids=[mine.pk, theirs.pk])
    again = services.notices_mark_read(user=owner, ids=[mine.pk])

    assert (changed, again) == (1, 0)
    assert Notice.objects.get(pk=theirs.pk).read_at is None


def test_a_preemption_warning_shows_the_reclaim_time_in_the_viewers_zone_and_links_its_booking(cluster, owner):
    reservation = book(owner, cluster["node1"][:1], slots=2)
    reclaim = NEXT_SLOT + SLOT
    services.notice_send(
        user=owner, kind=Notice.Kind.PREEMPTION_WARNING, reservation=reservation,
        message=f"Reservation #{reservation.pk} is preempted.", data={"reclaim_at": reclaim},
    )

    response = page_client(owner, zone="America/New_York").get("/notices/")

    page = text_of(response)
    # 12:00 UTC is 07:00 in New York in January (UTC-5).
    assert "GPUs reclaimed at Mon 7 Jan 2030, 07:00 (America/New_York)." in page
    assert f'href="/bookings/{reservation.pk}/"' in response.content.decode()


def test_the_banner_shows_the_newest_unread_notice_elsewhere_until_the_notices_page_showed_it(owner):
    notice(owner, "your booking moved")
    client = page_client(owner)
    assert "your booking moved" in text_of(client.get("/bookings/"))

    client.get("/notices/")

    assert "your booking moved" not in text_of(client.get("/bookings/"))


def test_a_signed_out_visitor_is_sent_to_sign_in(owner):
    notice(owner, "private")

    response = Client().get("/notices/")

    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")
    assert Notice.objects.get().read_at is None


def test_no_notices_says_so(owner):
    response = page_client(owner).get("/notices/")

    assert response.status_code == 200
    assert "No notices yet." in text_of(response)
