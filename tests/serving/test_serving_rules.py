"""Booking rules that read a booking's work: a serving booking is work like a training job."""

from datetime import timedelta

import pytest
from django.utils import timezone

from reservations import selectors
from reservations.models import Reservation
from serving.models import Serving
from trainer import services

from ..support import NEXT_SLOT, SLOT, book

pytestmark = pytest.mark.django_db


def serving_booking(owner, gpu, slots=4):
    reservation = book(owner, [gpu], start=NEXT_SLOT, slots=slots, work={"serve": {"models": ["defects"], "preload": []}})
    Reservation.objects.filter(pk=reservation.pk).update(status="active")
    return reservation



def test_a_serving_booking_is_not_a_no_show(cluster, owner, defects, frozen, settings):
    settings.NO_SHOW_RELEASE = True
    reservation = serving_booking(owner, cluster["node1"][0])
    frozen.move_to(NEXT_SLOT + SLOT + timedelta(minutes=5))

    assert services.reservations_release_unused(now=timezone.now()) == 0
    reservation.refresh_from_db()
    assert reservation.end == NEXT_SLOT + 4 * SLOT


def test_serving_counts_as_use_from_its_replicas_start_to_its_end(cluster, owner, defects, frozen):
    reservation = serving_booking(owner, cluster["node1"][0])
    Serving.objects.filter(reservation=reservation).update(
        status="stopped", started_at=NEXT_SLOT + timedelta(minutes=30), ended_at=NEXT_SLOT + SLOT + timedelta(minutes=30)
    )
    frozen.move_to(NEXT_SLOT + 4 * SLOT)

    [row] = selectors.usage_report(start=NEXT_SLOT, end=NEXT_SLOT + 4 * SLOT, now=timezone.now())

    assert row["booked_gpu_hours"] == 4 * SLOT.total_seconds() / 3600
    assert row["used_gpu_hours"] == SLOT.total_seconds() / 3600
    assert row["no_shows"] == 0
