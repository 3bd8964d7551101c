"""A recurring booking in the iCal feed: one recurring event (a master with its RRULE, EXDATEs and
overrides; web/views/ical.py says why each), checked by what a calendar app shows of it: the feed is
expanded with recurring_ical_events, as Google Calendar, Outlook and Thunderbird expand it, and the
instances are compared with the series' bookings in the database and, beyond the booking horizon,
with the occurrences its rule gives."""

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest
import recurring_ical_events
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from icalendar import Calendar

from reservations import services
from reservations.models import Reservation
from reservations.services.series import series_cancel, series_create, series_extend
from web import services as web_services

from ..support import FROZEN_NOW, NEXT_SLOT, SLOT, book, make_user

pytestmark = pytest.mark.usefixtures("frozen")
UTC = dt_timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
DAY = timedelta(days=1)
Status = Reservation.Status


def feed(user, team=None):
    """What a calendar app subscribed to the feed fetches: no session, only the URL."""
    token = web_services.calendar_feed_for(user=user, team=team).token
    response = Client().get(reverse("web:ical", args=[token]))
    assert response.status_code == 200, response.content
    return response.content


def uid(series):
    return f"series-{series.pk}@testserver"


def vevents(content, series):
    return [e for e in Calendar.from_ical(content).walk("VEVENT") if str(e["uid"]) == uid(series)]


def shown(content, series, start, end):
    """What a calendar app shows of the series between `start` and `end`: (start, end, title) in UTC,
    in order. A cancelled event is shown by none of them (Google drops it, Outlook and Thunderbird
    strike it out)."""
    events = recurring_ical_events.of(Calendar.from_ical(content)).between(start, end)
    return sorted(
        (e.decoded("dtstart").astimezone(UTC), e.decoded("dtend").astimezone(UTC), str(e["summary"]))
        for e in events
        if str(e["uid"]) == uid(series) and str(e.get("status")) != "CANCELLED"
    )


def live_bookings(series):
    """The series' live occurrences as booked: (start, end, title), in order."""
    return sorted(
        (r.start, r.end, r.title)
        for r in Reservation.objects.filter(series=series, rebook_of=None).exclude(status=Status.CANCELLED)
    )


def nightly(owner, gpus, *, start=NEXT_SLOT + 4 * SLOT, rule="FREQ=DAILY;COUNT=3", **kwargs):
    kwargs.setdefault("slots", 2)
    kwargs.setdefault("title", "nightly fine-tune")
    if "gpu_count" not in kwargs:
        kwargs["gpu_ids"] = [g.pk for g in gpus]
    return series_create(user=owner, start=start, rule=rule, now=timezone.now(), **kwargs).series


def test_a_series_is_one_recurring_event_beside_the_bookings_that_are_not(cluster, owner):
    single = book(owner, cluster["node2"][:1], title="one-off")
    series = nightly(owner, cluster["node1"][:2])

    content = feed(owner)

    events = vevents(content, series)
    assert len(events) == 1  # each night booked as the rule says: no override
    master = events[0]
    assert "recurrence-id" not in master
    assert b"RRULE:FREQ=DAILY;COUNT=3" in content
    assert master.decoded("dtstart") == NEXT_SLOT + 4 * SLOT  # a UTC series: DTSTART in UTC
    assert master.decoded("dtend") == NEXT_SLOT + 6 * SLOT
    assert str(master["summary"]) == "nightly fine-tune"
    assert str(master["location"]) == "node1"
    assert str(master["description"]).splitlines() == [
        "GPUs: node1/gpu0, node1/gpu1", "Team: Vision", "Owner: owner", "Priority: Normal",
        "Repeats: every day at 18:00 UTC, 3 times",
    ]
    assert int(master["sequence"]) > 0  # created, then its three bookings: each an audit entry
    everything = recurring_ical_events.of(Calendar.from_ical(content)).between(FROZEN_NOW, FROZEN_NOW + 10 * DAY)
    assert sorted(str(e["uid"]) for e in everything) == [f"reservation-{single.pk}@testserver"] + [uid(series)] * 3
    assert shown(content, series, FROZEN_NOW, FROZEN_NOW + 10 * DAY) == live_bookings(series)
    # The same UID fetch after fetch.
    assert [str(e["uid"]) for e in vevents(feed(owner), series)] == [uid(series)]


