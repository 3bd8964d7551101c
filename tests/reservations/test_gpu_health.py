"""GPU health from the node agents' readings (services.gpu_readings_record): alerts once per episode
to the booking's owner and the admins, a failing GPU taken out of booking with a suggested move for
its bookings, and brought back by clean readings in a row."""

from datetime import timedelta

import pytest
from django.test import Client

from reservations import selectors
from reservations.errors import BookingError
from reservations.models import GPU, AuditEntry, GpuAlert, GpuReading, Notice
from reservations.services import Device, gpu_readings_record, node_register
from trainer.hardware import Telemetry

from ..support import NEXT_SLOT, SLOT, book, make_user

pytestmark = pytest.mark.usefixtures("frozen")
DURING = NEXT_SLOT + timedelta(minutes=10)  # inside the bookings made for NEXT_SLOT
Action = AuditEntry.Action


def reading(index, **values):
    return Telemetry(**({
        "index": index, "utilization_pct": 50.0, "memory_used_mb": 1000, "memory_free_mb": 80000,
        "temperature_c": 50.0, "power_w": 200.0, "ecc_errors": 0, "xid_errors": 0,
    } | values))


def send(node_gpus, now=DURING, **values):
    """One heartbeat of node1: GPU 0 with `values`, the others normal."""
    node = node_gpus[0].node
    return gpu_readings_record(node=node, readings=[reading(0, **values)] + [reading(i) for i in range(1, 4)], now=now)


def alerts_to(user, kind=Notice.Kind.GPU_ALERT):
    return list(Notice.objects.filter(user=user, kind=kind).order_by("id"))


@pytest.fixture
def admin2(db):
    return make_user("admin2", None, is_staff=True)


def test_a_hot_gpu_alerts_its_booking_owner_and_each_admin_once_per_episode(cluster, owner, staff, admin2):
    gpus = cluster["node1"]
    booking = book(owner, gpus[:1])
    for minute in range(3):
        send(gpus, now=DURING + timedelta(minutes=minute), temperature_c=88.0)

    [to_owner] = alerts_to(owner)
    assert to_owner.reservation_id == booking.pk and "88 °C" in to_owner.message
    assert to_owner.data["booking_url"] == f"/bookings/{booking.pk}/" and to_owner.data["alert"] == "temperature"
    assert len(alerts_to(staff)) == 1 and len(alerts_to(admin2)) == 1
    assert alerts_to(staff)[0].reservation is None  # the team's webhook hears it once, from the owner's
    [entry] = AuditEntry.objects.filter(action=Action.GPU_ALERT)
    assert entry.target == f"gpu:{gpus[0].pk}"
    assert GPU.objects.get(pk=gpus[0].pk).healthy  # hot is an alert, not a failure

    send(gpus, now=DURING + timedelta(minutes=4), temperature_c=70.0)
    assert GpuAlert.objects.get(kind="temperature").ended is not None
    assert AuditEntry.objects.filter(action=Action.GPU_ALERT_END, target=f"gpu:{gpus[0].pk}").count() == 1

    send(gpus, now=DURING + timedelta(minutes=5), temperature_c=86.0)
    send(gpus, now=DURING + timedelta(minutes=6), temperature_c=87.0)
    assert len(alerts_to(owner)) == 2 and len(alerts_to(staff)) == 2
    assert AuditEntry.objects.filter(action=Action.GPU_ALERT).count() == 2


def test_no_booking_on_the_gpu_means_only_the_admins_are_told(cluster, owner, staff):
    send(cluster["node1"], temperature_c=90.0)

    assert alerts_to(owner) == [] and len(alerts_to(staff)) == 1


