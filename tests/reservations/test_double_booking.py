"""No GPU is ever booked twice: racing requests through the real API against real PostgreSQL,
and the database's own constraint when code bypasses the service."""

import threading
from collections import Counter

import pytest
from django.db import IntegrityError, connection, connections, transaction

from reservations.models import Allocation, Reservation

from ..conftest import NEXT_SLOT, SLOT, client_for, iso, make_user

RACERS = 32


def overlapping_live_pairs():
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM reservations_allocation a JOIN reservations_allocation b
              ON a.gpu_id = b.gpu_id AND a.id < b.id AND a.live AND b.live
             AND a.start < b."end" AND b.start < a."end"
            """
        )
        return cursor.fetchone()[0]


def race(clients, body):
    """Fire one POST per client at the same instant; return the status codes."""
    barrier = threading.Barrier(len(clients))
    statuses = [None] * len(clients)

    def run(i, client):
        try:
            barrier.wait(timeout=30)
            statuses[i] = client.post("/api/v1/reservations/", body, format="json").status_code
        finally:
            connections.close_all()  # each thread has its own connection; give it back

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


@pytest.fixture
def racers(team, cluster):
    return [client_for(make_user(f"racer{i}", team)) for i in range(RACERS)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("frozen")
def test_32_racers_for_one_gpu_and_slot_exactly_one_wins_and_the_rest_get_409(racers, cluster):
    gpu = cluster["node1"][0]
    statuses = race(racers, {"gpus": [gpu.pk], "start": iso(NEXT_SLOT), "slots": 1})

    assert Counter(statuses) == {201: 1, 409: RACERS - 1}
    assert Reservation.objects.count() == 1
    assert overlapping_live_pairs() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("frozen")
def test_racers_with_overlapping_gangs_never_share_a_gpu(racers, cluster):
    # Gangs of two over four GPUs, all for the same two slots: at most two can win, never overlapping.
    gpus = [g.pk for g in cluster["node1"]]
    gangs = [[gpus[i % 4], gpus[(i + 1) % 4]] for i in range(RACERS)]
    barrier = threading.Barrier(RACERS)
    statuses = []
    lock = threading.Lock()

    def run(client, gang):
        try:
            barrier.wait(timeout=30)
            code = client.post(
                "/api/v1/reservations/", {"gpus": gang, "start": iso(NEXT_SLOT), "slots": 2}, format="json"
            ).status_code
            with lock:
                statuses.append(code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(c, g)) for c, g in zip(racers, gangs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    counts = Counter(statuses)
    assert set(counts) <= {201, 409} and sum(counts.values()) == RACERS
    assert 1 <= counts[201] <= 2
    assert overlapping_live_pairs() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("frozen")
def test_racers_by_gpu_count_fill_the_cluster_without_overlap(racers, cluster):
    statuses = race(racers, {"gpu_count": 1, "start": iso(NEXT_SLOT), "slots": 1})

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
