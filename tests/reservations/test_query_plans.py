"""The hot reads use their indexes over their window, never the history (PostgreSQL's plans, with
enough history that the planner would otherwise scan it): the conflict check every booking makes,
the unread-notices banner on every page, a person's bookings, the series of a calendar feed."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from reservations import selectors
from reservations.models import Allocation, Notice, Reservation, Series
from reservations.selectors.availability import overlap_check_sql

from ..support import make_user

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
HISTORY = 4000


def plan(queryset):
    """The plan PostgreSQL would run `queryset` with, after ANALYZE, as one flat list of nodes."""
    return plan_of(*queryset.query.sql_with_params())


def plan_of(sql, params):
    """The plan PostgreSQL would run the statement `sql` with, after ANALYZE, as one flat list of nodes."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE reservations_reservation; ANALYZE reservations_allocation; ANALYZE reservations_notice")
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        root = cursor.fetchone()[0]
    root = json.loads(root) if isinstance(root, str) else root
    nodes, todo = [], [root[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo += node.get("Plans", [])
    return nodes


def index_nodes(nodes, index):
    return [n for n in nodes if n.get("Index Name") == index]


@pytest.fixture
def history(cluster, team):
    """A GPU's and a person's years of history: HISTORY past bookings of two hours back to back on
    node1/gpu0, each with a read notice; and two unread notices."""
    user = make_user("veteran", team)
    gpu = cluster["node1"][0]
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    first = now - timedelta(hours=2 * HISTORY)
    bookings = Reservation.objects.bulk_create(
        Reservation(user=user, team=team, start=first + timedelta(hours=2 * i), end=first + timedelta(hours=2 * i + 2),
                    status=Reservation.Status.COMPLETED, gpu_count=1)
        for i in range(HISTORY)
    )
    Allocation.objects.bulk_create(Allocation(reservation=r, gpu=gpu, start=r.start, end=r.end) for r in bookings)
    Notice.objects.bulk_create(
        Notice(user=user, kind=Notice.Kind.SLOT_ENDING, reservation=r, message="old", read_at=r.end) for r in bookings
    )
    Notice.objects.bulk_create(Notice(user=user, kind=Notice.Kind.SLOT_ENDING, message="new") for _ in range(2))
    return user, gpu, now


@pytest.mark.parametrize("check", ["orm", "booking"])
def test_the_conflict_check_reads_only_the_window_of_the_gpus_history(history, check):
    user, gpu, now = history
    window = ([gpu.pk], now, now + timedelta(hours=2))
    # The ORM's query (conflict lists, moves, the waitlist) and the booking's SQL written out.
    nodes = plan(selectors.overlapping_allocations(*window)) if check == "orm" else plan_of(*overlap_check_sql(*window))

    scans = index_nodes(nodes, "allocation_gpu_range")
    assert scans, nodes
    # Both ends of the window bound the index range: the GPU's older allocations are never read.
    condition = scans[0].get("Index Cond", "")
    assert "start >" in condition.replace('"', "") and "start <" in condition.replace('"', ""), condition
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "reservations_allocation"]


def test_the_unread_notices_banner_never_reads_the_read_ones(history):
    user, _, _ = history
    nodes = plan(selectors.notices_unread(user).order_by("-created")[:1])

    assert index_nodes(nodes, "notice_unread"), nodes


def test_a_persons_past_bookings_are_read_a_page_at_a_time_by_user_and_start(history):
    user, _, now = history
    nodes = plan(selectors.reservations_past(user, now=now)[:20])

    # In start order from an index: the person's (user, start), or here, where the person made every
    # booking, every booking's (start, id) read backwards is as good; never all of them sorted.
    in_order = index_nodes(nodes, "reservation_user_start") + index_nodes(nodes, "reservation_start_id")
    assert in_order, [(n["Node Type"], n.get("Index Name")) for n in nodes]
    assert not [n for n in nodes if n["Node Type"] == "Sort"]
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "reservations_reservation"]


@pytest.mark.parametrize("whose", ["user", "team"])
def test_a_calendar_feed_reads_the_series_of_its_window_not_every_series_ever(team, whose):
    user = make_user("planner", team)
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    first = now - timedelta(hours=2 * HISTORY)
    Series.objects.bulk_create(
        Series(user=user, team=team, rule="FREQ=DAILY;COUNT=1", first_start=first + timedelta(hours=2 * i),
               booked_through=first + timedelta(hours=2 * i), last_start=first + timedelta(hours=2 * i), gpu_count=1,
               slots=1)
        for i in range(HISTORY)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE reservations_series")
    window = {"start": now - timedelta(days=30), "end": now + timedelta(days=28)}
    whom = {"user": user} if whose == "user" else {"team": team}

    nodes = plan(selectors.calendar_feed_series(**window, **whom))

    # Each index range is bounded by booked_through (after the window's reach, or not set yet).
    scans = index_nodes(nodes, f"series_{whose}_booked_through")
    conditions = [n.get("Index Cond", "").replace('"', "") for n in scans]
    assert any("booked_through >" in c for c in conditions), nodes
    assert all("booked_through" in c for c in conditions), conditions
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "reservations_series"]
