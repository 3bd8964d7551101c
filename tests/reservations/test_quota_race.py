"""A team's quota holds under racing bookings: 32 bookings of one team at the same instant, through
the real API against real PostgreSQL, each on a GPU and window of its own (so GPU conflicts never
stop them; only the quota can). What they book is summed here in SQL, not by the app's own counting."""

from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.db import connection

from reservations.services.quota import team_quota_set  # not (yet) among the package's names
from reservations.models import Reservation

from ..support import NEXT_SLOT, RESERVATIONS_URL, SLOT, client_for, iso, make_user, overlapping_live_pairs, race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("frozen")]
RACERS = 32


def racers_of(team, count, prefix):
    return [client_for(make_user(f"{prefix}{i}", team)) for i in range(count)]


def own_windows(cluster, count, slots=1, stagger=False):
    """`count` bodies, each on a GPU and window no other uses: GPU i % 8, the (i // 8)th window of
    `slots` slots on it (on odd GPUs one slot later with `stagger`, so windows on different GPUs
    overlap each other in every way), all on Monday 2030-01-07 (one quota week)."""
    gpus = [g.pk for g in cluster["node1"] + cluster["node2"]]
    bodies = []
    for i in range(count):
        index, nth = i % len(gpus), i // len(gpus)
        start = NEXT_SLOT + nth * slots * SLOT + (SLOT if stagger and index % 2 else timedelta(0))
        bodies.append({"gpus": [gpus[index]], "start": iso(start), "slots": slots})
    return bodies


def in_quota_gpu_hours(team, borrowed=False):
    """GPU-hours of the team's confirmed bookings, in quota (or borrowed), summed by the database."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT coalesce(sum(gpu_count * extract(epoch FROM "end" - start)), 0) / 3600
              FROM reservations_reservation WHERE team_id = %s AND status = 'confirmed' AND borrowed = %s
            """,
            [team.pk, borrowed],
        )
        return float(cursor.fetchone()[0])


def most_gpus_at_once(team):
    """The most GPUs the team's confirmed in-quota bookings hold at any moment (the count only rises
    at a booking's start, so those are the moments to look at), by the database."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT coalesce(max(held), 0) FROM (
              SELECT (SELECT sum(b.gpu_count) FROM reservations_reservation b
                       WHERE b.team_id = a.team_id AND b.status = 'confirmed' AND NOT b.borrowed
                         AND b.start <= a.start AND a.start < b."end") AS held
                FROM reservations_reservation a WHERE a.team_id = %s AND a.status = 'confirmed' AND NOT a.borrowed
            ) moments
            """,
            [team.pk],
        )
        return cursor.fetchone()[0]


def quota_refusals(responses):
    return [r.json()["quota"] for r in responses if r.status_code == 409 and r.json().get("code") == "quota_exceeded"]


def test_32_racers_of_one_team_book_exactly_the_gpu_hours_its_weekly_quota_allows(team, cluster, staff):
    # 20 GPU-hours a week; each racer asks for one GPU for one two-hour slot: ten fit.
    team_quota_set(team=team, actor=staff, gpu_hours_per_week=20)
    responses = race(racers_of(team, RACERS, "racer"), own_windows(cluster, RACERS))

    assert Counter(r.status_code for r in responses) == {201: 10, 409: RACERS - 10}
    refusals = quota_refusals(responses)
    assert len(refusals) == RACERS - 10
    assert {(q["limit"], q["allowed"], q["week"]) for q in refusals} == {("gpu_hours_per_week", 20, "2030-W02")}
    assert in_quota_gpu_hours(team) == 20
    assert not Reservation.objects.filter(borrowed=True).exists()
    assert overlapping_live_pairs() == 0


def test_32_racers_of_one_team_never_hold_more_gpus_at_once_than_its_quota(team, cluster, staff):
    # At most three GPUs at once, no weekly limit; four two-slot windows a GPU, staggered by a slot
    # between GPUs, so the windows overlap in every way and the limit is what decides.
    team_quota_set(team=team, actor=staff, max_gpus=3)
    bodies = own_windows(cluster, RACERS, slots=2, stagger=True)
    responses = race(racers_of(team, RACERS, "racer"), bodies)

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) == {201, 409} and len(quota_refusals(responses)) == statuses[409]
    assert {q["limit"] for q in quota_refusals(responses)} == {"max_gpus"}
    assert most_gpus_at_once(team) <= 3
    # Nothing was refused that would still fit beside what got booked (bookings only get added, so
    # what was in the way of a refused one then is still there now).
    booked = [(b.start, b.end) for b in Reservation.objects.filter(team=team, status="confirmed")]
    for response, body in zip(responses, bodies):
        if response.status_code == 409:
            at = datetime.fromisoformat(response.json()["quota"]["at"])
            assert sum(1 for start, end in booked if start <= at < end) == 3, (body, at)
    assert overlapping_live_pairs() == 0


def test_32_racers_borrowing_over_the_quota_book_exactly_what_the_borrow_limit_allows(team, cluster, staff, owner):
    # The team's four in-quota GPU-hours are used up; 10 borrowed GPU-hours a week: five of the
    # two-hour borrowed bookings fit, the rest are refused naming the borrow limit.
    team_quota_set(team=team, actor=staff, gpu_hours_per_week=4, borrow_gpu_hours_per_week=10)
    gpu = cluster["node2"][3]
    for start in (NEXT_SLOT + 10 * SLOT, NEXT_SLOT + 11 * SLOT):
        response = client_for(owner).post(RESERVATIONS_URL, {"gpus": [gpu.pk], "start": iso(start), "slots": 1}, format="json")
        assert response.status_code == 201, response.content
    assert in_quota_gpu_hours(team) == 4

    bodies = [dict(body, borrow=True) for body in own_windows(cluster, RACERS)]
    responses = race(racers_of(team, RACERS, "borrower"), bodies)

    assert Counter(r.status_code for r in responses) == {201: 5, 409: RACERS - 5}
    assert all(r.json()["borrowed"] and r.json()["preemptible"] for r in responses if r.status_code == 201)
    refusals = quota_refusals(responses)
    assert len(refusals) == RACERS - 5
    assert {(q["limit"], q["borrowable"]) for q in refusals} == {("borrow_gpu_hours_per_week", False)}
    assert in_quota_gpu_hours(team, borrowed=True) == 10
    assert in_quota_gpu_hours(team) == 4
    assert overlapping_live_pairs() == 0


def test_a_team_without_a_quota_racing_beside_one_with_a_quota_books_everything(team, other_team, cluster, staff):
    # Sixteen racers of a team with 6 GPU-hours a week (three fit) and sixteen of a team with no
    # quota, at the same instant, on windows of their own: the unlimited team is refused nothing.
    team_quota_set(team=team, actor=staff, gpu_hours_per_week=6, max_gpus=2)
    bodies = own_windows(cluster, RACERS)
    limited, unlimited = racers_of(team, RACERS // 2, "limited"), racers_of(other_team, RACERS // 2, "free")
    responses = race(limited + unlimited, bodies[0::2] + bodies[1::2])

    assert Counter(r.status_code for r in responses[: RACERS // 2]) == {201: 3, 409: RACERS // 2 - 3}
    assert [r.status_code for r in responses[RACERS // 2 :]] == [201] * (RACERS // 2)
    assert in_quota_gpu_hours(team) == 6 and in_quota_gpu_hours(other_team) == 2 * RACERS // 2
    assert most_gpus_at_once(team) <= 2
    assert overlapping_live_pairs() == 0
