"""Fair sharing through the services and the API: every path that adds a team's GPU time checks its
quota (create, "now", move, waitlist confirmation, a preemption's rebooking), borrowing over it, taking
borrowed time back with the usual notice, and the waitlist's fair-share order. Time is frozen at
09:17 on a Monday (next slot 10:00, two-hour slots, 30 minutes' notice); the quota week began at 00:00."""

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest

from reservations import selectors, services
from reservations.models import AuditEntry, Notice, Reservation, TeamQuota
from trainer.models import TrainingJob

from ..support import NEXT_SLOT, SLOT, book, client_for, iso, make_user

pytestmark = pytest.mark.usefixtures("frozen")
URL = "/api/v1/reservations/"


def at(hour, day=7):
    return datetime(2030, 1, day, hour, tzinfo=dt_timezone.utc)


def quota(team, **limits):
    return TeamQuota.objects.create(team=team, **limits)


def post(user, gpus, start=NEXT_SLOT, slots=1, **extra):
    body = {"gpus": [g.pk for g in gpus], "start": start if isinstance(start, str) else iso(start), "slots": slots, **extra}
    return client_for(user).post(URL, body, format="json")


# --- The quota check ---------------------------------------------------------------------------

def test_a_team_without_a_quota_books_as_before(cluster, owner):
    response = post(owner, cluster["node1"], slots=12)

    assert response.status_code == 201 and response.json()["borrowed"] is False


def test_over_the_weekly_gpu_hours_a_booking_is_refused_with_what_and_how_to_borrow(cluster, team, owner):
    quota(team, gpu_hours_per_week=8)
    assert post(owner, cluster["node1"][:2]).status_code == 201  # 4 GPU-h

    response = post(owner, cluster["node1"][2:], start=NEXT_SLOT + SLOT, slots=2)  # 8 more

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "quota_exceeded"
    assert body["quota"] == {
        "team": "vision", "limit": "gpu_hours_per_week", "allowed": 8, "used": 4.0, "requested": 8.0,
        "week": "2030-W02", "at": None, "frees_at": "2030-01-14T00:00:00Z", "borrowable": True, "in_quota_slots": 1,
    }
    assert "over its quota of 8 GPU-hours in week 2030-W02" in body["detail"] and "borrow: true" in body["detail"]
    assert Reservation.objects.count() == 1


def test_over_the_gpus_at_once_a_booking_is_refused_with_when_they_free(cluster, team, owner, teammate):
    quota(team, max_gpus=3)
    book(teammate, cluster["node1"][:2], slots=2)  # 10:00-14:00

    response = post(owner, cluster["node2"][:2], start=at(12))
    later = post(owner, cluster["node2"][:2], start=at(14))

    assert response.status_code == 409
    assert response.json()["quota"]["limit"] == "max_gpus"
    assert response.json()["quota"]["at"] == "2030-01-07T12:00:00Z"
    assert response.json()["quota"]["frees_at"] == "2030-01-07T14:00:00Z"
    assert later.status_code == 201


def test_another_teams_bookings_never_count(cluster, team, owner, outsider):
    quota(team, gpu_hours_per_week=2)
    book(outsider, cluster["node1"], slots=6)

    assert post(owner, cluster["node2"][:1]).status_code == 201


def test_start_now_is_checked_for_its_part_slot_too(cluster, team, owner):
    quota(team, gpu_hours_per_week=1)

    response = post(owner, cluster["node1"][:1], start="now")  # 09:17-10:00 is 0.72 GPU-h

    assert response.status_code == 201
    assert post(owner, cluster["node1"][1:2], start="now").json()["code"] == "quota_exceeded"


def test_cancelled_time_counts_only_up_to_the_cancellation(cluster, team, owner, frozen):
    quota(team, gpu_hours_per_week=4)
    first = book(owner, cluster["node1"][:1], slots=2)  # 10:00-14:00: 4 GPU-h
    frozen.move_to(at(11))
    services.reservations_advance()
    services.reservation_cancel(reservation_id=first.pk, actor=owner)  # held one hour

    assert Reservation.objects.get(pk=first.pk).cancelled_at == at(11)
    # 3 GPU-h left this week: three GPUs for the next hour-slot of two hours would be 6.
    assert post(owner, cluster["node1"][:1], start=at(12)).status_code == 201  # 2 more: 3 in all
    assert post(owner, cluster["node1"][1:2], start=at(14)).json()["quota"]["used"] == 3.0


