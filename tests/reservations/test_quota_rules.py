"""The fair-sharing rules of policy.py, each on its own: what counts, quota weeks, GPU-hours per week,
GPUs at once, borrowing, reclaim eligibility and the waitlist's fair-share order."""

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest

from reservations import policy
from reservations.models import Reservation

UTC = dt_timezone.utc
HOUR = timedelta(hours=1)
MONDAY = datetime(2030, 1, 7, tzinfo=UTC)  # 00:00 UTC, the start of ISO week 2030-W02
Status = Reservation.Status


def quota(*booked, hours=None, max_gpus=None, borrow=None, weight=1):
    """A quota with `booked` counted (as locks.lock_team_quota reads it: the weeks' sums, and the
    bookings themselves for GPUs at once)."""
    weeks = policy.weeks_of(MONDAY - timedelta(days=14), MONDAY + timedelta(days=14))
    return policy.Quota(
        team_slug="vision", gpu_hours_per_week=hours, max_gpus=max_gpus, borrow_gpu_hours_per_week=borrow,
        weight=weight, week_hours=policy.tally(booked, weeks), booked=tuple(booked),
    )


def held(start, hours, gpus=1, borrowed=False, pk=None):
    return policy.Booked(start, start + hours * HOUR, gpus, borrowed, pk)


# --- What counts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [Status.CONFIRMED, Status.ACTIVE, Status.COMPLETED, Status.PREEMPTED])
def test_a_held_booking_counts_to_its_end_as_booked(status):
    # Released early or cut by a preemption, its `end` already says how far it held the GPUs.
    assert policy.counted_end(status, MONDAY + 4 * HOUR, None) == MONDAY + 4 * HOUR


def test_a_cancelled_booking_counts_up_to_its_cancellation_and_a_waiting_request_not_at_all():
    assert policy.counted_end(Status.CANCELLED, MONDAY + 4 * HOUR, MONDAY + HOUR) == MONDAY + HOUR
    assert policy.counted_end(Status.CANCELLED, MONDAY + 4 * HOUR, MONDAY + 9 * HOUR) == MONDAY + 4 * HOUR
    assert policy.counted_end(Status.CANCELLED, MONDAY + 4 * HOUR, None) is None  # never held (a waitlist's wish)
    assert policy.counted_end(Status.WAITLISTED, MONDAY + 4 * HOUR, None) is None


def test_booked_time_is_gpus_times_hours_of_the_part_inside_the_window():
    assert policy.gpu_hours(3, MONDAY, MONDAY + 2 * HOUR) == 6
    assert policy.gpu_hours(2, MONDAY - HOUR, MONDAY + 2 * HOUR, within=(MONDAY, MONDAY + HOUR)) == 2
    assert policy.gpu_hours(2, MONDAY, MONDAY + HOUR, within=(MONDAY + 5 * HOUR, MONDAY + 6 * HOUR)) == 0


# --- Weeks ----------------------------------------------------------------------------------------

def test_a_quota_week_starts_on_monday_midnight_utc_by_default():
    assert policy.week_start(MONDAY + 3 * timedelta(days=1) + 5 * HOUR) == MONDAY
    assert policy.week_start(MONDAY) == MONDAY
    assert policy.week_start(MONDAY - timedelta(microseconds=1)) == MONDAY - timedelta(days=7)
    assert policy.week_label(MONDAY) == "2030-W02"
    assert policy.week_of_label("2030-W02") == MONDAY


def test_quota_week_start_moves_the_week(settings):
    settings.QUOTA_WEEK_OFFSET_MINUTES = 6 * 24 * 60 + 18 * 60  # Sunday 18:00 UTC
    sunday_evening = MONDAY - 6 * HOUR
    assert policy.week_start(MONDAY + HOUR) == sunday_evening
    assert policy.week_start(sunday_evening - HOUR) == sunday_evening - timedelta(days=7)
    # An ISO week names the quota week that starts in it.
    assert policy.week_of_label("2030-W02") == sunday_evening + timedelta(days=7)


def test_a_window_across_the_week_boundary_touches_both_weeks():
    weeks = policy.weeks_of(MONDAY - 2 * HOUR, MONDAY + 2 * HOUR)
    assert weeks == [(MONDAY - timedelta(days=7), MONDAY), (MONDAY, MONDAY + timedelta(days=7))]
    assert policy.weeks_of(MONDAY, MONDAY + 2 * HOUR) == [(MONDAY, MONDAY + timedelta(days=7))]


# --- GPU-hours per week ---------------------------------------------------------------------------

def test_no_quota_means_no_limit():
    assert policy.quota_excess(None, start=MONDAY, end=MONDAY + 100 * HOUR, gpus=64, borrowed=False) is None
    assert policy.quota_excess(quota(), start=MONDAY, end=MONDAY + 100 * HOUR, gpus=64, borrowed=False) is None


def test_a_booking_fits_up_to_the_weekly_gpu_hours_and_not_one_hour_more():
    q = quota(held(MONDAY + 10 * HOUR, 2, gpus=3), hours=10)  # 6 GPU-h booked
    assert policy.quota_excess(q, start=MONDAY + 20 * HOUR, end=MONDAY + 22 * HOUR, gpus=2, borrowed=False) is None
    excess = policy.quota_excess(q, start=MONDAY + 20 * HOUR, end=MONDAY + 22 * HOUR, gpus=3, borrowed=False)
    assert (excess.limit, excess.used, excess.requested, excess.allowed) == ("gpu_hours_per_week", 6, 6, 10)
    assert excess.week == MONDAY and excess.frees_at == MONDAY + timedelta(days=7)
    assert "10 GPU-hours in week 2030-W02: 6 booked, this adds 6" in excess.describe()


