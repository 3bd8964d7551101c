"""The staff usage report, in the API and on its page, from one day built through the booking
services (times frozen, 2030-01-07 UTC, slots of two hours): two teams, bookings with and without
training that ran part of their window, a cancellation 3 h before its start, a preemption, a
waitlist promotion."""

from datetime import datetime, timezone as dt_timezone

import pytest
from django.test import Client

from reservations import selectors, services
from reservations.errors import BookingError
from trainer.models import TrainingJob

from ..support import book, client_for, job_ran, page_client, text_of

URL = "/api/v1/reports/usage/"
PAGE = "/reports/usage/"
DAY = "start=2030-01-07T00:00:00Z&end=2030-01-08T00:00:00Z"


def at(hour, minute=0):
    return datetime(2030, 1, 7, hour, minute, tzinfo=dt_timezone.utc)


@pytest.fixture
def day(cluster, owner, teammate, outsider, high_booker, frozen):
    """Vision (owner, teammate, high_booker) and Language (outsider) through one day; the clock ends
    at 18:00."""
    n1, n2 = cluster["node1"], cluster["node2"]
    # Vision: 2 GPUs 10:00-16:00, trained 11:00-12:30, the unused slot given back at 12:30.
    trained = book(owner, n1[:2], start=at(10), slots=3, title="trained")
    # Vision: 1 GPU 10:00-12:00 with nothing run (a no-show).
    book(owner, n1[2:3], start=at(10), title="idle")
    # Language: 1 GPU 14:00-16:00, cancelled at 11:00, three hours before its start.
    cancelled = book(outsider, n2[:1], start=at(14), title="dropped")
    # Language: a low-priority 12:00-16:00 that Vision's high-priority 14:00 preempts.
    victim = book(outsider, n2[1:2], start=at(12), slots=2, priority="low", auto_rebook=False, title="victim")

    frozen.move_to(at(9, 30))
    taken = book(teammate, n2[2:3], start=at(16), title="given up")
    waiting = book(outsider, n2[2:3], start=at(16), waitlist=True, title="waiting")
    assert waiting.status == "waitlisted"

    frozen.move_to(at(10, 30))
    services.reservation_cancel(reservation_id=taken.pk, actor=teammate, reason="Not needed.")
    services.waitlist_promote(now=at(10, 30))

    frozen.move_to(at(11))
    services.reservation_cancel(reservation_id=cancelled.pk, actor=outsider, reason="Plans changed.")
    job_ran(trained, at(11), at(12, 30))

    frozen.move_to(at(12, 30))
    assert services.reservation_release_early(reservation_id=trained.pk, reason="Job finished.", now=at(12, 30))

    frozen.move_to(at(13))
    job = job_ran(victim, at(12, 10), status="running")
    preemptor = book(high_booker, n2[1:2], start=at(14), priority="high", title="urgent")
    TrainingJob.objects.filter(pk=job.pk).update(status="interrupted", ended_at=at(14, 5))

    frozen.move_to(at(14, 30))
    job_ran(preemptor, at(14, 30), status="running")  # still running: counted up to now, within its window
    frozen.move_to(at(18))


