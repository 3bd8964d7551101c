"""Each booking rule in reservations/policy.py, on its own: one rule, one place, one test (or a few)."""

from datetime import datetime, timedelta, timezone as dt_timezone
from types import SimpleNamespace

import pytest
from django.core.exceptions import PermissionDenied

from reservations import policy
from reservations.errors import BookingError
from reservations.models import Membership, Reservation
from reservations.selectors import Window

from ..support import NEXT_SLOT

UTC = dt_timezone.utc
NOW = datetime(2030, 1, 7, 9, 17, tzinfo=UTC)  # slots are 2 hours: boundaries at 08:00, 10:00, ...
HOUR = timedelta(hours=1)


def booking(**fields):
    """A reservation-like value for the rules that only read fields."""
    values = dict(
        pk=1, start=NEXT_SLOT, end=NEXT_SLOT + 2 * HOUR, status=Reservation.Status.CONFIRMED, priority="low",
        preemptible=True, preempted_by_id=None, team_id=1, borrowed=False,
    )
    values.update(fields)
    return SimpleNamespace(**values)


def field_of(call):
    with pytest.raises(BookingError) as caught:
        call()
    return caught.value.field


# --- Slots and windows -----------------------------------------------------------------------------

def test_slot_boundaries_are_counted_from_midnight_utc():
    assert policy.floor_to_slot(NOW) == datetime(2030, 1, 7, 8, 0, tzinfo=UTC)
    assert policy.ceil_to_slot(NOW) == NEXT_SLOT
    assert policy.ceil_to_slot(NEXT_SLOT) == NEXT_SLOT
    assert policy.is_on_boundary(NEXT_SLOT) and not policy.is_on_boundary(NOW)


def test_a_window_is_whole_slots_on_a_boundary_not_in_the_past_and_within_the_horizon():
    assert policy.validate_window(NEXT_SLOT, 2, NOW) == NEXT_SLOT + 4 * HOUR
    assert field_of(lambda: policy.validate_window(NOW, 1, NOW)) == "start"  # not on a boundary
    assert field_of(lambda: policy.validate_window(NEXT_SLOT - 4 * HOUR, 1, NOW)) == "start"  # past
    assert field_of(lambda: policy.validate_window(NEXT_SLOT, 0, NOW)) == "slots"
    assert field_of(lambda: policy.validate_window(NEXT_SLOT, 12 * 28, NOW)) == "slots"  # past the horizon
    assert field_of(lambda: policy.validate_window(NEXT_SLOT, 10**12, NOW)) == "slots"  # would overflow a datetime
    far = datetime(9999, 12, 31, 22, 0, tzinfo=UTC)
    assert field_of(lambda: policy.validate_window(far, 1, NOW)) == "slots"  # ends after year 9999
    assert field_of(lambda: policy.validate_window(NEXT_SLOT.replace(tzinfo=None), 1, NOW)) == "start"  # naive


@pytest.mark.parametrize("slots", [True, "1", 1.0, -1])
def test_slots_must_be_a_positive_whole_number(slots):
    assert field_of(lambda: policy.validate_slots(slots)) == "slots"


def test_a_booking_from_now_runs_to_the_end_of_this_slot_plus_the_further_slots():
    assert policy.now_window(NOW, 1) == (NOW, NEXT_SLOT)
    assert policy.now_window(NOW.replace(microsecond=5), 2) == (NOW, NEXT_SLOT + 2 * HOUR)
    assert policy.now_window(NEXT_SLOT, 1) == (NEXT_SLOT, NEXT_SLOT + 2 * HOUR)  # on a boundary: a whole slot
    assert field_of(lambda: policy.now_window(NOW, 12 * 28 + 1)) == "slots"


def test_a_booking_from_now_with_minutes_left_in_the_slot_gets_the_next_slot_too():
    late = NEXT_SLOT - timedelta(minutes=4, seconds=59)
    assert policy.now_window(late, 1) == (late, NEXT_SLOT + 2 * HOUR)
    enough = NEXT_SLOT - timedelta(minutes=5)
    assert policy.now_window(enough, 1) == (enough, NEXT_SLOT)


def test_windows_overlap_only_when_each_starts_before_the_other_ends():
    a, b = NEXT_SLOT, NEXT_SLOT + 2 * HOUR
    overlap = policy.overlapping(a, b)
    assert dict(overlap.children) == {"start__lt": b, "end__gt": a}
    assert dict(policy.overlapping(a, b, prefix="reservation__").children) == {
        "reservation__start__lt": b, "reservation__end__gt": a,
    }


def test_a_time_without_a_zone_is_refused():
    policy.require_aware("start", NOW)
    assert field_of(lambda: policy.require_aware("after", NOW.replace(tzinfo=None))) == "after"


@pytest.mark.parametrize("gpus, count, ok", [([1], None, True), (None, 2, True), (None, None, False), ([1], 1, False)])
def test_a_booking_names_gpus_or_a_count_exactly_one_of_the_two(gpus, count, ok):
    if ok:
        policy.require_one_target(gpus, count)
    else:
        assert field_of(lambda: policy.require_one_target(gpus, count)) == "gpus"