def test_memory_nearly_full_alerts_and_readings_are_stored_in_their_units(cluster, staff):
    gpus = cluster["node1"]
    send(gpus, memory_used_mb=78000, memory_free_mb=2000, power_w=312.5)

    [alert] = GpuAlert.objects.filter(gpu=gpus[0], ended=None)
    assert alert.kind == "memory" and alert.value == 97.5
    stored = GpuReading.objects.get(gpu=gpus[0])
    assert (stored.memory_used_mb, stored.memory_free_mb, stored.power_w, stored.at) == (78000, 2000, 312.5, DURING)


def test_readings_a_device_cannot_give_are_empty_and_alert_nothing(cluster, staff):
    gpus = cluster["node1"]
    send(gpus, temperature_c=None, memory_used_mb=None, memory_free_mb=None, ecc_errors=None, xid_errors=None)

    assert GpuReading.objects.get(gpu=gpus[0]).temperature_c is None
    assert not GpuAlert.objects.exists() and GPU.objects.get(pk=gpus[0].pk).healthy


def test_an_ecc_error_takes_the_gpu_out_and_its_upcoming_owner_is_offered_the_nearest_window(cluster, owner, staff):
    gpus = cluster["node1"]
    send(gpus, now=NEXT_SLOT - SLOT)  # the error count so far: none
    later = book(owner, gpus[:1], start=NEXT_SLOT + SLOT)

    changed = send(gpus, now=NEXT_SLOT - SLOT + timedelta(minutes=1), ecc_errors=1)

    assert changed == {gpus[0].pk: "unhealthy"} and not GPU.objects.get(pk=gpus[0].pk).healthy
    windows = selectors.find_windows(slots=1, after=NEXT_SLOT, now=NEXT_SLOT - SLOT, gpu_count=1, limit=50)
    assert windows and all(gpus[0].pk not in w.gpus for w in windows)
    offered = selectors.booking_suggestions(now=NEXT_SLOT - SLOT, start=NEXT_SLOT, slots=1, gpu_ids=[gpus[1].pk])
    assert offered and all(gpus[0].pk not in w.gpus for w in offered)
    with pytest.raises(BookingError, match="Not healthy"):
        book(owner, gpus[:1], start=NEXT_SLOT + 2 * SLOT)
    [notice] = alerts_to(owner, Notice.Kind.GPU_UNHEALTHY)
    suggestion = notice.data["suggestion"]
    assert notice.reservation_id == later.pk and f"/bookings/{later.pk}/" in notice.message
    assert suggestion["start"] == "2030-01-07T12:00:00Z" and suggestion["slots"] == 1
    assert len(suggestion["gpus"]) == 1 and suggestion["gpus"][0] != gpus[0].pk
    assert suggestion["gpu_names"][0] in notice.message
    assert len(alerts_to(staff, Notice.Kind.GPU_UNHEALTHY)) == 1
    assert AuditEntry.objects.get(action=Action.GPU_UNHEALTHY).target == f"gpu:{gpus[0].pk}"
    assert GpuAlert.objects.get(gpu=gpus[0], ended=None).kind == "ecc"


def test_clean_readings_in_a_row_bring_a_gpu_failed_for_heat_back(cluster, staff, settings):
    settings.GPU_RECOVERY_READINGS = 3
    gpus = cluster["node1"]
    send(gpus, now=DURING, temperature_c=96.0)
    send(gpus, now=DURING + timedelta(seconds=5), temperature_c=80.0)
    send(gpus, now=DURING + timedelta(seconds=10), temperature_c=97.0)  # failing again: counting starts again
    for second in (15, 20):
        send(gpus, now=DURING + timedelta(seconds=second), temperature_c=70.0)
    assert not GPU.objects.get(pk=gpus[0].pk).healthy

    assert send(gpus, now=DURING + timedelta(seconds=25), temperature_c=70.0) == {gpus[0].pk: "healthy"}

    assert GPU.objects.get(pk=gpus[0].pk).healthy
    assert AuditEntry.objects.filter(action=Action.GPU_HEALTHY, target=f"gpu:{gpus[0].pk}").count() == 1
    assert AuditEntry.objects.filter(action=Action.GPU_UNHEALTHY).count() == 1
    [back] = alerts_to(staff, Notice.Kind.GPU_RECOVERED)
    assert "3 clean readings" in back.message
    assert not GpuAlert.objects.filter(ended=None).exists()