EXPECTED = [
    {
        "team": "nlp", "team_name": "Language", "colour": "#4e79a7", "quota_gpu_hours_per_week": None,
        # The preempted 12:00-14:00 and the promoted 16:00-18:00, one GPU each.
        "bookings": 2, "booked_gpu_hours": 4.0, "borrowed_gpu_hours": 0.0,
        # Training 12:10 until 14:05, counted within the booking's window: 1 h 50 min.
        "used_gpu_hours": 1.83,
        "no_shows": 1,  # the promoted request ran nothing
        "cancellations": 1, "cancel_lead_hours_median": 3.0, "cancel_lead_hours_avg": 3.0,
        "early_releases": 0, "preemptions_suffered": 1, "preemptions_caused": 0,
        "waitlist_promotions": 1, "waitlist_wait_hours_median": 1.0, "waitlist_wait_hours_max": 1.0,
    },
    {
        "team": "vision", "team_name": "Vision", "colour": "#4e79a7", "quota_gpu_hours_per_week": None,
        # 2 GPUs 10:00-14:00 after the release, 1 GPU 10:00-12:00, 1 GPU 14:00-16:00.
        "bookings": 3, "booked_gpu_hours": 12.0, "borrowed_gpu_hours": 0.0,
        # 2 GPUs 11:00-12:30, and 1 GPU from 14:30 to its booking's end at 16:00.
        "used_gpu_hours": 4.5,
        "no_shows": 1,
        # The teammate's cancellation at 10:30 of a booking starting at 16:00.
        "cancellations": 1, "cancel_lead_hours_median": 5.5, "cancel_lead_hours_avg": 5.5,
        "early_releases": 1, "preemptions_suffered": 0, "preemptions_caused": 1,
        "waitlist_promotions": 0, "waitlist_wait_hours_median": None, "waitlist_wait_hours_max": None,
    },
]


def test_the_api_reports_each_teams_booked_and_used_hours_and_events_exactly(day, staff):
    response = client_for(staff).get(f"{URL}?{DAY}")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["start"], body["end"]) == ("2030-01-07T00:00:00Z", "2030-01-08T00:00:00Z")
    assert body["teams"] == EXPECTED


def test_the_report_shows_each_teams_quota_and_the_hours_it_borrowed_over_it(
    cluster, team, owner, outsider, staff, frozen
):
    n1, n2 = cluster["node1"], cluster["node2"]
    services.team_quota_set(team=team, actor=staff, gpu_hours_per_week=4, max_gpus=2)
    book(owner, n1[:2], start=at(10))  # 4 GPU-hours: the week's quota
    borrowed = book(owner, n1[2:3], start=at(12), slots=2, borrow=True)  # 4 more, over it
    book(outsider, n2[:1], start=at(10))
    assert borrowed.borrowed
    frozen.move_to(at(18))

    teams = {row["team"]: row for row in client_for(staff).get(f"{URL}?{DAY}").json()["teams"]}
    text = text_of(page_client(staff, zone="UTC").get(f"{PAGE}?start=2030-01-07&end=2030-01-07"))

    assert [teams["vision"][key] for key in ("quota_gpu_hours_per_week", "booked_gpu_hours", "borrowed_gpu_hours")] == [4, 8.0, 4.0]
    assert [teams["nlp"][key] for key in ("quota_gpu_hours_per_week", "booked_gpu_hours", "borrowed_gpu_hours")] == [None, 2.0, 0.0]
    assert "Vision 4 2 8.00 4.00 0.00 0 %" in text
    assert "Language unlimited 1 2.00 0.00 0.00 0 %" in text


def test_the_report_reads_a_handful_of_queries_whatever_the_number_of_bookings(
    day, staff, django_assert_max_num_queries
):
    client = client_for(staff)
    with django_assert_max_num_queries(10):
        assert client.get(f"{URL}?{DAY}").status_code == 200


def test_the_default_period_is_the_last_30_days(day, staff):
    body = client_for(staff).get(URL).json()

    assert (body["start"], body["end"]) == ("2029-12-08T18:00:00Z", "2030-01-07T18:00:00Z")
    assert [t["booked_gpu_hours"] for t in body["teams"]] == [4.0, 12.0]


def test_a_period_outside_the_bookings_reports_no_team(day, staff):
    body = client_for(staff).get(f"{URL}?start=2030-02-01T00:00:00Z&end=2030-02-02T00:00:00Z").json()

    assert body["teams"] == []