def test_a_booking_charged_to_the_team_counts_whoever_made_it(cluster, team, owner):
    quota(team, gpu_hours_per_week=2)
    other = make_user("someone", None, is_staff=True)
    book(other, cluster["node1"][:1], team="vision")  # staff, for the team: its 2 GPU-h

    assert post(owner, cluster["node2"][:1]).json()["code"] == "quota_exceeded"


def test_staff_may_book_over_any_quota_and_it_is_audited(cluster, team, staff):
    quota(team, gpu_hours_per_week=2)

    response = post(staff, cluster["node1"][:2], team="vision")

    assert response.status_code == 201 and response.json()["borrowed"] is False
    entry = AuditEntry.objects.get(action="create", reservation_id=response.json()["id"])
    assert entry.actor == staff and "over the quota by staff" in entry.reason and "2 GPU-hours" in entry.reason


def test_moving_a_booking_is_checked_without_its_own_old_time(cluster, team, owner):
    quota(team, gpu_hours_per_week=4, max_gpus=2)
    booking = book(owner, cluster["node1"][:2])

    moved = client_for(owner).post(f"{URL}{booking.pk}/move/", {"start": iso(at(14)), "slots": 1}, format="json")
    longer = client_for(owner).post(f"{URL}{booking.pk}/move/", {"start": iso(at(14)), "slots": 2}, format="json")

    assert moved.status_code == 200, moved.content
    assert longer.status_code == 409 and longer.json()["quota"]["limit"] == "gpu_hours_per_week"
    assert Reservation.objects.get(pk=booking.pk).start == at(14)


# --- Borrowing ---------------------------------------------------------------------------------

def test_borrow_books_over_the_quota_as_preemptible_borrowed_time_audited_as_borrow(cluster, team, owner):
    quota(team, gpu_hours_per_week=2)

    response = post(owner, cluster["node1"][:2], borrow=True, slots=2)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["borrowed"] is True and body["preemptible"] is True and body["priority"] == "normal"
    assert AuditEntry.objects.filter(action="borrow", reservation_id=body["id"]).count() == 1
    # Borrowed time does not use up the quota: an in-quota booking still fits.
    assert post(owner, cluster["node2"][:1]).json()["borrowed"] is False


def test_borrow_within_the_quota_books_as_usual(cluster, team, owner):
    quota(team, gpu_hours_per_week=20)

    assert post(owner, cluster["node1"][:1], borrow=True).json()["borrowed"] is False


def test_borrowed_time_is_never_high_priority(cluster, team, high_booker):
    quota(team, gpu_hours_per_week=2)

    response = post(high_booker, cluster["node1"][:1], borrow=True, priority="high")

    assert response.status_code == 400 and "borrow" in response.json()


def test_the_borrow_limit_refuses_more_borrowing_without_offering_it(cluster, team, owner):
    quota(team, gpu_hours_per_week=0, borrow_gpu_hours_per_week=4)
    assert post(owner, cluster["node1"][:2], borrow=True).status_code == 201

    response = post(owner, cluster["node1"][2:3], borrow=True)

    assert response.status_code == 409
    assert response.json()["quota"]["limit"] == "borrow_gpu_hours_per_week"
    assert response.json()["quota"]["borrowable"] is False


def test_a_borrowed_booking_never_preempts(cluster, team, owner, outsider):
    quota(team, gpu_hours_per_week=0)
    victim = book(outsider, cluster["node1"][:1], priority="low")

    response = post(owner, cluster["node1"][:1], borrow=True)

    assert response.status_code == 409 and "Borrowed time takes only idle GPUs" in response.json()["detail"]
    assert Reservation.objects.get(pk=victim.pk).status == "confirmed"


