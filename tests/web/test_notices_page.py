"""The notices page: a person's notices, newest first, the unread ones marked; they are read when
the person says so (a POST), never by looking.

Time is frozen at FROZEN_NOW (Monday 09:17 UTC).
"""

import re
from datetime import timedelta

import pytest
from django.test import Client

from reservations import services
from reservations.models import Notice
from reservations.utc_text import utc_window

from ..support import FROZEN_NOW, NEXT_SLOT, SLOT, book, page_client, text_of

pytestmark = pytest.mark.usefixtures("frozen")




def notice(user, message, *, minutes_ago=0, kind=Notice.Kind.MOVED, **fields):
    return Notice.objects.create(
        user=user, kind=kind, message=message, created=FROZEN_NOW - timedelta(minutes=minutes_ago), **fields
    )


def shown_ids(response):
    """The ids the page's "Mark read" form posts."""
    form = re.search(r'<form method="post" action="/notices/read/" class="notices-read">(.*?)</form>', response.content.decode(), re.S)
    return [int(pk) for pk in re.findall(r'name="ids" value="(\d+)"', form.group(1))] if form else []


def test_notices_are_listed_newest_first_with_the_unread_ones_marked(owner):
    old = notice(owner, "an old one", minutes_ago=60, read_at=FROZEN_NOW - timedelta(minutes=30))
    older_unread = notice(owner, "an unread one", minutes_ago=10)
    newest = notice(owner, "the newest one", kind=Notice.Kind.WAITLIST_CONFIRMED)

    response = page_client(owner).get("/notices/")

    page = text_of(response)
    assert page.index("the newest one") < page.index("an unread one") < page.index("an old one")
    assert "New (unread) Waitlist confirmed" in page
    assert re.findall(r'class="card notice( unread)?" id="notice-(\d+)"', response.content.decode()) == [
        (" unread", str(newest.pk)), (" unread", str(older_unread.pk)), ("", str(old.pk)),
    ]
    assert shown_ids(response) == [newest.pk, older_unread.pk]


def test_looking_at_the_notices_leaves_them_unread(owner):
    unread = notice(owner, "an unread one")
    client = page_client(owner)

    client.get("/notices/")
    again = client.get("/notices/")

    assert Notice.objects.get(pk=unread.pk).read_at is None
    assert "New (unread)" in text_of(again)


def test_mark_read_marks_the_notices_the_page_showed_and_returns_to_it(owner):
    for i in range(30):
        notice(owner, f"notice {i:02d}", minutes_ago=i)
    client = page_client(owner)
    first = client.get("/notices/")

    response = client.post("/notices/read/", {"ids": shown_ids(first), "next": "/notices/"})

    assert response.status_code == 302 and response["Location"] == "/notices/"
    unread = Notice.objects.filter(read_at__isnull=True).order_by("-created")
    assert [n.message for n in unread] == [f"notice {i:02d}" for i in range(25, 30)]
    assert Notice.objects.filter(message="notice 00").get().read_at == FROZEN_NOW
    assert "25 notices marked read." in text_of(client.get("/notices/"))
    second = client.get("/notices/?page=2")
    assert "notice 29" in text_of(second) and "Page 2 of 2" in text_of(second)
    assert len(shown_ids(second)) == 5


def test_mark_read_needs_a_post_with_the_csrf_token(owner):
    unread = notice(owner, "an unread one")
    client = page_client(owner, enforce_csrf_checks=True)

    assert client.get("/notices/read/", {"ids": unread.pk}).status_code == 405
    assert client.post("/notices/read/", {"ids": unread.pk}).status_code == 403
    assert Notice.objects.get(pk=unread.pk).read_at is None


@pytest.mark.parametrize("ids", [[], ["x"], ["²"], ["1"] * 101])
def test_mark_read_with_bad_ids_is_a_400_naming_the_field(owner, ids):
    unread = notice(owner, "an unread one")

    response = page_client(owner).post("/notices/read/", {"ids": ids})

    assert response.status_code == 400 and response.content.decode().startswith("ids: ")
    assert Notice.objects.get(pk=unread.pk).read_at is None


def test_mark_read_goes_back_only_to_a_page_of_this_site(owner):
    unread = notice(owner, "an unread one")

    response = page_client(owner).post("/notices/read/", {"ids": unread.pk, "next": "https://evil.example/"})

    assert response.status_code == 302 and response["Location"] == "/notices/"
    assert Notice.objects.get(pk=unread.pk).read_at == FROZEN_NOW


def test_other_peoples_notices_are_neither_shown_nor_marked(owner, teammate):
    theirs = notice(teammate, "for the teammate only")
    mine = notice(owner, "for the owner")
    client = page_client(owner)

    page = text_of(client.get("/notices/"))
    client.post("/notices/read/", {"ids": [mine.pk, theirs.pk]})

    assert "for the owner" in page and "for the teammate only" not in page
    assert Notice.objects.get(pk=theirs.pk).read_at is None
    assert Notice.objects.get(pk=mine.pk).read_at == FROZEN_NOW


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