def test_an_ecc_failure_stays_out_through_clean_readings_until_its_count_is_reset(cluster, staff, settings):
    settings.GPU_RECOVERY_READINGS = 2
    gpus = cluster["node1"]
    send(gpus, now=DURING - timedelta(seconds=5))
    send(gpus, now=DURING, ecc_errors=1)
    for second in range(5, 30, 5):  # the count still shows the error: the GPU needs a reset
        send(gpus, now=DURING + timedelta(seconds=second), ecc_errors=1)
    assert not GPU.objects.get(pk=gpus[0].pk).healthy

    send(gpus, now=DURING + timedelta(seconds=30), ecc_errors=0)  # reset: the driver reloaded
    assert not GPU.objects.get(pk=gpus[0].pk).healthy
    assert send(gpus, now=DURING + timedelta(seconds=35), ecc_errors=0) == {gpus[0].pk: "healthy"}

    assert GPU.objects.get(pk=gpus[0].pk).healthy and not GpuAlert.objects.filter(ended=None).exists()
    assert "reset" in AuditEntry.objects.get(action=Action.GPU_ALERT_END).reason


def test_an_xid_failure_stays_out_until_an_admin_returns_it_to_service(cluster, staff, settings):
    settings.GPU_RECOVERY_READINGS = 2
    gpus = cluster["node1"]
    send(gpus, now=DURING - timedelta(seconds=5))
    send(gpus, now=DURING, xid_errors=1)
    send(gpus, now=DURING + timedelta(seconds=5), xid_errors=0)  # the agent restarted: not a GPU reset
    for second in range(10, 30, 5):
        send(gpus, now=DURING + timedelta(seconds=second), xid_errors=0)
    assert not GPU.objects.get(pk=gpus[0].pk).healthy

    root = make_user("root", is_staff=True, is_superuser=True)
    admin = Client()
    admin.force_login(root)
    response = admin.post(
        "/admin/reservations/gpu/", {"action": "return_to_service", "_selected_action": [gpus[0].pk]}
    )

    assert response.status_code == 302
    assert GPU.objects.get(pk=gpus[0].pk).healthy and not GpuAlert.objects.filter(ended=None).exists()
    entry = AuditEntry.objects.get(action=Action.GPU_HEALTHY)
    assert entry.actor == root and "returned to service" in entry.reason
    assert GpuReading.objects.get(gpu=gpus[0]).failed_since is None
    send(gpus, now=DURING + timedelta(seconds=30), xid_errors=0)
    assert GPU.objects.get(pk=gpus[0].pk).healthy


def test_a_temperature_at_the_hard_limit_fails_the_gpu(cluster, staff, settings):
    settings.GPU_TEMP_FAIL_CELSIUS = 95
    send(cluster["node1"], temperature_c=96.0)

    assert not GPU.objects.get(pk=cluster["node1"][0].pk).healthy
    assert "hard limit" in AuditEntry.objects.get(action=Action.GPU_UNHEALTHY).reason


def test_a_restarted_worker_does_not_bring_a_failed_gpu_back_before_its_clean_readings(cluster, staff):
    gpus = cluster["node1"]
    send(gpus, now=DURING - timedelta(seconds=5))
    send(gpus, ecc_errors=4)
    node_register(
        hostname="node1", devices=[Device(index=i, model="A100", memory_mb=81920, uuid=f"node1-{i}") for i in range(4)]
    )

    # Registering again (a worker restart) does not put it back in service, not even until the next reading.
    assert not GPU.objects.get(pk=gpus[0].pk).healthy
    assert GPU.objects.get(pk=gpus[1].pk).healthy
    send(gpus, now=DURING + timedelta(seconds=5), ecc_errors=4)

    assert not GPU.objects.get(pk=gpus[0].pk).healthy
    assert AuditEntry.objects.filter(action=Action.GPU_UNHEALTHY).count() == 1