def test_a_berlin_series_across_the_change_to_summer_time_shows_as_booked_and_ahead_as_the_rule_says(
    cluster, team, frozen, settings
):
    settings.BOOKING_HORIZON_DAYS = 7
    frozen.move_to(datetime(2030, 3, 25, 9, 17, tzinfo=UTC))  # Monday; clocks go forward Sunday 31 March
    berliner = make_user("berliner", team)
    # 01:00 Berlin every night, two two-hour slots: 00:00 UTC in winter; in summer 23:00 UTC, off the
    # grid, so booked from 22:00 UTC (recurrence.py). Seven nights are within the horizon.
    series = nightly(
        berliner, cluster["node1"][:1], start=datetime(2030, 3, 26, 0, 0, tzinfo=UTC), rule="FREQ=DAILY;COUNT=14",
        tz="Europe/Berlin", title="nightly",
    )
    night = {r.occurrence.astimezone(BERLIN).date(): r for r in Reservation.objects.filter(series=series)}
    assert len(night) == 7
    services.reservation_move(
        reservation_id=night[datetime(2030, 3, 28).date()].pk, actor=berliner,
        start=datetime(2030, 3, 28, 4, 0, tzinfo=UTC), slots=2, now=timezone.now(),
    )
    series_cancel(series_id=series.pk, actor=berliner, scope="one", occurrence=datetime(2030, 3, 27, 0, 0, tzinfo=UTC))
    # Not booked yet: the night of 5 April (01:00 CEST = 23:00 UTC on the 4th, booked from 22:00).
    series_cancel(series_id=series.pk, actor=berliner, scope="one", occurrence=datetime(2030, 4, 4, 22, 0, tzinfo=UTC))

    content = feed(berliner)

    assert b"DTSTART;TZID=Europe/Berlin:20300326T010000" in content
    assert b"RRULE:FREQ=DAILY;COUNT=14" in content
    assert b"EXDATE;TZID=Europe/Berlin:20300327T010000,20300405T010000" in content
    calendar = Calendar.from_ical(content)
    assert [tz.tz_name for tz in calendar.timezones] == ["Europe/Berlin"] and not calendar.get_missing_tzids()
    # Overrides: the moved night; the night of the change (01:00 CET to 06:00 CEST spans it: apps
    # that add four hours of wall clock would end it an hour early); the first summer night (booked
    # an hour before 01:00 CEST). The others are where the rule puts them.
    overrides = {e["recurrence-id"].to_ical().decode(): e for e in vevents(content, series) if "recurrence-id" in e}
    assert sorted(overrides) == ["20300328T010000", "20300331T010000", "20300401T010000"]
    first_summer = overrides["20300401T010000"]
    assert first_summer.decoded("dtstart") == datetime(2030, 3, 31, 22, 0, tzinfo=UTC)
    assert b"DTSTART;TZID=Europe/Berlin:20300401T000000" in content

    # The moved night counts where it is booked, not where the rule put it.
    moved = (datetime(2030, 3, 28, 4, 0, tzinfo=UTC), datetime(2030, 3, 28, 8, 0, tzinfo=UTC), "nightly")
    assert shown(content, series, moved[0], moved[1] + 2 * SLOT) == [moved]
    assert shown(content, series, moved[0] - 2 * SLOT, moved[0]) == []

    window_start = timezone.now() - timedelta(days=30)
    horizon = timezone.now() + 7 * DAY
    booked = live_bookings(series)
    assert len(booked) == 6  # seven booked, one of them cancelled
    assert shown(content, series, window_start, horizon) == booked
    # Ahead of the horizon, not booked yet: 01:00 Berlin (23:00 UTC) as the rule says, the night of
    # 5 April left out.
    rule_says = [datetime(2030, 4, d, 23, 0, tzinfo=UTC) for d in (1, 2, 3, 5, 6, 7)]
    assert shown(content, series, horizon, horizon + 30 * DAY) == [(s, s + 2 * SLOT, "nightly") for s in rule_says]
    assert shown(content, series, window_start, horizon + 30 * DAY) == booked + [
        (s, s + 2 * SLOT, "nightly") for s in rule_says
    ]

    # Two days on, beat books two more nights: they show where they are booked, an hour earlier.
    frozen.move_to(datetime(2030, 3, 27, 9, 17, tzinfo=UTC))
    assert series_extend() == 2
    content = feed(berliner)
    assert shown(content, series, window_start, horizon + 30 * DAY) == live_bookings(series) + [
        (s, s + 2 * SLOT, "nightly") for s in rule_says[2:]
    ]
    first_summer_booked = (datetime(2030, 4, 1, 22, 0, tzinfo=UTC), datetime(2030, 4, 2, 2, 0, tzinfo=UTC), "nightly")
    assert first_summer_booked in live_bookings(series)