def test_hours_count_in_the_week_they_fall_in():
    # 4 GPU-h booked at the end of last week: this week is untouched.
    q = quota(held(MONDAY - 4 * HOUR, 4), hours=4)
    assert policy.quota_excess(q, start=MONDAY, end=MONDAY + 4 * HOUR, gpus=1, borrowed=False) is None
    # A booking across the boundary is checked in each week for its part there.
    excess = policy.quota_excess(q, start=MONDAY - 2 * HOUR, end=MONDAY + 2 * HOUR, gpus=1, borrowed=False)
    assert excess.week == MONDAY - timedelta(days=7) and excess.requested == 2 and excess.used == 4


def test_a_refusal_says_how_many_slots_from_the_start_fit_in_quota():
    q = quota(hours=5)
    excess = policy.quota_excess(q, start=MONDAY, end=MONDAY + 8 * HOUR, gpus=1, borrowed=False)  # 4 slots
    assert excess.in_quota_slots == 2  # 4 GPU-h of the 5; a third slot would make 6


def test_borrowed_time_does_not_count_against_the_quota_and_in_quota_time_not_against_the_borrow_limit():
    q = quota(held(MONDAY, 8, borrowed=True), held(MONDAY + 10 * HOUR, 2), hours=4, borrow=8)
    assert policy.quota_excess(q, start=MONDAY + 20 * HOUR, end=MONDAY + 22 * HOUR, gpus=1, borrowed=False) is None
    excess = policy.quota_excess(q, start=MONDAY + 20 * HOUR, end=MONDAY + 22 * HOUR, gpus=1, borrowed=True)
    assert (excess.limit, excess.used, excess.borrowable) == ("borrow_gpu_hours_per_week", 8, False)


def test_an_unset_borrow_limit_lets_idle_gpus_be_borrowed_without_limit():
    q = quota(held(MONDAY, 100, gpus=8, borrowed=True), hours=1)
    assert policy.quota_excess(q, start=MONDAY, end=MONDAY + 50 * HOUR, gpus=8, borrowed=True) is None


# --- GPUs at once ---------------------------------------------------------------------------------

def test_gpus_at_once_is_checked_at_every_moment_of_the_window():
    q = quota(held(MONDAY, 2, gpus=2), held(MONDAY + 4 * HOUR, 2, gpus=3), max_gpus=4)
    # Alongside the first (2 held) 2 more fit; at 04:00 three are held, so a window reaching it fails.
    assert policy.quota_excess(q, start=MONDAY, end=MONDAY + 2 * HOUR, gpus=2, borrowed=False) is None
    excess = policy.quota_excess(q, start=MONDAY, end=MONDAY + 6 * HOUR, gpus=2, borrowed=False)
    assert (excess.limit, excess.used, excess.requested, excess.allowed) == ("max_gpus", 3, 2, 4)
    assert excess.at == MONDAY + 4 * HOUR and excess.frees_at == MONDAY + 6 * HOUR
    # Back to back is not at once.
    assert policy.quota_excess(q, start=MONDAY + 2 * HOUR, end=MONDAY + 4 * HOUR, gpus=4, borrowed=False) is None


def test_borrowed_bookings_are_not_counted_at_once():
    q = quota(held(MONDAY, 2, gpus=8, borrowed=True), max_gpus=2)
    assert policy.quota_excess(q, start=MONDAY, end=MONDAY + 2 * HOUR, gpus=2, borrowed=False) is None


# --- Borrowing and reclaim ------------------------------------------------------------------------

def test_borrowed_time_is_never_high_priority_and_always_preemptible():
    with pytest.raises(Exception) as refused:
        policy.may_borrow("high")
    assert refused.value.field == "borrow"
    policy.may_borrow("normal")
    policy.may_borrow("low")
    with pytest.raises(Exception) as refused:
        policy.require_borrowed_terms("normal", False)
    assert refused.value.field == "preemptible"


@pytest.mark.parametrize("priority", ["low", "normal", "high"])
def test_an_in_quota_booking_reclaims_borrowed_time_at_any_priority(priority):
    assert policy.may_preempt(priority, victim_priority="high", victim_preemptible=False, victim_borrowed=True)


def test_a_borrowed_booking_never_takes_anyones_gpus():
    assert not policy.may_preempt("normal", victim_priority="low", victim_preemptible=True, borrowed=True)
    assert not policy.may_preempt("normal", victim_priority="low", victim_preemptible=True, borrowed=True, victim_borrowed=True)
    assert not policy.may_try_preemption(MONDAY, "normal", borrowed=True)
    assert policy.reclaims(borrowed=False, victim_borrowed=True)
    assert not policy.reclaims(borrowed=True, victim_borrowed=True)


# --- Fair-share order -----------------------------------------------------------------------------

def test_the_team_with_the_least_recent_use_per_weight_goes_first_then_first_come():
    early, late = MONDAY, MONDAY + HOUR
    requests = [
        ("busy team, first to ask", policy.fair_share_key(40, 1, early, 1)),
        ("idle team, asked later", policy.fair_share_key(0, 1, late, 2)),
        ("busy but heavy team", policy.fair_share_key(40, 4, late, 3)),  # 10 per weight
        ("idle team, asked even later", policy.fair_share_key(0, 1, late + HOUR, 4)),
    ]
    order = [name for name, key in sorted(requests, key=lambda r: r[1])]
    assert order == ["idle team, asked later", "idle team, asked even later", "busy but heavy team", "busy team, first to ask"]


def test_the_fair_share_window_is_the_last_fair_share_days(settings):
    settings.FAIR_SHARE_DAYS = 3
    assert policy.fair_share_window(MONDAY) == (MONDAY - timedelta(days=3), MONDAY)