def test_the_banner_shows_the_newest_unread_notice_elsewhere_until_it_is_marked_read(owner):
    mine = notice(owner, "your booking moved")
    client = page_client(owner)
    client.get("/notices/")
    page = client.get("/bookings/")
    assert "your booking moved" in text_of(page)
    banner = re.search(r'<div class="banner".*?</div>', page.content.decode(), re.S).group(0)
    assert f'name="ids" value="{mine.pk}"' in banner and 'name="next" value="/bookings/"' in banner

    response = client.post("/notices/read/", {"ids": mine.pk, "next": "/bookings/"})

    assert response["Location"] == "/bookings/"
    assert "your booking moved" not in text_of(client.get("/bookings/"))


def test_the_banners_mark_read_on_a_page_that_answered_a_form_returns_to_the_notices(cluster, owner):
    reservation = book(owner, cluster["node1"][:1])
    notice(owner, "your booking moved")
    client = page_client(owner)

    refused = client.post(f"/bookings/{reservation.pk}/transfer/", {"to": "nobody-here"})

    assert refused.status_code == 400
    banner = re.search(r'<div class="banner".*?</div>', refused.content.decode(), re.S).group(0)
    assert 'name="next"' not in banner
    assert client.post("/notices/read/", {"ids": Notice.objects.get().pk})["Location"] == "/notices/"


def test_the_banner_shows_the_notices_utc_times_in_the_viewers_zone_as_the_pages_do(cluster, owner):
    reservation = book(owner, cluster["node1"][:1], slots=2)
    services.notice_send(
        user=owner, kind=Notice.Kind.PREEMPTION_WARNING, reservation=reservation,
        message=f"Reservation #{reservation.pk} is preempted: its GPUs are reclaimed at 2030-01-07 12:00 UTC.",
        data={"reclaim_at": NEXT_SLOT + SLOT},
    )
    client = page_client(owner, zone="America/New_York")

    banner = text_of(client.get("/bookings/"))
    listed = text_of(client.get("/notices/"))

    expected = "its GPUs are reclaimed at Mon 7 Jan 2030, 07:00 (America/New_York)."
    assert expected in banner and expected in listed
    assert "12:00 UTC" not in banner


def test_windows_as_the_services_write_them_are_shown_in_the_viewers_zone(owner):
    evening = NEXT_SLOT + 6 * SLOT  # 2030-01-07 22:00 UTC
    notice(owner, f"Moved to {utc_window(NEXT_SLOT, NEXT_SLOT + SLOT)}, then to {utc_window(evening, evening + 2 * SLOT)}.")

    page = text_of(page_client(owner, zone="Asia/Tokyo").get("/notices/"))

    # Tokyo is UTC+9: 10:00-12:00 UTC is that evening there, 22:00-02:00 UTC the next morning.
    assert "Moved to Mon 7 Jan 2030, 19:00–21:00 (Asia/Tokyo), then to Tue 8 Jan 2030, 07:00–11:00 (Asia/Tokyo)." in page


def test_a_real_preemption_warning_shows_every_time_in_the_viewers_zone(cluster, owner, high_booker, frozen):
    victim = book(owner, cluster["node1"][:1], slots=3, priority="low")
    frozen.move_to(NEXT_SLOT + timedelta(minutes=20))  # under way: cut short, and the rest rebooked
    services.reservations_advance()
    book(high_booker, cluster["node1"][:1], start=NEXT_SLOT + SLOT, priority="high")
    warning = Notice.objects.get(user=owner, kind=Notice.Kind.PREEMPTION_WARNING)
    assert warning.reservation == victim and warning.message.count("UTC") == 2  # a moment and a window

    page = page_client(owner, zone="America/New_York").get("/notices/").content.decode()

    shown = re.search(r"<p>(Reservation #.*?)</p>", page, re.S).group(1)
    assert "UTC" not in shown and shown.count("(America/New_York)") == 2


def test_text_that_only_looks_like_a_time_stays_as_written(owner):
    notice(owner, "At 2030-02-30 25:00 UTC, or 2030-01-07 08:00:30 UTC, or 10:00 UTC.")

    page = text_of(page_client(owner, zone="Asia/Tokyo").get("/notices/"))

    assert "At 2030-02-30 25:00 UTC, or 2030-01-07 08:00:30 UTC, or 10:00 UTC." in page


def test_a_notices_text_is_escaped_around_its_times(owner):
    notice(owner, "<b>bold</b> at 2030-01-07 12:00 UTC")

    html = page_client(owner).get("/notices/").content.decode()

    assert "&lt;b&gt;bold&lt;/b&gt; at <time datetime=\"2030-01-07T12:00:00+00:00\">Mon 7 Jan 2030, 12:00</time> (UTC)" in html


def test_a_signed_out_visitor_is_sent_to_sign_in(owner):
    notice(owner, "private")

    response = Client().get("/notices/")

    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")
    assert Client().post("/notices/read/", {"ids": Notice.objects.get().pk}).status_code == 302
    assert Notice.objects.get().read_at is None


def test_no_notices_says_so(owner):
    response = page_client(owner).get("/notices/")

    assert response.status_code == 200
    assert "No notices yet." in text_of(response)
