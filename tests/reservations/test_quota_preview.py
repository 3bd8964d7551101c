"""selectors.team_quota and quota_preview: a team's quota read without a lock, for the booking form's
preview, must be what the booking reads under the quota row's lock (locks.lock_team_quota), and the
preview must decide as the booking does (policy.quota_excess). Time is frozen at FROZEN_NOW (Monday
09:17 UTC, in quota week 2030-W02); two-hour slots."""

from datetime import timedelta

import pytest
from django.db import transaction

from reservations import selectors
from reservations.errors import QuotaExceeded
from reservations.services import reservation_cancel, team_quota_set
from reservations.services.locks import lock_team_quota

from ..support import NEXT_SLOT, SLOT, book

pytestmark = pytest.mark.usefixtures("frozen")


def by_pk(quota):
    return quota.__class__(**{**quota.__dict__, "booked": tuple(sorted(quota.booked, key=lambda b: b.pk))})


def test_the_quota_read_without_a_lock_is_the_one_the_booking_reads_under_it(
    team, owner, teammate, other_team, outsider, cluster, frozen
):
    team_quota_set(team=team, actor=None, gpu_hours_per_week=8, max_gpus=6, borrow_gpu_hours_per_week=40, weight=3)
    book(owner, cluster["node1"][:2], slots=2)  # 8 GPU-h, in quota
    book(teammate, cluster["node1"][2:3], borrow=True)  # over: borrowed
    cancelled = book(teammate, cluster["node2"][:1], slots=3, borrow=True)
    book(outsider, cluster["node2"][1:2])  # another team's
    next_week = book(owner, cluster["node2"][2:3], start=NEXT_SLOT + timedelta(days=7), borrow=True)
    frozen.move_to(NEXT_SLOT + SLOT / 2)
    reservation_cancel(reservation_id=cancelled.pk, actor=teammate, reason="done early")  # counts to 11:00
    # A window across the week's end reads both weeks.
    start, end = NEXT_SLOT + timedelta(days=6, hours=12), NEXT_SLOT + timedelta(days=7, hours=2)

    with transaction.atomic():
        locked = lock_team_quota(team.pk, start, end)
    read = selectors.team_quota(team.pk, start, end)

    assert by_pk(read) == by_pk(locked)
    this_week, next_week_start = NEXT_SLOT - timedelta(hours=10), NEXT_SLOT + timedelta(days=7, hours=-10)
    # In quota 8; borrowed 2 and the cancelled booking's hour; next week 2 in quota (there is room).
    assert read.weight == 3 and read.week_hours == {this_week: (8, 3), next_week_start: (2, 0)}
    assert [b.pk for b in read.booked] == [next_week.pk]  # the one overlapping the window
    held = {b.pk: b.end for b in selectors.team_quota(team.pk, NEXT_SLOT, NEXT_SLOT + SLOT).booked}
    assert held[cancelled.pk] == NEXT_SLOT + SLOT / 2
    assert selectors.team_quota(other_team.pk, start, end) is None


def test_the_preview_decides_as_the_booking_does(team, owner, teammate, cluster):
    team_quota_set(team=team, actor=None, gpu_hours_per_week=10, borrow_gpu_hours_per_week=4)
    book(owner, cluster["node1"][:2], slots=2)  # 8 of 10
    end = NEXT_SLOT + SLOT

    assert selectors.quota_preview(team=team, start=NEXT_SLOT, end=end, gpus=1).state == "within"
    over = selectors.quota_preview(team=team, start=NEXT_SLOT, end=end, gpus=2)
    assert over.state == "borrowable" and (over.booked_hours, over.requested_hours) == (8, 4)
    with pytest.raises(QuotaExceeded) as refused:
        book(teammate, cluster["node2"][:2])
    assert refused.value.excess == over.excess

    assert book(teammate, cluster["node2"][:2], borrow=True).borrowed  # 4 of 4 borrowed
    too_much = selectors.quota_preview(team=team, start=NEXT_SLOT, end=end, gpus=2)
    assert too_much.state == "over" and too_much.borrow_excess.limit == "borrow_gpu_hours_per_week"
    with pytest.raises(QuotaExceeded) as refused:
        book(teammate, cluster["node2"][2:4], borrow=True)
    assert refused.value.excess == too_much.borrow_excess


def test_a_team_without_a_quota_is_unlimited(team, cluster):
    assert selectors.quota_preview(team=team, start=NEXT_SLOT, end=NEXT_SLOT + SLOT, gpus=8).state == "unlimited"
