"""Telemetry through the hardware interface: NVML's raw units become MiB, watts and counts, a
reading NVML refuses becomes None, the CPU devices report what this machine has; and a real node
worker serves its GPUs' readings for Prometheus."""

import socket
import urllib.request

import pytest

from trainer.hardware import CpuHardware, FileHardware, NvmlHardware, Telemetry

from ..hardware_double import DeviceFile, fake_nvml
from ..support import wait_for
from ..workers import NodeWorker

MIB = 1024 * 1024
H100 = {
    "name": b"NVIDIA H100 80GB HBM3", "uuid": "GPU-1", "total": 81559 * MIB, "used": 2048 * MIB,
    "util": 37, "temp": 61, "milliwatts": 243_500, "ecc": 2,
}


def test_nvml_readings_are_converted_to_mib_watts_and_counts():
    hardware = NvmlHardware(nvml=fake_nvml([H100], xid_events={0: [(8, 79), (8, 48)]}))

    [reading] = hardware.telemetry()

    assert reading == Telemetry(
        index=0, utilization_pct=37.0, memory_used_mb=2048, temperature_c=61.0, memory_free_mb=79511,
        power_w=243.5, ecc_errors=2, xid_errors=2,
    )
    [device] = hardware.devices()
    assert (device.model, device.memory_mb) == ("NVIDIA H100 80GB HBM3", 81559)


def test_xid_events_are_counted_across_heartbeats_and_other_events_are_not():
    events = {0: [(8, 79)]}
    hardware = NvmlHardware(nvml=fake_nvml([H100], xid_events=events))

    assert hardware.telemetry()[0].xid_errors == 1
    events[0] += [(8, 13), (4, 0)]  # 4: not an XID critical error
    assert hardware.telemetry()[0].xid_errors == 2
    assert hardware.telemetry()[0].xid_errors == 2


def test_readings_nvml_refuses_are_none_and_the_others_still_read():
    refused = ("nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetTemperature", "nvmlDeviceRegisterEvents")
    hardware = NvmlHardware(nvml=fake_nvml([H100, dict(H100, uuid="GPU-2")], refused=refused))

    readings = hardware.telemetry()

    assert [r.index for r in readings] == [0, 1]
    assert all(r.power_w is None and r.ecc_errors is None and r.temperature_c is None for r in readings)
    assert all(r.xid_errors is None for r in readings)
    assert all(r.memory_used_mb == 2048 and r.utilization_pct == 37.0 for r in readings)


def test_a_gpu_fallen_off_the_bus_is_reported_lost_and_the_others_still_read():
    hardware = NvmlHardware(nvml=fake_nvml([H100, H100 | {"uuid": "GPU-2", "temp": 70}], lost={0}))

    lost, other = hardware.telemetry()

    assert lost == Telemetry(index=0, utilization_pct=None, memory_used_mb=None, lost=True)
    assert other.index == 1 and other.temperature_c == 70.0 and not other.lost
    assert [d.uuid for d in hardware.devices()] == ["GPU-2"]


def test_cpu_devices_report_load_and_their_share_of_this_machines_memory():
    hardware = CpuHardware(2)
    [first, second] = hardware.telemetry()
    share = hardware.devices()[0].memory_mb

    assert 0 <= first.utilization_pct <= 100
    assert 0 < first.memory_used_mb < share and 0 < first.memory_free_mb < share
    assert first.memory_used_mb + first.memory_free_mb <= share + 1
    assert (first.temperature_c, first.power_w, first.ecc_errors, first.xid_errors) == (None, None, None, None)
    assert second.index == 1


def test_the_device_file_double_is_read_again_at_each_reading(tmp_path):
    devices = DeviceFile(tmp_path / "devices.json")
    hardware = FileHardware(devices.path)

    assert [d.index for d in hardware.devices()] == [0, 1]
    devices.set(1, temperature_c=91, power_w=None)
    assert hardware.telemetry()[1].temperature_c == 91 and hardware.telemetry()[1].power_w is None


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_node_worker_serves_its_gpu_readings_for_prometheus(tmp_path):
    devices = DeviceFile(tmp_path / "devices.json")
    devices.set(1, temperature_c=66.5, memory_used_mb=4096, memory_free_mb=77463, power_w=250.25, ecc_errors=3)
    port = free_port()
    worker = NodeWorker(tmp_path / "node.log", "metrics-node", NODE_DEVICES=devices.setting, NODE_METRICS_PORT=str(port))
    try:
        worker.start()
        text = wait_for(lambda: "gpu_temp_celsius{" in scrape(port) and scrape(port), 30, "the GPU metrics")

        assert 'gpu_temp_celsius{gpu="1",node="metrics-node"} 66.5' in text
        assert 'gpu_memory_used_mib{gpu="1",node="metrics-node"} 4096.0' in text
        assert 'gpu_memory_free_mib{gpu="1",node="metrics-node"} 77463.0' in text
        assert 'gpu_power_watts{gpu="1",node="metrics-node"} 250.25' in text
        assert 'gpu_utilization_percent{gpu="0",node="metrics-node"} 10.0' in text
        assert 'gpu_ecc_errors_total{gpu="1",node="metrics-node"} 3.0' in text
        assert 'gpu_xid_errors_total{gpu="0",node="metrics-node"} 0.0' in text

        devices.set(0, temperature_c=71)  # read again at the next heartbeat
        wait_for(lambda: 'gpu_temp_celsius{gpu="0",node="metrics-node"} 71.0' in scrape(port), 15, "the new reading")
    finally:
        worker.stop()
