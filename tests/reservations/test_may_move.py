"""When a booking may be moved: one rule (policy.may_move), which the booking page uses to offer the
move form and the move service to refuse."""

from datetime import timedelta

import pytest
from django.utils import timezone

from reservations import policy, services
from reservations.errors import BookingError
from reservations.models import Reservation

from ..support import NEXT_SLOT, SLOT, book, page_client

pytestmark = pytest.mark.usefixtures("frozen")


def test_a_confirmed_booking_may_be_moved_until_its_start(cluster, owner):
    reservation = book(owner, cluster["node1"][:1])

    assert policy.may_move(reservation, timezone.now())
    assert policy.may_move(reservation, NEXT_SLOT - timedelta(seconds=1))
    assert not policy.may_move(reservation, NEXT_SLOT)


@pytest.mark.parametrize("status", ["active", "cancelled", "waitlisted", "preempted"])
def test_a_booking_that_is_not_confirmed_may_not_be_moved(cluster, owner, status):
    reservation = book(owner, cluster["node1"][:1])
    reservation.status = status

    assert not policy.may_move(reservation, timezone.now())


def test_the_page_offers_the_move_and_the_service_moves_a_booking_the_rule_allows(cluster, owner):
    reservation = book(owner, cluster["node1"][:1])

    page = page_client(owner).get(f"/bookings/{reservation.pk}/").content.decode()
    services.reservation_move(reservation_id=reservation.pk, actor=owner, start=NEXT_SLOT + SLOT, slots=1, reason="later")

    assert f'id="move-{reservation.pk}-start"' in page
    assert Reservation.objects.get(pk=reservation.pk).start == NEXT_SLOT + SLOT


def test_the_page_hides_the_move_and_the_service_refuses_a_booking_that_has_started(cluster, owner, frozen):
    reservation = book(owner, cluster["node1"][:1])
    frozen.move_to(NEXT_SLOT + timedelta(minutes=1))  # begun, before the clock marks it active

    page = page_client(owner).get(f"/bookings/{reservation.pk}/").content.decode()
    with pytest.raises(BookingError, match="has not started"):
        services.reservation_move(reservation_id=reservation.pk, actor=owner, start=NEXT_SLOT + SLOT, slots=1, reason="later")

    assert f'id="move-{reservation.pk}-start"' not in page