def test_borrowed_time_cannot_be_edited_to_high_or_not_preemptible(cluster, team, owner):
    quota(team, gpu_hours_per_week=0)
    borrowed = post(owner, cluster["node1"][:1], borrow=True).json()

    response = client_for(owner).patch(f"{URL}{borrowed['id']}/", {"preemptible": False}, format="json")
    if response.status_code == 405:  # edits go through the service
        with pytest.raises(Exception) as refused:
            services.reservation_update(reservation_id=borrowed["id"], actor=owner, preemptible=False)
        assert refused.value.field == "preemptible"
    else:
        assert response.status_code == 400


# --- Reclaim -----------------------------------------------------------------------------------

@pytest.fixture
def borrowed_running(cluster, other_team, outsider, frozen):
    """Team nlp (quota 0) borrowed node1/gpu0 10:00-16:00 and trains there since 10:00; 10:20 now."""
    quota(other_team, gpu_hours_per_week=0)
    victim = book(outsider, cluster["node1"][:1], slots=3, borrow=True, title="borrowed run")
    frozen.move_to(datetime(2030, 1, 7, 10, 20, tzinfo=dt_timezone.utc))
    services.reservations_advance()
    TrainingJob.objects.create(
        reservation=victim, spec={"model": "yolov8n.yaml", "data": "/d/data.yaml", "epochs": 50}, epochs=50,
        status="running", spawned_at=datetime(2030, 1, 7, 10, 0, 5, tzinfo=dt_timezone.utc),
    )
    return Reservation.objects.get(pk=victim.pk)


def test_a_team_within_its_quota_takes_borrowed_gpus_back_at_normal_priority_with_notice(
    cluster, team, owner, outsider, borrowed_running
):
    quota(team, gpu_hours_per_week=40)

    response = post(owner, cluster["node1"][:1], start=at(12))  # the first start the 30 minutes' notice allows

    assert response.status_code == 201, response.content
    victim = Reservation.objects.get(pk=borrowed_running.pk)
    assert (victim.end, victim.preempted_by_id, victim.reclaim_at) == (at(12), response.json()["id"], at(12))
    notice = Notice.objects.get(user=outsider, kind="preemption_warning")
    assert "Borrowed reservation" in notice.message and "team Vision is within its quota" in notice.message
    assert "(2 of 40 GPU-h in week 2030-W02) and takes borrowed GPUs back. Its GPUs are reclaimed at 2030-01-07 12:00 UTC" in notice.message
    assert notice.data["reclaimed_by_team"] == "vision" and notice.data["borrowed"] is True
    rebook = Reservation.objects.get(rebook_of=victim)
    assert rebook.borrowed is True and rebook.preemptible is True  # it stays borrowed
    assert rebook.job.resumed_from == victim.job
    preempt = AuditEntry.objects.get(action="preempt", reservation=victim)
    assert "Borrowed time: team Vision is within its quota" in preempt.reason


def test_a_low_in_quota_booking_reclaims_borrowed_time_too(cluster, team, owner, borrowed_running):
    response = post(owner, cluster["node1"][:1], start=at(12), priority="low")

    assert response.status_code == 201, response.content
    assert Reservation.objects.get(pk=borrowed_running.pk).preempted_by_id == response.json()["id"]


def test_a_borrowed_booking_not_begun_is_moved_and_stays_borrowed(cluster, team, other_team, owner, outsider):
    quota(other_team, gpu_hours_per_week=0)
    victim = book(outsider, cluster["node1"][:1], start=at(14), borrow=True)

    response = post(owner, cluster["node1"][:1], start=at(14))

    assert response.status_code == 201
    moved = Reservation.objects.get(pk=victim.pk)
    assert moved.status == "confirmed" and moved.borrowed is True and moved.start == at(14)
    assert moved.allocations.get().gpu_id != cluster["node1"][0].pk
    assert "moved to" in Notice.objects.get(user=outsider, kind="moved").message


