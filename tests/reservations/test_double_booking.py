"""No GPU is ever booked twice: racing requests through the real API against real PostgreSQL,
and the database's own constraint when code bypasses the service."""

from collections import Counter

import pytest
from django.db import IntegrityError, transaction

from reservations.models import Allocation, Reservation

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

    with pytest.raises(IntegrityError, match="allocation_no_overlap"), transaction.atomic():
        Allocation.objects.create(reservation=second, gpu=gpu, start=second.start, end=second.end, live=True)


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
