from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from reservations.models import GPU, Node, Reservation, Team
from trainer.hardware import CpuHardware, detect


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_without_nvidia_gpus_detection_offers_cpu_devices(settings):
    settings.CPU_DEVICE_COUNT = 3
    hardware = detect()

    assert hardware.kind == "cpu"  # these machines have no NVIDIA driver
    assert [(d.index, d.model) for d in hardware.devices()] == [(0, "cpu"), (1, "cpu"), (2, "cpu")]


@pytest.mark.django_db
def test_register_node_records_this_machines_devices(settings):
    settings.CPU_DEVICE_COUNT = 2

    output = run("register_node", "--hostname", "box1")

    node = Node.objects.get(hostname="box1")
    assert node.online and node.last_heartbeat is not None
    assert [(g.index, g.model, g.healthy) for g in node.gpus.order_by("index")] == [(0, "cpu", True), (1, "cpu", True)]
    assert "box1/gpu1" in output


@pytest.mark.django_db
def test_a_device_that_disappears_is_kept_but_marked_unhealthy():
    run("register_node", "--hostname", "box1", "--cpu", "2")

    run("register_node", "--hostname", "box1", "--cpu", "1")

    assert list(GPU.objects.filter(node__hostname="box1").order_by("index").values_list("healthy", flat=True)) == [True, False]


@pytest.mark.django_db(transaction=True)
def test_seed_demo_builds_the_demo_cluster_once():
    first = run("seed_demo")
    bookings = Reservation.objects.count()
    run("seed_demo")

    assert Node.objects.count() == 2 and GPU.objects.count() == 8
    assert Team.objects.count() == 3
    assert Token.objects.filter(user__username="ci-bot").exists()
    assert get_user_model().objects.get(username="admin").is_staff
    assert get_user_model().objects.get(username="ci-bot").has_perm("reservations.book_high_priority")
    assert bookings > 10 and Reservation.objects.count() == bookings  # a second run adds nothing
    assert Token.objects.get(user__username="alice").key in first


def test_cpu_hardware_reports_telemetry_per_device():
    readings = CpuHardware(2).telemetry()

    assert [r.index for r in readings] == [0, 1]
    assert all(0 <= r.utilization_pct <= 100 for r in readings)