# --- Who may do what ---------------------------------------------------------------------------

def test_high_needs_the_permission_and_is_never_preemptible(owner, high_booker):
    with pytest.raises(PermissionDenied):
        policy.resolve_preemptible(owner, "high", None)
    assert policy.resolve_preemptible(high_booker, "high", None) is False
    assert field_of(lambda: policy.resolve_preemptible(high_booker, "high", True)) == "preemptible"
    assert policy.resolve_preemptible(owner, "low", None) is True
    assert policy.resolve_preemptible(owner, "normal", None) is False
    assert policy.resolve_preemptible(owner, "normal", True) is True


def test_a_booking_is_charged_to_one_of_the_bookers_teams(team, other_team, owner, staff):
    assert policy.resolve_team(owner, None) == team
    assert policy.resolve_team(owner, "vision") == team
    assert field_of(lambda: policy.resolve_team(owner, "nlp")) == "team"
    assert field_of(lambda: policy.resolve_team(owner, "nope")) == "team"
    assert policy.resolve_team(staff, "nlp") == other_team
    Membership.objects.create(team=other_team, user=owner)
    assert field_of(lambda: policy.resolve_team(owner, None)) == "team"  # several teams: name one


def test_the_owner_a_team_admin_and_staff_may_manage_a_booking(team, owner, teammate, team_admin, outsider, staff):
    reservation = booking(user_id=owner.pk, team_id=team.pk)
    assert [policy.can_manage(u, reservation) for u in (owner, team_admin, staff, teammate, outsider)] == [
        True, True, True, False, False,
    ]


def test_a_booking_passes_only_to_a_teammate_who_may_book_its_priority(team, owner, teammate, outsider, high_booker, staff):
    normal = booking(user_id=owner.pk, team_id=team.pk, priority="normal", team=team)
    high = booking(user_id=high_booker.pk, team_id=team.pk, priority="high", team=team)
    assert policy.transfer_refusal(owner, normal, teammate) is None
    assert "not in team vision" in policy.transfer_refusal(owner, normal, outsider)
    assert "may not book high priority" in policy.transfer_refusal(high_booker, high, teammate)
    assert policy.transfer_refusal(staff, high, outsider) is None


def test_a_job_is_visible_to_its_bookings_team_its_owner_and_staff_only(team, other_team, owner, outsider, staff):
    reservation = booking(team_id=team.pk, user_id=owner.pk)
    assert policy.JobViewer(owner).may_see(reservation)
    assert not policy.JobViewer(outsider).may_see(reservation)
    assert policy.JobViewer(staff).may_see(reservation)
    assert not policy.NOBODY.may_see(reservation)
    # An owner outside the booking's team (a staff transfer) still sees their own job.
    assert policy.JobViewer(outsider).may_see(booking(team_id=team.pk, user_id=outsider.pk))


# --- The slot lifecycle ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "status, now, open_",
    [
        ("confirmed", NEXT_SLOT, True),
        ("active", NEXT_SLOT + HOUR, True),
        ("confirmed", NEXT_SLOT - timedelta(seconds=1), False),
        ("active", NEXT_SLOT + 2 * HOUR, False),
        ("cancelled", NEXT_SLOT + HOUR, False),
        ("waitlisted", NEXT_SLOT + HOUR, False),
    ],
)
def test_a_job_runs_while_its_booking_holds_the_gpus(status, now, open_):
    assert policy.job_window_open(booking(status=status), now) is open_


def test_a_job_may_overrun_by_the_grace_but_never_into_the_next_booking(settings):
    settings.OVERRUN_GRACE_PCT = 10
    start, end = NEXT_SLOT, NEXT_SLOT + 2 * HOUR
    assert policy.overrun_deadline(start, end, None) == end + timedelta(minutes=12)
    assert policy.overrun_deadline(start, end, end + timedelta(minutes=5)) == end + timedelta(minutes=5)


def test_a_started_booking_gives_back_the_whole_slots_it_will_not_use():
    four_slots = booking(status="active", end=NEXT_SLOT + 8 * HOUR)
    assert policy.released_end(four_slots, NEXT_SLOT + 3 * HOUR) == NEXT_SLOT + 4 * HOUR  # keeps the slot in progress
    assert policy.released_end(four_slots, NEXT_SLOT + 10 * 60 * timedelta(seconds=1)) == NEXT_SLOT + 2 * HOUR
    assert policy.released_end(four_slots, NEXT_SLOT + 7 * HOUR) is None  # in its last slot
    assert policy.released_end(booking(status="confirmed", end=NEXT_SLOT + 8 * HOUR), NOW) is None  # not begun
    assert policy.released_end(booking(status="cancelled", end=NEXT_SLOT + 8 * HOUR), NEXT_SLOT + HOUR) is None
    # A booking made "now" (mid-slot) gives back whole slots too, on the grid.
    from_now = booking(status="confirmed", start=NOW, end=NEXT_SLOT + 2 * HOUR)
    assert policy.released_end(from_now, NOW + timedelta(minutes=13)) == NEXT_SLOT