def test_a_preempted_in_quota_booking_whose_rest_no_longer_fits_is_rebooked_as_borrowed(
    cluster, team, other_team, owner, frozen
):
    quota(team, gpu_hours_per_week=4)
    victim = book(owner, cluster["node1"][:1], start=at(20, 13), slots=2, priority="low")  # Sunday 20:00-24:00
    # Next week's first 4 GPU-h of the team are booked already: the unused part, rebooked from
    # Monday 00:00 once the preemptor is done, no longer fits the quota there.
    book(owner, cluster["node2"][:2], start=at(0, 14))
    frozen.move_to(datetime(2030, 1, 13, 20, 20, tzinfo=dt_timezone.utc))
    services.reservations_advance()
    boss = make_user("boss", other_team, is_staff=True, is_superuser=True)

    response = post(boss, cluster["node1"] + cluster["node2"], start=at(22, 13), priority="high", team="nlp")

    assert response.status_code == 201, response.content
    rebook = Reservation.objects.get(rebook_of=victim)
    assert (rebook.borrowed, rebook.preemptible, rebook.start) == (True, True, at(0, 14))
    assert AuditEntry.objects.get(action="rebook", reservation=rebook)
    assert "(borrowed)" in Notice.objects.get(user=owner, kind="preemption_warning").message


@pytest.mark.django_db(transaction=True)
def test_a_withdrawn_preemption_gives_time_back_only_within_the_quota(cluster, team, other_team, owner, frozen):
    quota(team, gpu_hours_per_week=4)
    victim = book(owner, cluster["node1"][:1], slots=2, priority="low", auto_rebook=False)  # 10:00-14:00
    frozen.move_to(datetime(2030, 1, 7, 10, 20, tzinfo=dt_timezone.utc))
    services.reservations_advance()
    boss = make_user("boss", other_team, is_staff=True, is_superuser=True)
    preemptor = post(boss, cluster["node1"][:1], start=at(12), priority="high", team="nlp").json()
    # The cut freed 2 GPU-h of the team's week, which it booked again at once.
    assert post(owner, cluster["node2"][:1], start=at(16)).status_code == 201

    services.reservation_cancel(reservation_id=preemptor["id"], actor=boss, reason="not needed")

    kept = Reservation.objects.get(pk=victim.pk)
    assert (kept.end, kept.preempted_by_id) == (at(12), preemptor["id"])  # the cut stands: 4 GPU-h in all


# --- The waitlist --------------------------------------------------------------------------------
# A cancellation sweeps the waitlist once it commits: these tests commit.

@pytest.mark.django_db(transaction=True)
def test_a_waiting_request_over_quota_waits_and_one_that_may_borrow_is_confirmed_borrowed(
    cluster, team, other_team, owner, teammate, outsider
):
    gpu = cluster["node1"][0]
    quota(team, gpu_hours_per_week=2)
    holder = book(outsider, [gpu])
    waits = book(owner, [gpu], waitlist=True)  # in quota when asked
    borrower = book(teammate, [gpu], waitlist=True, borrow=True)
    book(owner, cluster["node2"][:1])  # the team's 2 GPU-h are used now

    services.reservation_cancel(reservation_id=holder.pk, actor=outsider)

    assert Reservation.objects.get(pk=waits.pk).status == "waitlisted"
    confirmed = Reservation.objects.get(pk=borrower.pk)
    assert (confirmed.status, confirmed.borrowed, confirmed.preemptible) == ("confirmed", True, True)
    assert "borrowed" in AuditEntry.objects.get(action="promote", reservation=confirmed).reason


@pytest.mark.django_db(transaction=True)
def test_a_freed_window_goes_to_the_team_with_the_least_recent_use_per_weight(
    cluster, team, other_team, owner, outsider, frozen
):
    gpu = cluster["node1"][0]
    # Vision used 8 GPU-h over the last week; nlp nothing.
    frozen.move_to(at(0, 3))
    book(owner, cluster["node2"][:2], start=at(2, 3), slots=2)
    frozen.move_to(datetime(2030, 1, 7, 9, 17, tzinfo=dt_timezone.utc))
    holder = book(owner, [gpu])
    vision_first = book(owner, [gpu], waitlist=True)
    nlp_later = book(outsider, [gpu], waitlist=True)
    # The position shown follows the same order.
    assert client_for(outsider).get(f"{URL}{nlp_later.pk}/").json()["waitlist_position"] == 0
    assert client_for(owner).get(f"{URL}{vision_first.pk}/").json()["waitlist_position"] == 1
    assert client_for(owner).get(f"{URL}{holder.pk}/").json()["waitlist_position"] is None

    services.reservation_cancel(reservation_id=holder.pk, actor=owner)

    assert Reservation.objects.get(pk=nlp_later.pk).status == "confirmed"
    assert Reservation.objects.get(pk=vision_first.pk).status == "waitlisted"


