"""The booking API's side of fair sharing as docs/api.md states it: `borrow`, `borrowed`, the 409
`quota_exceeded` body, the reclaim of borrowed time, staff over a quota, and the waitlist's
fair-share order. Times frozen on Monday 2030-01-07 09:17 UTC (quota week 2030-W02), slots of two
hours."""

from datetime import timedelta

import pytest

from reservations import services
from reservations.models import AuditEntry, Reservation

from ..support import NEXT_SLOT, RESERVATIONS_URL, SLOT, book, client_for, iso

pytestmark = pytest.mark.usefixtures("frozen")


def body(gpus, start=NEXT_SLOT, slots=1, **extra):
    return {"gpus": [g.pk for g in gpus], "start": iso(start), "slots": slots, **extra}


@pytest.fixture
def quota(team, staff):
    """Vision: 8 GPU-hours a week in quota, 12 more it may borrow."""
    return services.team_quota_set(team=team, actor=staff, gpu_hours_per_week=8, borrow_gpu_hours_per_week=12)


def test_over_the_quota_without_borrow_is_a_409_naming_the_limit_and_the_split_that_fits(cluster, owner, quota):
    n1 = cluster["node1"]
    book(owner, n1[:2])  # 4 of the 8 GPU-hours

    response = client_for(owner).post(RESERVATIONS_URL, body(n1[:2], NEXT_SLOT + SLOT, slots=3), format="json")

    assert response.status_code == 409, response.content
    answer = response.json()
    assert answer["code"] == "quota_exceeded"
    assert "borrow" in answer["detail"]
    assert answer["quota"] == {
        "team": "vision", "limit": "gpu_hours_per_week", "allowed": 8, "used": 4.0, "requested": 12.0,
        "week": "2030-W02", "at": None, "frees_at": "2030-01-14T00:00:00Z", "borrowable": True,
        # 12:00-14:00 on 2 GPUs fills the quota; the next slot would pass it.
        "in_quota_slots": 1,
    }
    assert Reservation.objects.count() == 1


def test_with_borrow_a_booking_over_the_quota_is_booked_whole_as_borrowed_time(cluster, owner, quota):
    n1 = cluster["node1"]
    book(owner, n1[:2])

    response = client_for(owner).post(
        RESERVATIONS_URL, body(n1[:2], NEXT_SLOT + SLOT, slots=3, borrow=True), format="json"
    )

    assert response.status_code == 201, response.content
    booked = response.json()
    assert (booked["borrowed"], booked["preemptible"], booked["slots"]) == (True, True, 3)
    assert AuditEntry.objects.get(reservation_id=booked["id"]).action == "borrow"
    standing = client_for(owner).get("/api/v1/teams/vision/").json()["this_week"]
    assert (standing["booked_gpu_hours"], standing["borrowed_gpu_hours"]) == (4.0, 12.0)


def test_with_borrow_a_booking_within_the_quota_books_as_usual(cluster, owner, quota):
    response = client_for(owner).post(RESERVATIONS_URL, body(cluster["node1"][:2], borrow=True), format="json")

    assert response.status_code == 201, response.content
    assert (response.json()["borrowed"], response.json()["preemptible"]) == (False, False)


def test_past_the_borrow_limit_too_the_409_says_borrowing_will_not_do(cluster, owner, quota):
    n1 = cluster["node1"]
    book(owner, n1[:2])
    book(owner, n1[:2], start=NEXT_SLOT + SLOT, slots=3, borrow=True)  # the 12 it may borrow

    # 6 GPU-hours: over the 4 left in quota, and over the borrow limit.
    response = client_for(owner).post(
        RESERVATIONS_URL, body(n1[2:3], NEXT_SLOT + SLOT, slots=3, borrow=True), format="json"
    )

    assert response.status_code == 409
    assert response.json()["quota"]["limit"] == "borrow_gpu_hours_per_week"
    assert response.json()["quota"]["borrowable"] is False