def test_the_first_error_count_known_is_a_baseline_and_takes_no_gpu_out(cluster, staff):
    gpus = cluster["node1"]
    send(gpus, ecc_errors=3, xid_errors=1)  # counted before this database knew the GPU

    assert GPU.objects.get(pk=gpus[0].pk).healthy and not GpuAlert.objects.exists()
    assert GpuReading.objects.get(gpu=gpus[0]).ecc_errors == 3

    send(gpus, now=DURING + timedelta(seconds=5), ecc_errors=4, xid_errors=1)
    assert not GPU.objects.get(pk=gpus[0].pk).healthy
    assert "1 new uncorrected ECC" in AuditEntry.objects.get(action=Action.GPU_UNHEALTHY).reason


def test_a_failed_count_read_keeps_the_last_count_and_the_next_read_finds_nothing_new(cluster, staff):
    gpus = cluster["node1"]
    send(gpus, ecc_errors=2, xid_errors=1)
    send(gpus, now=DURING + timedelta(seconds=5), ecc_errors=None, xid_errors=None)
    assert GpuReading.objects.get(gpu=gpus[0]).ecc_errors == 2

    send(gpus, now=DURING + timedelta(seconds=10), ecc_errors=2, xid_errors=1)

    assert GPU.objects.get(pk=gpus[0].pk).healthy and not GpuAlert.objects.exists()


def test_a_gpu_the_node_cannot_reach_is_taken_out(cluster, staff):
    gpus = cluster["node1"]
    send(gpus, now=DURING - timedelta(seconds=5), ecc_errors=1)

    changed = send(gpus, lost=True, utilization_pct=None, memory_used_mb=None, memory_free_mb=None,
                   temperature_c=None, power_w=None, ecc_errors=None, xid_errors=None)

    assert changed == {gpus[0].pk: "unhealthy"} and not GPU.objects.get(pk=gpus[0].pk).healthy
    assert "cannot reach" in AuditEntry.objects.get(action=Action.GPU_UNHEALTHY).reason
    assert GpuReading.objects.get(gpu=gpus[0]).ecc_errors == 1


def test_a_gpu_hovering_at_its_alert_threshold_or_unreadable_stays_in_one_episode(cluster, owner, staff, settings):
    settings.GPU_TEMP_ALERT_CELSIUS, settings.GPU_ALERT_CLEAR_MARGIN = 85, 5
    gpus = cluster["node1"]
    book(owner, gpus[:1])
    for step, temperature in enumerate([86.0, 84.0, 86.0, None, 85.5, 81.0, 86.0]):
        send(gpus, now=DURING + timedelta(seconds=5 * step), temperature_c=temperature)

    assert len(alerts_to(owner)) == 1 and len(alerts_to(staff)) == 1
    assert GpuAlert.objects.get().ended is None

    send(gpus, now=DURING + timedelta(minutes=1), temperature_c=79.0)
    assert GpuAlert.objects.get().ended is not None


def test_memory_just_under_its_threshold_does_not_end_the_episode(cluster, staff, settings):
    settings.GPU_MEMORY_ALERT_PCT, settings.GPU_ALERT_CLEAR_MARGIN = 95, 5
    gpus = cluster["node1"]
    send(gpus, memory_used_mb=96, memory_free_mb=4)
    send(gpus, now=DURING + timedelta(seconds=5), memory_used_mb=93, memory_free_mb=7)
    send(gpus, now=DURING + timedelta(seconds=10), memory_used_mb=96, memory_free_mb=4)
    assert len(alerts_to(staff)) == 1 and GpuAlert.objects.get().ended is None

    send(gpus, now=DURING + timedelta(seconds=15), memory_used_mb=80, memory_free_mb=20)
    assert GpuAlert.objects.get().ended is not None