@pytest.mark.django_db(transaction=True)
def test_a_heavier_weight_puts_a_busier_team_first(cluster, team, other_team, owner, outsider, frozen):
    gpu = cluster["node1"][0]
    quota(team, weight=10)
    frozen.move_to(at(0, 3))
    book(owner, cluster["node2"][:1], start=at(2, 3))  # Vision: 2 GPU-h, 0.2 per weight
    book(outsider, cluster["node2"][1:2], start=at(2, 3), slots=2)  # nlp: 4 GPU-h
    frozen.move_to(datetime(2030, 1, 7, 9, 17, tzinfo=dt_timezone.utc))
    holder = book(outsider, [gpu])
    nlp_first = book(outsider, [gpu], waitlist=True)
    vision_later = book(owner, [gpu], waitlist=True)

    assert services.waitlist_promote() == []
    services.reservation_cancel(reservation_id=holder.pk, actor=outsider)

    assert Reservation.objects.get(pk=vision_later.pk).status == "confirmed"
    assert Reservation.objects.get(pk=nlp_first.pk).status == "waitlisted"


# --- The quota's read ----------------------------------------------------------------------------

def test_the_quota_check_counts_as_the_pages_and_reports_do(cluster, team, owner, frozen):
    """selectors.quota_tally (SQL written out, on the booking path) and selectors.counted (the ORM,
    for pages, reports and fair share) are one rule: on a week of every kind of booking they agree."""
    quota(team, gpu_hours_per_week=1000)
    monday = at(0, 7)
    book(owner, cluster["node1"][:2], start=at(22, 13), slots=2)  # Sunday 22:00 to Monday 02:00: 4 GPU-h a week
    book(owner, cluster["node1"][2:3], slots=3)
    cancelled = book(owner, cluster["node1"][3:], slots=2)
    services.team_quota_set(team=team, actor=owner, gpu_hours_per_week=0)
    borrowed = book(owner, cluster["node2"][:3], start=at(12), slots=2, borrow=True)
    over = book(owner, cluster["node2"][3:], start=at(16), borrow=True)
    frozen.move_to(datetime(2030, 1, 7, 11, 30, tzinfo=dt_timezone.utc))
    services.reservations_advance()
    services.reservation_cancel(reservation_id=cancelled.pk, actor=owner)  # held 1.5 h
    assert Reservation.objects.get(pk=borrowed.pk).borrowed and Reservation.objects.get(pk=over.pk).borrowed

    hours, booked = selectors.quota_tally(team.pk, at(10), at(14, 14))  # this week and the next
    for week_start in (monday - timedelta(days=7), monday, monday + timedelta(days=7)):
        rows = selectors.counted(week_start, week_start + timedelta(days=7)).filter(team=team)
        expected = tuple(
            sum(r.counted_seconds for r in rows if r.borrowed == kind) / 3600 for kind in (False, True)
        )
        assert hours.get(week_start, (0, 0)) == pytest.approx(expected)
    assert hours[monday] == pytest.approx((4 + 6 + 1.5, 12 + 2))
    # The bookings overlapping the window, each with its counted end.
    overlapping = {b.pk: (b.start, b.end, b.gpus, b.borrowed) for b in booked}
    assert overlapping[cancelled.pk] == (at(10), datetime(2030, 1, 7, 11, 30, tzinfo=dt_timezone.utc), 1, False)
    assert overlapping[borrowed.pk] == (at(12), at(16), 3, True)
