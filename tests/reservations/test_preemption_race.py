"""Two (or more) high bookings racing for the same preemptible victim, through the real API against
real PostgreSQL: one wins, nothing is double-booked, and the victim is preempted once."""

from collections import Counter
from datetime import datetime, timezone as dt_timezone

import pytest
from django.contrib.auth.models import Permission

from reservations import services
from reservations.models import AuditEntry, Notice, Reservation

from ..support import book, client_for, make_user, overlapping_live_pairs, race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("frozen")]
TWELVE = datetime(2030, 1, 7, 12, 0, tzinfo=dt_timezone.utc)
RACERS = 8


@pytest.fixture
def high_racers(team):
    permission = Permission.objects.get(codename="book_high_priority")
    users = [make_user(f"prod{i}", team) for i in range(RACERS)]
    for user in users:
        user.user_permissions.add(permission)
    return [client_for(user) for user in users]


@pytest.mark.parametrize("begun", [True, False], ids=["running victim", "victim not begun"])
def test_high_bookings_racing_for_one_victim_one_wins_and_it_is_preempted_once(
    high_racers, cluster, owner, frozen, begun
):
    gpu = cluster["node1"][0]
    victim = book(owner, [gpu], start=TWELVE if not begun else TWELVE.replace(hour=10), slots=2, priority="low")
    if begun:
        frozen.move_to(TWELVE.replace(hour=10, minute=20))

    responses = race(high_racers, {"gpus": [gpu.pk], "start": "2030-01-07T12:00:00Z", "slots": 1, "priority": "high"})
    statuses = [r.status_code for r in responses]

    assert Counter(statuses) == {201: 1, 409: RACERS - 1}
    assert overlapping_live_pairs() == 0
    winner = Reservation.objects.get(priority="high")
    victim.refresh_from_db()
    assert AuditEntry.objects.filter(reservation=victim, action__in=["preempt", "move"]).count() == 1
    assert Notice.objects.filter(user=owner).count() == 1
    if begun:
        assert victim.preempted_by == winner and victim.end == TWELVE
        assert Reservation.objects.filter(rebook_of=victim).count() == 1
    else:
        assert victim.allocations.get().gpu_id != gpu.pk


def test_a_victim_preempted_again_by_an_earlier_booking_is_cut_again_and_rebooked_for_the_rest(
    cluster, owner, high_booker, frozen
):
    gpu = cluster["node1"][0]
    victim = book(owner, [gpu], start=TWELVE.replace(hour=10), slots=3, priority="low")  # 10-16
    frozen.move_to(TWELVE.replace(hour=10, minute=20))
    later = client_for(high_booker).post(
        "/api/v1/reservations/", {"gpus": [gpu.pk], "start": "2030-01-07T14:00:00Z", "slots": 1, "priority": "high"},
        format="json",
    ).json()
    sooner = client_for(high_booker).post(
        "/api/v1/reservations/", {"gpus": [gpu.pk], "start": "2030-01-07T12:00:00Z", "slots": 1, "priority": "high"},
        format="json",
    ).json()

    victim.refresh_from_db()
    assert (victim.end, victim.preempted_by_id) == (TWELVE, sooner["id"])
    assert later["status"] == sooner["status"] == "confirmed"
    assert overlapping_live_pairs() == 0
    rebooked = sum(
        (r.end - r.start).total_seconds() / 3600 for r in Reservation.objects.filter(rebook_of=victim)
    )
    assert rebooked == 4  # 12-14 and 14-16: all that was unused, once
    services.reservations_reclaim_due(now=TWELVE)
    victim.refresh_from_db()
    assert victim.status == "preempted"
