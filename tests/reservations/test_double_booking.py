"""No GPU is ever booked twice: racing requests through the real API, on PostgreSQL and on SQLite
(the SQLite lane), and the database's own rule when code bypasses the service (PostgreSQL's
exclusion constraint, SQLite's triggers)."""

from collections import Counter

import pytest
from django.db import IntegrityError, transaction

from reservations.models import Allocation, Reservation
from reservations.services.locks import is_overlap_violation

from ..support import NEXT_SLOT, SLOT, client_for, iso, make_user, overlapping_live_pairs, race

RACERS = 32


@pytest.fixture
def racers(team, cluster):
    return [client_for(make_user(f"racer{i}", team)) for i in range(RACERS)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("frozen")
def test_32_racers_for_one_gpu_and_slot_exactly_one_wins_and_the_rest_get_409(racers, cluster):
    gpu = cluster["node1"][0]
    statuses = [r.status_code for r in race(racers, {"gpus": [gpu.pk], "start": iso(NEXT_SLOT), "slots": 1})]

    assert Counter(statuses) == {201: 1, 409: RACERS - 1}
    assert Reservation.objects.count() == 1
    assert overlapping_live_pairs() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("frozen")
def test_racers_with_overlapping_gangs_never_share_a_gpu(racers, cluster):
    # Gangs of two over four GPUs, all for the same two slots: at most two can win, never overlapping.
    gpus = [g.pk for g in cluster["node1"]]
    gangs = [[gpus[i % 4], gpus[(i + 1) % 4]] for i in range(RACERS)]
    bodies = [{"gpus": gang, "start": iso(NEXT_SLOT), "slots": 2} for gang in gangs]

    statuses = [r.status_code for r in race(racers, bodies)]

    counts = Counter(statuses)
    assert set(counts) <= {201, 409} and sum(counts.values()) == RACERS
    assert 1 <= counts[201] <= 2
    assert overlapping_live_pairs() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("frozen")
def test_racers_by_gpu_count_fill_the_cluster_without_overlap(racers, cluster):
    statuses = [r.status_code for r in race(racers, {"gpu_count": 1, "start": iso(NEXT_SLOT), "slots": 1})]

    assert Counter(statuses) == {201: 8, 409: RACERS - 8}
    assert overlapping_live_pairs() == 0


@pytest.mark.django_db
def test_the_database_refuses_an_overlapping_live_allocation(cluster, owner, team):
    gpu = cluster["node1"][0]
    first = Reservation.objects.create(user=owner, team=team, start=NEXT_SLOT, end=NEXT_SLOT + 2 * SLOT, gpu_count=1)
    second = Reservation.objects.create(user=owner, team=team, start=NEXT_SLOT + SLOT, end=NEXT_SLOT + 3 * SLOT, gpu_count=1)
    Allocation.objects.create(reservation=first, gpu=gpu, start=first.start, end=first.end, live=True)

    with pytest.raises(IntegrityError, match="allocation_no_overlap") as raised, transaction.atomic():
        Allocation.objects.create(reservation=second, gpu=gpu, start=second.start, end=second.end, live=True)
    # What the booking services read as "taken" (a race the locks did not cover), not as a failure.
    assert is_overlap_violation(raised.value)


@pytest.mark.django_db
def test_the_database_refuses_a_change_that_makes_live_allocations_overlap(cluster, owner, team):
    gpu, other_gpu = cluster["node1"][:2]
    first, second, third = (
        Reservation.objects.create(user=owner, team=team, start=NEXT_SLOT, end=NEXT_SLOT + SLOT, gpu_count=1)
        for _ in range(3)
    )
    Allocation.objects.create(reservation=first, gpu=gpu, start=first.start, end=first.end, live=True)
    moved = Allocation.objects.create(reservation=second, gpu=other_gpu, start=second.start, end=second.end, live=True)
    revived = Allocation.objects.create(reservation=third, gpu=gpu, start=third.start, end=third.end, live=False)

    for change in ({"gpu": gpu}, {"live": True}):
        target = moved if "gpu" in change else revived
        with pytest.raises(IntegrityError, match="allocation_no_overlap"), transaction.atomic():
            Allocation.objects.filter(pk=target.pk).update(**change)


@pytest.mark.django_db
def test_the_database_allows_a_live_allocation_that_starts_as_another_ends(cluster, owner, team):
    gpu = cluster["node1"][0]
    first = Reservation.objects.create(user=owner, team=team, start=NEXT_SLOT, end=NEXT_SLOT + SLOT, gpu_count=1)
    second = Reservation.objects.create(user=owner, team=team, start=NEXT_SLOT + SLOT, end=NEXT_SLOT + 2 * SLOT, gpu_count=1)
    Allocation.objects.create(reservation=first, gpu=gpu, start=first.start, end=first.end, live=True)

    Allocation.objects.create(reservation=second, gpu=gpu, start=second.start, end=second.end, live=True)

    assert Allocation.objects.filter(gpu=gpu, live=True).count() == 2


@pytest.mark.django_db
def test_the_database_allows_overlap_with_a_dead_allocation(cluster, owner, team):
    gpu = cluster["node1"][0]
    first = Reservation.objects.create(user=owner, team=team, start=NEXT_SLOT, end=NEXT_SLOT + SLOT, gpu_count=1)
    second = Reservation.objects.create(user=owner, team=team, start=NEXT_SLOT, end=NEXT_SLOT + SLOT, gpu_count=1)
    Allocation.objects.create(reservation=first, gpu=gpu, start=first.start, end=first.end, live=False)

    Allocation.objects.create(reservation=second, gpu=gpu, start=second.start, end=second.end, live=True)

    assert Allocation.objects.filter(gpu=gpu).count() == 2


@pytest.mark.django_db
def test_the_database_refuses_an_end_before_the_start(cluster, owner, team):
    with pytest.raises(IntegrityError, match="reservation_start_before_end"), transaction.atomic():
        Reservation.objects.create(user=owner, team=team, start=NEXT_SLOT, end=NEXT_SLOT, gpu_count=1)