def test_cancelling_this_and_the_following_ends_the_rule_with_until_its_last_occurrence(cluster, owner):
    series = nightly(owner, cluster["node1"][:1], rule="FREQ=DAILY;COUNT=5")
    third = NEXT_SLOT + 4 * SLOT + 2 * DAY

    series_cancel(series_id=series.pk, actor=owner, scope="following", occurrence=third)

    content = feed(owner)
    assert b"RRULE:FREQ=DAILY;UNTIL=20300108T180000Z" in content  # the second occurrence, inclusive
    assert b"EXDATE" not in content and len(vevents(content, series)) == 1
    assert "Repeats: every day at 18:00 UTC, until 8 Jan 2030" in str(vevents(content, series)[0]["description"])
    assert shown(content, series, FROZEN_NOW, FROZEN_NOW + 30 * DAY) == live_bookings(series)
    assert len(live_bookings(series)) == 2


def test_an_until_date_becomes_the_utc_end_of_that_day_in_the_series_zone(cluster, owner):
    # Mondays and Thursdays at 23:00 Berlin time (22:00 UTC) until Thursday 31 January, that day included.
    series = nightly(
        owner, cluster["node1"][:1], start=datetime(2030, 1, 7, 22, 0, tzinfo=UTC), slots=1,
        rule="FREQ=WEEKLY;BYDAY=MO,TH;UNTIL=20300131", tz="Europe/Berlin",
    )

    content = feed(owner)

    assert b"RRULE:FREQ=WEEKLY;UNTIL=20300131T225959Z;BYDAY=MO,TH" in content
    assert len(vevents(content, series)) == 1
    got = shown(content, series, FROZEN_NOW, FROZEN_NOW + 60 * DAY)
    assert got == live_bookings(series)
    assert len(got) == 8 and got[-1][0] == datetime(2030, 1, 31, 22, 0, tzinfo=UTC)


def test_in_a_team_feed_each_occurrence_of_a_number_of_gpus_shows_the_gpus_it_got(cluster, team, owner, teammate):
    series = nightly(teammate, [], gpu_count=1, title="ablation", rule="FREQ=DAILY;COUNT=2")

    content = feed(owner, team)

    master, *overrides = vevents(content, series)
    assert str(master["summary"]) == "ablation (teammate)"
    assert str(master["description"]).splitlines()[0] == "GPUs: any 1" and "location" not in master
    # Which GPU each night got is its own detail: each is an override, at the time the rule says.
    assert len(overrides) == 2
    for override, booking in zip(overrides, Reservation.objects.filter(series=series).order_by("start")):
        gpu = booking.allocations.get().gpu
        assert override.decoded("recurrence-id") == override.decoded("dtstart") == booking.start
        assert str(override["description"]).splitlines()[0] == f"GPUs: {gpu.name}"
        assert str(override["summary"]) == "ablation (teammate)"
    assert shown(content, series, FROZEN_NOW, FROZEN_NOW + 10 * DAY) == [
        (s, e, f"{t} (teammate)") for s, e, t in live_bookings(series)
    ]


def test_a_skipped_occurrence_is_excluded_and_a_waitlisted_one_is_tentative(cluster, owner, teammate):
    first, second = cluster["node1"][:1], cluster["node1"][1:2]
    book(teammate, first, start=NEXT_SLOT + 4 * SLOT + DAY, slots=1)
    book(teammate, second, start=NEXT_SLOT + 8 * SLOT + DAY, slots=1)
    skipping = nightly(owner, first, on_conflict="skip")
    waiting = nightly(owner, second, on_conflict="waitlist", start=NEXT_SLOT + 8 * SLOT, title="eval")

    content = feed(owner)

    assert b"EXDATE:20300108T180000Z" in content  # the skipped night (a UTC series: in UTC)
    assert len(vevents(content, skipping)) == 1
    assert shown(content, skipping, FROZEN_NOW, FROZEN_NOW + 10 * DAY) == live_bookings(skipping)
    assert len(live_bookings(skipping)) == 2
    master, override = vevents(content, waiting)
    assert str(override["status"]) == "TENTATIVE" and str(master["status"]) == "CONFIRMED"
    assert str(override["description"]).splitlines()[-1] == "Status: Waitlisted"
    assert override.decoded("dtstart") == NEXT_SLOT + 8 * SLOT + DAY
    assert shown(content, waiting, FROZEN_NOW, FROZEN_NOW + 10 * DAY) == live_bookings(waiting)
    assert len(live_bookings(waiting)) == 3