def test_a_booking_has_started_once_its_start_has_come():
    assert policy.has_started(booking(start=NOW), NOW)
    assert not policy.has_started(booking(start=NEXT_SLOT), NOW)


def test_a_no_show_is_a_booking_whose_whole_first_slot_has_passed():
    assert policy.no_show_cutoff(NEXT_SLOT + 2 * HOUR) == NEXT_SLOT


# --- Preemption --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "start, priority, borrowed, may",
    [(NEXT_SLOT, "high", False, True), (NEXT_SLOT, "normal", False, True),
     # A low booking may only take borrowed time back (preemption_refusal says so of anything else).
     (NEXT_SLOT, "low", False, True), (NEXT_SLOT, "normal", True, False),
     ("earliest", "high", False, False), ("now", "high", False, False)],
)
def test_only_a_named_start_of_an_in_quota_booking_tries_to_preempt(start, priority, borrowed, may):
    assert policy.may_try_preemption(start, priority, borrowed) is may


def test_a_low_booking_preempts_nothing_but_borrowed_time():
    assert policy.preemption_refusal("low", [booking(priority="low")]) == "reservation #1 is low priority, not lower than low"
    assert policy.preemption_refusal("low", [booking(priority="normal", preemptible=False, borrowed=True)]) is None


def test_only_preemptible_bookings_of_strictly_lower_priority_are_preempted():
    assert policy.may_preempt("high", victim_priority="low", victim_preemptible=True)
    assert policy.may_preempt("normal", victim_priority="low", victim_preemptible=True)
    assert not policy.may_preempt("normal", victim_priority="normal", victim_preemptible=True)
    assert not policy.may_preempt("high", victim_priority="low", victim_preemptible=False)
    assert policy.preemption_refusal("high", [booking(), booking(pk=2, priority="normal")]) is None
    assert policy.preemption_refusal("high", [booking(), booking(pk=2, preemptible=False)]) == (
        "reservation #2 is not preemptible"
    )
    assert "not lower than normal" in policy.preemption_refusal("normal", [booking(priority="normal")])


def test_taking_a_begun_or_imminent_booking_needs_notice(settings):
    settings.PREEMPTION_NOTICE_MINUTES = 30
    assert policy.needs_notice([booking(start=NOW + timedelta(minutes=29))], NOW)
    assert not policy.needs_notice([booking(start=NOW + timedelta(minutes=31))], NOW)
    assert policy.earliest_preempting_start(NOW) == NEXT_SLOT  # 09:47, rounded up to the boundary
    assert policy.earliest_preempting_start(NEXT_SLOT - timedelta(minutes=10)) == NEXT_SLOT + 2 * HOUR


def test_a_victim_has_begun_when_it_started_before_the_preemptor_and_by_now():
    assert policy.has_begun(booking(start=NOW - HOUR), NEXT_SLOT, NOW)
    assert not policy.has_begun(booking(start=NEXT_SLOT), NEXT_SLOT + 2 * HOUR, NOW)


def test_a_job_is_not_reclaimed_within_its_minimum_runtime(settings):
    settings.PREEMPT_MIN_RUNTIME_MINUTES = 15
    assert policy.reclaim_time(NEXT_SLOT, None) == NEXT_SLOT
    assert policy.reclaim_time(NEXT_SLOT, NEXT_SLOT - HOUR) == NEXT_SLOT
    assert policy.reclaim_time(NEXT_SLOT, NEXT_SLOT - timedelta(minutes=5)) == NEXT_SLOT + timedelta(minutes=10)


def test_a_preempted_job_stops_at_the_reclaim_and_any_other_at_its_overrun_deadline(settings):
    settings.PREEMPT_MIN_RUNTIME_MINUTES = 15
    settings.OVERRUN_GRACE_PCT = 10
    preempted = booking(end=NEXT_SLOT + HOUR, preempted_by_id=9)
    assert policy.stop_deadline(preempted, NEXT_SLOT + 50 * timedelta(minutes=1), None) == (
        NEXT_SLOT + 65 * timedelta(minutes=1)
    )
    assert policy.stop_deadline(booking(), NEXT_SLOT, None) == NEXT_SLOT + 2 * HOUR + timedelta(minutes=12)


def test_a_rebooking_goes_to_the_earliest_window_preferring_the_victims_own_node():
    node_of = {1: "a", 2: "a", 3: "b", 4: "b"}
    early_b = Window((3,), NEXT_SLOT, NEXT_SLOT + 2 * HOUR)
    early_a = Window((2,), NEXT_SLOT, NEXT_SLOT + 2 * HOUR)
    later_a = Window((1,), NEXT_SLOT + 2 * HOUR, NEXT_SLOT + 4 * HOUR)
    assert policy.rebook_window([early_b, early_a, later_a], {"a"}, node_of) == early_a
    assert policy.rebook_window([early_b, later_a], {"a"}, node_of) == early_b  # earliest first
    assert policy.rebook_window([], {"a"}, node_of) is None
