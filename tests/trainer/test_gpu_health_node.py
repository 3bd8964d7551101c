"""GPU health end to end: a real node worker whose devices are the device double (a file the test
rewrites), reading them at each heartbeat (1 s here) and sending the readings to the health check in
the real database."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from reservations import policy, selectors
from reservations.models import GPU, Allocation, AuditEntry, GpuAlert, Notice, Reservation

from ..hardware_double import DeviceFile
from ..support import book, wait_for
from ..workers import NodeWorker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]
HOST = "health-node"


@pytest.fixture
def devices(tmp_path):
    return DeviceFile(tmp_path / "devices.json")


@pytest.fixture
def node(tmp_path, devices):
    worker = NodeWorker(
        tmp_path / "node.log", HOST, NODE_DEVICES=devices.setting, NODE_METRICS_PORT="0", GPU_RECOVERY_READINGS="2"
    )
    worker.start()
    yield list(GPU.objects.filter(node__hostname=HOST).order_by("index"))
    worker.stop()


def booking_on_it_now(user, team, gpu):
    """A booking holding `gpu` from a minute ago to the next slot boundary (made directly: the
    health check only reads who holds the GPU now)."""
    now = timezone.now()
    reservation = Reservation.objects.create(
        user=user, team=team, start=now - timedelta(minutes=1), end=policy.ceil_to_slot(now), gpu_count=1
    )
    Allocation.objects.create(reservation=reservation, gpu=gpu, start=reservation.start, end=reservation.end)
    return reservation


def count(user, kind=Notice.Kind.GPU_ALERT):
    return Notice.objects.filter(user=user, kind=kind).count()


def test_a_hot_gpu_alerts_once_per_episode_and_an_ecc_error_takes_it_out_until_it_is_reset(
    node, devices, owner, staff, team
):
    gpu = node[0]
    now_booking = booking_on_it_now(owner, team, gpu)
    devices.set(0, temperature_c=90)

    wait_for(lambda: count(owner) == 1, 15, "the owner's alert")
    time.sleep(3.5)  # three more heartbeats, still hot
    assert count(owner) == 1 and count(staff) == 1
    assert Notice.objects.get(user=owner, kind=Notice.Kind.GPU_ALERT).reservation_id == now_booking.pk
    assert AuditEntry.objects.filter(action=AuditEntry.Action.GPU_ALERT, target=f"gpu:{gpu.pk}").count() == 1

    devices.set(0, temperature_c=60)
    wait_for(lambda: GpuAlert.objects.filter(gpu=gpu, ended__isnull=False).exists(), 15, "the episode to end")
    devices.set(0, temperature_c=91)
    wait_for(lambda: count(owner) == 2 and count(staff) == 2, 15, "the second episode's alerts")

    upcoming = book(owner, [gpu], start=policy.ceil_to_slot(timezone.now()))
    devices.set(0, temperature_c=60, ecc_errors=1)
    wait_for(lambda: not GPU.objects.get(pk=gpu.pk).healthy, 15, "the GPU to be taken out")

    later = selectors.find_windows(slots=1, after=timezone.now(), now=timezone.now(), gpu_count=1, limit=20)
    assert later and all(gpu.pk not in w.gpus for w in later)
    told = Notice.objects.get(user=owner, kind=Notice.Kind.GPU_UNHEALTHY, reservation=upcoming)
    assert told.data["suggestion"]["gpus"] == [node[1].pk] and f"/bookings/{upcoming.pk}/" in told.message
    assert count(staff, Notice.Kind.GPU_UNHEALTHY) == 1

    time.sleep(3.5)  # clean readings, but the count still shows the error: it needs a GPU reset
    assert not GPU.objects.get(pk=gpu.pk).healthy
    devices.set(0, ecc_errors=0)  # the GPU was reset
    wait_for(lambda: GPU.objects.get(pk=gpu.pk).healthy, 15, "the reset and two clean readings to bring it back")
    assert AuditEntry.objects.filter(action=AuditEntry.Action.GPU_HEALTHY, target=f"gpu:{gpu.pk}").count() == 1
    assert count(staff, Notice.Kind.GPU_RECOVERED) == 1