def test_a_series_cancelled_whole_shows_nothing_more_and_one_with_nothing_left_is_a_cancelled_event(
    cluster, owner, settings
):
    settings.BOOKING_HORIZON_DAYS = 3
    whole = nightly(owner, cluster["node1"][:1], rule="FREQ=DAILY;COUNT=6")  # three nights booked, three later
    series_cancel(series_id=whole.pk, actor=owner, scope="all")
    from_the_first = nightly(owner, cluster["node1"][1:2], rule="FREQ=DAILY;COUNT=2")
    series_cancel(series_id=from_the_first.pk, actor=owner, scope="following", occurrence=NEXT_SLOT + 4 * SLOT)

    content = feed(owner)

    # The three it had booked are excluded, the three it had not are cut off.
    assert b"RRULE:FREQ=DAILY;UNTIL=20300109T180000Z" in content
    assert shown(content, whole, FROZEN_NOW - DAY, FROZEN_NOW + 30 * DAY) == []
    (cancelled,) = vevents(content, from_the_first)
    assert str(cancelled["status"]) == "CANCELLED" and "rrule" not in cancelled
    assert shown(content, from_the_first, FROZEN_NOW - DAY, FROZEN_NOW + 30 * DAY) == []


def test_each_change_to_the_series_or_an_occurrence_raises_the_sequence(cluster, owner):
    series = nightly(owner, cluster["node1"][:1])
    sequence = lambda: {int(e["sequence"]) for e in vevents(feed(owner), series)}  # noqa: E731
    (before,) = sequence()

    series_cancel(series_id=series.pk, actor=owner, scope="one", occurrence=NEXT_SLOT + 4 * SLOT + DAY)
    (after_cancel,) = sequence()
    booking = Reservation.objects.get(series=series, occurrence=NEXT_SLOT + 4 * SLOT)
    services.reservation_move(
        reservation_id=booking.pk, actor=owner, start=NEXT_SLOT + 2 * SLOT, slots=2, now=timezone.now()
    )

    assert sequence() == {after_cancel + 1} and after_cancel > before  # the master and the override alike


def test_the_window_bounds_the_series_and_its_overrides(cluster, owner, frozen):
    old = nightly(owner, cluster["node1"][:1], rule="FREQ=DAILY;COUNT=2")
    weekly = nightly(owner, cluster["node1"][1:2], rule="FREQ=WEEKLY;COUNT=8")
    first = Reservation.objects.get(series=weekly, occurrence=NEXT_SLOT + 4 * SLOT)
    services.reservation_move(
        reservation_id=first.pk, actor=owner, start=NEXT_SLOT + 2 * SLOT, slots=2, now=timezone.now()
    )
    assert len(vevents(feed(owner), weekly)) == 2

    for days in range(5, 41, 5):  # beat books each week as the horizon reaches it
        frozen.move_to(FROZEN_NOW + days * DAY)
        series_extend()
    content = feed(owner)

    # Both nights of the daily series ended more than 30 days ago: it is gone. The weekly one is
    # still going; its first week is older than the window: shown as the rule put it, unmoved.
    assert vevents(content, old) == []
    assert len(vevents(content, weekly)) == 1
    got = shown(content, weekly, FROZEN_NOW - DAY, FROZEN_NOW + 60 * DAY)
    assert got[0][0] == NEXT_SLOT + 4 * SLOT
    window_start = timezone.now() - timedelta(days=30)
    assert [g for g in got if g[1] > window_start] == [b for b in live_bookings(weekly) if b[1] > window_start]
    assert len(got) == 8