@pytest.mark.parametrize(
    "query, field",
    [
        ("start=yesterday", "start"),
        ("end=2030-01-07T10:00:00", "end"),  # no offset
        ("start=2030-01-08T00:00:00Z&end=2030-01-07T00:00:00Z", "end"),
        ("start=2029-01-01T00:00:00Z&end=2030-01-07T00:00:00Z", "end"),  # over 366 days
        ("team=vision", "team"),
        ("end=0001-01-01T00:00:00Z", "end"),
        ("start=9999-12-31T00:00:00Z", "start"),
    ],
)
def test_bad_dates_are_a_400_naming_the_field(db, staff, frozen, query, field):
    response = client_for(staff).get(f"{URL}?{query}")

    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_only_staff_may_read_the_report(db, owner, frozen):
    assert client_for(owner).get(URL).status_code == 403
    assert page_client(owner).get(PAGE).status_code == 403
    assert Client().get(URL).status_code == 401
    assert Client().get(PAGE)["Location"].startswith("/login/?next=/reports/usage/")


def test_the_page_shows_the_same_numbers_in_its_table_and_chart_data(day, staff):
    response = page_client(staff, zone="UTC").get(f"{PAGE}?start=2030-01-07&end=2030-01-07")

    assert response.status_code == 200
    text = text_of(response)
    assert "From Mon 7 Jan 2030, 00:00 to Tue 8 Jan 2030, 00:00 (UTC)" in text
    # Team, quota, bookings, booked, borrowed, used, used %, no-shows, cancellations, lead, releases,
    # preempted, preempted others, promoted, wait.
    assert "Language unlimited 2 4.00 0.00 1.83 46 % 1 1 3.00 / 3.00 0 1 0 1 1.00 / 1.00" in text
    assert "Vision unlimited 3 12.00 0.00 4.50 38 % 1 1 5.50 / 5.50 1 0 1 0 –" in text
    assert response.context["chart"] == {"teams": ["Language", "Vision"], "booked": [4.0, 12.0], "used": [1.83, 4.5]}
    page = response.content.decode()
    assert '<script id="usage-data" type="application/json">' in page
    assert 'src="/static/js/report.js"' in page and "<script>" not in page


def test_the_page_reads_whole_days_in_the_viewers_zone(day, staff):
    response = page_client(staff, zone="Europe/Berlin").get(f"{PAGE}?start=2030-01-07&end=2030-01-07")

    assert "From Mon 7 Jan 2030, 00:00 to Tue 8 Jan 2030, 00:00 (Europe/Berlin)" in text_of(response)
    utc = dt_timezone.utc
    assert response.context["period"] == (datetime(2030, 1, 6, 23, tzinfo=utc), datetime(2030, 1, 7, 23, tzinfo=utc))


@pytest.mark.parametrize(
    "query, message",
    [
        ("start=2030-13-01", "From: Enter a valid date."),
        ("start=2030-01-08&end=2030-01-07", "To (included): The end must come after the start."),
        ("start=2028-01-01&end=2030-01-07", "To (included): Ask for at most 366 days at a time."),
        # Python's dates end at years 1 and 9999: the default 30 days before 0001-01-01 overflowed.
        ("end=0001-01-01", "To (included): Give a date between the years 1000 and 9000."),
        ("end=9999-12-31", "To (included): Give a date between the years 1000 and 9000."),
        ("start=0001-01-01", "From: Give a date between the years 1000 and 9000."),
    ],
)
def test_a_bad_period_on_the_page_is_a_400_naming_the_field(db, staff, frozen, query, message):
    response = page_client(staff).get(f"{PAGE}?{query}")

    assert response.status_code == 400
    assert message in text_of(response)


def test_a_period_the_calendar_cannot_hold_is_refused_naming_the_end():
    with pytest.raises(BookingError) as caught:
        selectors.usage_period(end=datetime(1, 1, 2, tzinfo=dt_timezone.utc), now=at(12))

    assert caught.value.field == "end"


def test_staff_see_the_report_in_the_navigation_and_others_do_not(db, staff, owner, frozen):
    assert 'href="/reports/usage/"' in page_client(staff).get("/notices/").content.decode()
    assert 'href="/reports/usage/"' not in page_client(owner).get("/notices/").content.decode()
