"""The teams endpoints: where each of the caller's teams stands against its quota this week, and a
team's quota week day by day. One week built through the booking services (times frozen; quota weeks
start Monday 00:00 UTC, so 2030-01-07 starts week 2030-W02; slots of two hours)."""

from datetime import datetime, timezone as dt_timezone

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from reservations import services
from reservations.models import Team

from ..support import book, client_for, job_ran, make_user

URL = "/api/v1/teams/"


def at(day, hour, minute=0):
    return datetime(2030, 1, day, hour, minute, tzinfo=dt_timezone.utc)


@pytest.fixture
def week(cluster, team, owner, outsider, staff, frozen):
    """Vision (quota: 12 GPU-hours a week, weight 2) through week 2030-W02, the clock ending on
    Wednesday 11:00; Language (no quota) with one booking."""
    n1, n2 = cluster["node1"], cluster["node2"]
    services.team_quota_set(team=team, actor=staff, gpu_hours_per_week=12, weight=2)
    # Monday 10:00-12:00 on 2 GPUs, cancelled at 11:00 once begun: it counts up to then (2 GPU-hours).
    cancelled = book(owner, n1[:2], start=at(7, 10))
    # Tuesday 10:00-14:00 on 1 GPU (4), trained 10:30-12:00.
    trained = book(owner, n1[:1], start=at(8, 10), slots=2)
    # Sunday 22:00 to Monday 02:00: 2 GPU-hours in this week, 2 in the next.
    book(owner, n1[:1], start=at(13, 22), slots=2)
    # Wednesday 10:00-12:00 on 1 GPU: the last 2 GPU-hours of the quota (4 + 4 + 2 + 2 = 12).
    book(owner, n1[2:3], start=at(9, 10))
    # Wednesday 10:00-12:00 on 2 GPUs, over the quota: borrowed (4), training from 10:00.
    borrowed = book(owner, n1[:2], start=at(9, 10), borrow=True)
    assert borrowed.borrowed
    book(outsider, n2[:1], start=at(7, 10))

    frozen.move_to(at(7, 11))
    services.reservation_cancel(reservation_id=cancelled.pk, actor=owner, reason="Not needed after all.")
    frozen.move_to(at(8, 12))
    job_ran(trained, at(8, 10, 30), at(8, 12))
    frozen.move_to(at(9, 10))
    job_ran(borrowed, at(9, 10), status="running")
    frozen.move_to(at(9, 11))


VISION = {
    "slug": "vision", "name": "Vision", "colour": "#4e79a7",
    "quota": {"gpu_hours_per_week": 12, "max_gpus": None, "weight": 2, "borrow_gpu_hours_per_week": None},
    "this_week": {
        "week": "2030-W02", "start": "2030-01-07T00:00:00Z", "end": "2030-01-14T00:00:00Z",
        # 2 (cancelled) + 4 + 2 (Sunday's part) + 2; the borrowed 4 apart.
        "booked_gpu_hours": 10.0, "borrowed_gpu_hours": 4.0, "remaining_gpu_hours": 2.0,
        # Wednesday 11:00: the in-quota booking's GPU (the borrowed two do not count).
        "gpus_now": 1,
    },
}
LANGUAGE = {
    "slug": "nlp", "name": "Language", "colour": "#4e79a7", "quota": None,
    "this_week": {
        "week": "2030-W02", "start": "2030-01-07T00:00:00Z", "end": "2030-01-14T00:00:00Z",
        "booked_gpu_hours": 2.0, "borrowed_gpu_hours": 0.0, "remaining_gpu_hours": None, "gpus_now": 0,
    },
}


def test_a_member_lists_their_teams_with_the_quota_and_this_weeks_standing(week, owner):
    response = client_for(owner).get(URL)

    assert response.status_code == 200, response.content
    assert response.json()["results"] == [VISION]


def test_staff_list_every_team_by_name(week, staff):
    assert client_for(staff).get(URL).json()["results"] == [LANGUAGE, VISION]


def test_a_person_in_no_team_lists_none(week):
    assert client_for(make_user("loner")).get(URL).json()["results"] == []


def test_one_team_for_its_members_and_staff_only(week, owner, outsider, staff):
    assert client_for(owner).get(f"{URL}vision/").json() == VISION
    assert client_for(staff).get(f"{URL}vision/").json() == VISION
    # Another team's is no team at all: its name and quota are not the outsider's to learn.
    assert client_for(outsider).get(f"{URL}vision/").status_code == 404
    assert client_for(owner).get(f"{URL}no-such-team/").status_code == 404
    assert Client().get(f"{URL}vision/").status_code == 401
    assert Client().get(URL).status_code == 401


