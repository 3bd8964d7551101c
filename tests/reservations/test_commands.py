from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token

from reservations import policy, selectors
from reservations.models import GPU, Node, Reservation, Series, Team, TeamQuota
from trainer import hardware
from trainer.hardware import CpuHardware, Device, detect


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def nvml_gpu_models():
    """The NVIDIA GPUs of this machine as NVML itself lists them; [] where there is no library,
    no driver or no device."""
    try:
        import pynvml  # from nvidia-ml-py; a heavy optional library, so imported only here

        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()
    return [name.decode() if isinstance(name, bytes) else name for name in names]


def expected_devices(cpu_count):
    """(index, model) of what detection should offer here: the NVIDIA GPUs, else `cpu_count` CPU devices."""
    return list(enumerate(nvml_gpu_models())) or [(i, "cpu") for i in range(cpu_count)]


def test_detection_offers_the_nvidia_gpus_nvml_lists_and_cpu_devices_where_there_are_none(settings):
    settings.CPU_DEVICE_COUNT = 3

    detected = detect()

    assert detected.kind == ("nvml" if nvml_gpu_models() else "cpu")
    assert [(d.index, d.model) for d in detected.devices()] == expected_devices(3)


def test_detection_falls_back_to_cpu_devices_when_nvml_fails(settings, monkeypatch):
    def no_driver():
        raise OSError("NVML Shared Library Not Found")

    monkeypatch.setattr(hardware, "NvmlHardware", no_driver)
    settings.CPU_DEVICE_COUNT = 3

    detected = detect()

    assert detected.kind == "cpu"
    assert [(d.index, d.model) for d in detected.devices()] == [(0, "cpu"), (1, "cpu"), (2, "cpu")]


@pytest.mark.django_db
def test_register_node_records_this_machines_devices(settings):
    settings.CPU_DEVICE_COUNT = 2
    expected = expected_devices(2)

    output = run("register_node", "--hostname", "box1")

    node = Node.objects.get(hostname="box1")
    assert node.online and node.last_heartbeat is not None
    assert [(g.index, g.model, g.healthy) for g in node.gpus.order_by("index")] == [(i, m, True) for i, m in expected]
    assert f"box1/gpu{len(expected) - 1}" in output


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
    # A recurring booking of erin's: its Mondays are ordinary bookings, and a second run adds none.
    series = Series.objects.get()
    assert (series.user.username, series.rule) == ("erin", "FREQ=WEEKLY;COUNT=4")
    mondays = list(series.occurrences.values_list("start", flat=True))
    assert mondays and all(start.weekday() == 0 and start.hour == 8 for start in mondays)
    assert f"Series #{series.pk} of erin's" in first


@pytest.mark.django_db(transaction=True)
def test_seed_demo_shows_fair_sharing_at_work_and_leaves_room_for_the_readmes_walk_through():
    output = run("seed_demo")

    vision, nlp, platform = (Team.objects.get(slug=slug) for slug in ("vision", "nlp", "platform"))
    assert not TeamQuota.objects.filter(team=platform).exists()  # unlimited
    assert nlp.quota.gpu_hours_per_week and nlp.quota.max_gpus
    borrowed = Reservation.objects.get(borrowed=True)
    assert (borrowed.team, borrowed.user.username, borrowed.status) == (vision, "bob", "confirmed")
    assert f"Booking #{borrowed.pk} of bob's is borrowed time" in output
    # Over the quota in its week: in quota it would not have fitted what was left.
    there = selectors.team_standings([vision], borrowed.start)[0]
    assert there.remaining_hours < policy.gpu_hours(borrowed.gpu_count, borrowed.start, borrowed.end)
    # README's API walk-through books 8 GPU-hours of vision's this week (bob's and alice's).
    assert selectors.team_standings([vision], timezone.now())[0].remaining_hours >= 8


def test_cpu_hardware_reports_telemetry_per_device():
    readings = CpuHardware(2).telemetry()

    assert [r.index for r in readings] == [0, 1]
    assert all(0 <= r.utilization_pct <= 100 for r in readings)


def test_a_node_set_to_cpu_devices_offers_them_even_where_nvml_finds_gpus(settings, monkeypatch):
    class TwoGpus:
        kind = "nvml"

        def devices(self):
            return [Device(index=i, model="NVIDIA H100", memory_mb=81559) for i in range(2)]

    monkeypatch.setattr(hardware, "NvmlHardware", TwoGpus)
    settings.CPU_DEVICE_COUNT = 1

    settings.NODE_DEVICES = "auto"
    assert detect().kind == "nvml"
    settings.NODE_DEVICES = "cpu"
    assert [(d.index, d.model) for d in detect().devices()] == [(0, "cpu")]