def test_borrowed_time_is_never_high_priority(cluster, high_booker, quota):
    response = client_for(high_booker).post(
        RESERVATIONS_URL, body(cluster["node1"][:1], priority="high", borrow=True), format="json"
    )

    assert response.status_code == 400
    assert list(response.json()) == ["borrow"]


def test_too_many_gpus_at_once_is_a_409_saying_when_they_free(cluster, team, owner, staff):
    services.team_quota_set(team=team, actor=staff, max_gpus=2)
    book(owner, cluster["node1"][:2])  # 10:00-12:00

    response = client_for(owner).post(RESERVATIONS_URL, body(cluster["node2"][:1]), format="json")

    assert response.status_code == 409
    assert response.json()["quota"] == {
        "team": "vision", "limit": "max_gpus", "allowed": 2, "used": 2.0, "requested": 1.0, "week": None,
        "at": iso(NEXT_SLOT), "frees_at": iso(NEXT_SLOT + SLOT), "borrowable": True, "in_quota_slots": 0,
    }


def test_staff_book_over_a_quota_in_quota_and_the_audit_says_which_limit(cluster, team, owner, staff, quota):
    book(owner, cluster["node1"][:2])

    response = client_for(staff).post(
        RESERVATIONS_URL, body(cluster["node1"][:2], NEXT_SLOT + SLOT, slots=3, team="vision"), format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["borrowed"] is False
    assert "over the quota" in AuditEntry.objects.get(reservation_id=response.json()["id"]).reason


def test_an_in_quota_booking_reclaims_borrowed_time_at_any_priority_and_it_stays_borrowed(
    cluster, team, owner, outsider, staff
):
    services.team_quota_set(team=team, actor=staff, gpu_hours_per_week=0)
    gpu = cluster["node1"][:1]
    borrowed = book(owner, gpu, start=NEXT_SLOT + SLOT, borrow=True)  # normal priority

    # Language has no quota: all its bookings are in quota; a low one takes the borrowed GPU back.
    response = client_for(outsider).post(RESERVATIONS_URL, body(gpu, NEXT_SLOT + SLOT, priority="low"), format="json")

    assert response.status_code == 201, response.content
    borrowed.refresh_from_db()
    assert borrowed.borrowed and borrowed.status == "confirmed"
    # Not begun: moved whole, off the reclaimed GPU, and still borrowed time.
    assert not borrowed.allocations.filter(gpu=gpu[0], live=True).exists()


def test_a_borrowed_booking_never_preempts(cluster, team, owner, outsider, staff):
    services.team_quota_set(team=team, actor=staff, gpu_hours_per_week=0)
    gpu = cluster["node2"][:1]
    book(outsider, gpu, start=NEXT_SLOT + SLOT, priority="low", preemptible=True)

    response = client_for(owner).post(RESERVATIONS_URL, body(gpu, NEXT_SLOT + SLOT, borrow=True), format="json")

    assert response.status_code == 409
    assert "never preempts" in response.json()["detail"]
    assert response.json()["conflicts"]


def test_the_waitlist_confirms_the_team_with_less_recent_use_first(cluster, owner, teammate, outsider, frozen):
    book(owner, cluster["node1"])  # Vision: 8 GPU-hours this morning
    frozen.move_to(NEXT_SLOT + SLOT + timedelta(minutes=30))
    later = NEXT_SLOT + 3 * SLOT
    blocker = book(teammate, cluster["node2"][:1], start=later)
    vision = book(owner, cluster["node2"][:1], start=later, waitlist=True)
    language = book(outsider, cluster["node2"][:1], start=later, waitlist=True)  # asked after Vision

    services.reservation_cancel(reservation_id=blocker.pk, actor=teammate, reason="Freed.")
    services.waitlist_promote()

    vision.refresh_from_db()
    language.refresh_from_db()
    assert (language.status, vision.status) == ("confirmed", "waitlisted")