def test_the_list_costs_the_same_queries_whatever_the_number_of_teams(cluster, staff, frozen):
    client = client_for(staff)

    def queries_for_teams(count):
        for i in range(Team.objects.count(), count):
            team = Team.objects.create(name=f"Team {i}", slug=f"team-{i}")
            services.team_quota_set(team=team, actor=staff, gpu_hours_per_week=100)
            member = make_user(f"member-{i}", team)
            book(member, [cluster["node1"][i % 4]], start=at(7, 10 + 2 * (i // 4)))
        with CaptureQueriesContext(connection) as queries:
            response = client.get(URL)
        assert response.status_code == 200 and len(response.json()["results"]) == count
        return len(queries)

    assert queries_for_teams(1) == queries_for_teams(6)


DAYS = [
    # Monday: the cancelled booking up to its cancellation.
    {"start": "2030-01-07T00:00:00Z", "end": "2030-01-08T00:00:00Z",
     "booked_gpu_hours": 2.0, "borrowed_gpu_hours": 0.0, "used_gpu_hours": 0.0},
    # Tuesday: 4 booked, 1.5 trained.
    {"start": "2030-01-08T00:00:00Z", "end": "2030-01-09T00:00:00Z",
     "booked_gpu_hours": 4.0, "borrowed_gpu_hours": 0.0, "used_gpu_hours": 1.5},
    # Wednesday: 2 in quota, 4 borrowed, whose job has run an hour on 2 GPUs by 11:00.
    {"start": "2030-01-09T00:00:00Z", "end": "2030-01-10T00:00:00Z",
     "booked_gpu_hours": 2.0, "borrowed_gpu_hours": 4.0, "used_gpu_hours": 2.0},
    *[
        {"start": f"2030-01-{d:02d}T00:00:00Z", "end": f"2030-01-{d + 1:02d}T00:00:00Z",
         "booked_gpu_hours": 0.0, "borrowed_gpu_hours": 0.0, "used_gpu_hours": 0.0}
        for d in (10, 11, 12)
    ],
    # Sunday: 22:00 to midnight.
    {"start": "2030-01-13T00:00:00Z", "end": "2030-01-14T00:00:00Z",
     "booked_gpu_hours": 2.0, "borrowed_gpu_hours": 0.0, "used_gpu_hours": 0.0},
]


def test_a_teams_week_day_by_day_defaults_to_the_current_quota_week(week, owner):
    response = client_for(owner).get(f"{URL}vision/usage/")

    assert response.status_code == 200, response.content
    assert response.json() == {
        "team": "vision", "week": "2030-W02", "start": "2030-01-07T00:00:00Z", "end": "2030-01-14T00:00:00Z",
        "quota": VISION["quota"],
        "booked_gpu_hours": 10.0, "borrowed_gpu_hours": 4.0, "used_gpu_hours": 3.5, "remaining_gpu_hours": 2.0,
        "days": DAYS,
    }


def test_a_named_week_counts_only_what_falls_in_it(week, owner):
    body = client_for(owner).get(f"{URL}vision/usage/?week=2030-W03").json()

    assert (body["week"], body["start"]) == ("2030-W03", "2030-01-14T00:00:00Z")
    # The Sunday booking's last two hours, on the Monday.
    assert [day["booked_gpu_hours"] for day in body["days"]] == [2.0, 0, 0, 0, 0, 0, 0]
    assert (body["booked_gpu_hours"], body["remaining_gpu_hours"]) == (2.0, 10.0)


def test_a_week_with_nothing_in_it_is_all_zero(week, staff):
    body = client_for(staff).get(f"{URL}nlp/usage/?week=2029-W40").json()

    assert body["quota"] is None and body["remaining_gpu_hours"] is None
    assert {day["booked_gpu_hours"] + day["borrowed_gpu_hours"] + day["used_gpu_hours"] for day in body["days"]} == {0}
    assert len(body["days"]) == 7


def test_a_teams_week_is_for_its_members_and_staff_only(week, outsider, staff):
    assert client_for(outsider).get(f"{URL}vision/usage/").status_code == 404
    assert client_for(staff).get(f"{URL}vision/usage/").status_code == 200
    assert Client().get(f"{URL}vision/usage/").status_code == 401


def test_a_teams_week_reads_a_fixed_number_of_queries(week, owner, django_assert_max_num_queries):
    client = client_for(owner)
    with django_assert_max_num_queries(6):
        assert client.get(f"{URL}vision/usage/").status_code == 200


@pytest.mark.parametrize(
    "query, field",
    [
        ("week=yesterday", "week"),
        ("week=2030-W60", "week"),
        ("week=2025-W53", "week"),  # 2025 has 52 ISO weeks
        ("week=2030-W5", "week"),  # written as the API writes it: 2030-W05
        ("week=2030-w05", "week"),
        ("week=0001-W01", "week"),
        ("week=9999-W52", "week"),
        ("week=" + "9" * 50, "week"),
        ("team=vision", "team"),
    ],
)
def test_a_bad_week_is_a_400_naming_it(db, owner, frozen, query, field):
    response = client_for(owner).get(f"{URL}vision/usage/?{query}")

    assert response.status_code == 400, response.content
    assert list(response.json()) == [field]
