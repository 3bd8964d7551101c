"""The booking's conflict check (selectors.any_overlapping, SQL written out) answers as the ORM's
overlapping_allocations(...).exists() does: the overlap rule of policy.overlapping, live allocations
only, on the GPUs asked for."""

import pytest

from reservations import selectors, services

from ..support import NEXT_SLOT, SLOT, book

pytestmark = pytest.mark.usefixtures("frozen")


@pytest.fixture
def booked(cluster, owner):
    """gpu0 of node1 booked for [NEXT_SLOT, NEXT_SLOT + 2 slots); gpu1's booking there cancelled."""
    gpu0, gpu1 = cluster["node1"][:2]
    book(owner, [gpu0], start=NEXT_SLOT, slots=2)
    cancelled = book(owner, [gpu1], start=NEXT_SLOT, slots=2)
    services.reservation_cancel(reservation_id=cancelled.pk, actor=owner)
    return gpu0, gpu1, cluster["node1"][2]


START, END = NEXT_SLOT, NEXT_SLOT + 2 * SLOT


@pytest.mark.parametrize(
    "gpus, start, end, taken",
    [
        ("0", START, END, True),  # the same window
        ("0", START + SLOT, END + SLOT, True),  # overlapping its second half
        ("0", START - SLOT, START + SLOT, True),  # overlapping its first half
        ("0", START - SLOT, END + SLOT, True),  # around it
        ("0", START - SLOT, START, False),  # ending as it starts
        ("0", END, END + SLOT, False),  # starting as it ends
        ("1", START, END, False),  # a cancelled booking holds nothing
        ("2", START, END, False),  # another GPU
        ("12", START, END, False),
        ("120", START + SLOT, END, True),  # one of several
    ],
)
def test_it_answers_as_the_orm_query_does(booked, gpus, start, end, taken):
    gpu_ids = [booked[int(i)].pk for i in gpus]

    assert selectors.any_overlapping(gpu_ids, start, end) is taken
    assert selectors.overlapping_allocations(gpu_ids, start, end).exists() is taken


def test_no_gpus_overlap_nothing(booked):
    assert selectors.any_overlapping([], START, END) is False