def test_the_feed_asks_the_same_number_of_queries_however_many_series_and_occurrences(cluster, owner, settings):
    settings.BOOKING_HORIZON_DAYS = 6
    nightly(owner, cluster["node1"][:1], rule="FREQ=DAILY;COUNT=2")
    token = web_services.calendar_feed_for(user=owner).token
    url = reverse("web:ical", args=[token])
    Client().get(url)
    with CaptureQueriesContext(connection) as one:
        Client().get(url)
    nightly(owner, cluster["node1"][1:3], rule="FREQ=DAILY;COUNT=5", tz="Europe/Berlin")
    nightly(owner, [], gpu_count=1, rule="FREQ=WEEKLY;BYDAY=MO,WE;COUNT=9", title="count")
    moved = nightly(owner, cluster["node2"][:1], rule="FREQ=DAILY;COUNT=4")
    booking = Reservation.objects.filter(series=moved).order_by("start").first()
    services.reservation_move(reservation_id=booking.pk, actor=owner, start=NEXT_SLOT, slots=2, now=timezone.now())
    series_cancel(series_id=moved.pk, actor=owner, scope="one", occurrence=booking.occurrence + DAY)

    with CaptureQueriesContext(connection) as many:
        content = Client().get(url).content

    assert len(Calendar.from_ical(content).walk("VEVENT")) > 5
    assert len(many) == len(one)


def test_an_occurrence_beat_never_booked_is_not_shown_once_its_time_has_come(cluster, owner, frozen, settings):
    settings.BOOKING_HORIZON_DAYS = 2
    series = nightly(owner, cluster["node1"][:1], rule="FREQ=DAILY;COUNT=6")  # two nights booked
    frozen.move_to(FROZEN_NOW + 3 * DAY)  # beat did not run meanwhile: the third night passed unbooked
    series_extend()

    content = feed(owner)

    last = NEXT_SLOT + 4 * SLOT + 5 * DAY  # beyond the horizon: shown as the rule says
    assert len(live_bookings(series)) == 4
    assert shown(content, series, FROZEN_NOW, FROZEN_NOW + 30 * DAY) == live_bookings(series) + [
        (last, last + 2 * SLOT, "nightly fine-tune")
    ]


def test_a_preempted_occurrence_shows_what_it_held_and_its_rebooked_rest_is_an_event_of_its_own(
    cluster, owner, high_booker, frozen
):
    gpus = cluster["node1"][:1]
    series = nightly(owner, gpus, start=NEXT_SLOT, slots=3, priority="low", title="research")
    frozen.move_to(NEXT_SLOT + timedelta(minutes=20))
    services.reservations_advance()  # the first night begins
    services.reservation_create(
        user=high_booker, gpu_ids=[gpus[0].pk], start=NEXT_SLOT + SLOT, slots=1, priority="high", now=timezone.now()
    )
    frozen.move_to(NEXT_SLOT + SLOT + timedelta(seconds=1))
    services.reservations_reclaim_due()
    victim = Reservation.objects.get(series=series, occurrence=NEXT_SLOT, rebook_of=None)
    assert victim.status == Status.PREEMPTED and victim.end == NEXT_SLOT + SLOT  # cut where it was reclaimed
    rebook = Reservation.objects.get(rebook_of=victim)
    assert rebook.series == series and rebook.occurrence == NEXT_SLOT

    content = feed(owner)

    override = next(e for e in vevents(content, series) if "recurrence-id" in e)
    assert override.decoded("recurrence-id") == NEXT_SLOT
    assert (override.decoded("dtstart"), override.decoded("dtend")) == (victim.start, victim.end)
    assert str(override["description"]).splitlines()[-1] == "Status: Preempted"
    rebook_uid = f"reservation-{rebook.pk}@testserver"
    alone = [e for e in Calendar.from_ical(content).walk("VEVENT") if str(e["uid"]) == rebook_uid]
    assert len(alone) == 1 and alone[0].decoded("dtstart") == rebook.start
    assert shown(content, series, FROZEN_NOW, FROZEN_NOW + 10 * DAY) == live_bookings(series)


def test_a_series_stays_one_event_after_the_most_occurrences_is_lowered(cluster, owner, settings):
    series = nightly(owner, cluster["node1"][:1])
    settings.SERIES_MAX_OCCURRENCES = 2  # lowered since: new series may have 2, this one keeps its 3

    content = feed(owner)

    assert len(vevents(content, series)) >= 1
    assert shown(content, series, FROZEN_NOW, FROZEN_NOW + 10 * DAY) == live_bookings(series)
