"""GPU discovery and telemetry behind one small interface.

`detect()` returns the NVML implementation on a machine with NVIDIA GPUs and otherwise the CPU one,
which offers CPU_DEVICE_COUNT devices so that booking, training, checkpointing and resuming all run
end to end on a machine without a GPU. Nothing else in the project talks to NVML.

A reading NVML refuses (a consumer card has no ECC, a MIG slice no power meter) is None: telemetry
reports what the device has and never fails a heartbeat over what it has not.
"""

import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

from django.conf import settings

from reservations.models import GPU
from reservations.services import Device  # what node registration takes

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Drained per device and heartbeat at most: a GPU spewing XIDs must not hold the heartbeat up.
XID_EVENTS_PER_READ = 100


@dataclass(frozen=True)
class Telemetry:
    """One device's readings. Memory in MiB, power in watts; ECC is the volatile uncorrected count
    (since the driver loaded), XID the critical XID events seen since this process started."""

    index: int
    utilization_pct: float | None
    memory_used_mb: int | None
    temperature_c: float | None = None
    memory_free_mb: int | None = None
    power_w: float | None = None
    ecc_errors: int | None = None
    xid_errors: int | None = None
    # NVML cannot reach the device at all (fallen off the bus, XID 79): a failure, not a gap.
    lost: bool = False


class NvmlHardware:
    kind = "nvml"

    def __init__(self, nvml=None):
        if nvml is None:
            import pynvml as nvml  # from nvidia-ml-py; only where NVML is wanted

        self.nvml = nvml
        nvml.nvmlInit()
        self.xid_sets = {}  # index -> event set, or None where the device takes no XID events
        self.xid_counts = {}

    def _handles(self):
        """(index, handle) per device; the handle None for a device NVML cannot reach, so that one
        lost GPU neither stops the others being read nor goes unreported."""
        found = []
        for index in range(self.nvml.nvmlDeviceGetCount()):
            try:
                found.append((index, self.nvml.nvmlDeviceGetHandleByIndex(index)))
            except self.nvml.NVMLError as exc:
                log.warning("GPU %s cannot be reached through NVML (%s)", index, exc)
                found.append((index, None))
        return found

    def _read(self, call, *args):
        """One NVML call; None when NVML refuses it (not supported, no permission, GPU lost)."""
        try:
            return call(*args)
        except self.nvml.NVMLError as exc:
            log.debug("NVML %s refused: %s", getattr(call, "__name__", call), exc)
            return None

    def devices(self):
        found = []
        for index, handle in self._handles():
            if handle is None:
                continue
            name = self.nvml.nvmlDeviceGetName(handle)
            found.append(
                Device(
                    index=index,
                    model=name.decode() if isinstance(name, bytes) else name,
                    memory_mb=self.nvml.nvmlDeviceGetMemoryInfo(handle).total // MIB,
                    uuid=str(self.nvml.nvmlDeviceGetUUID(handle)),
                )
            )
        return found

    def telemetry(self):
        nvml, read = self.nvml, self._read
        readings = []
        for index, handle in self._handles():
            if handle is None:
                readings.append(Telemetry(index=index, utilization_pct=None, memory_used_mb=None, lost=True))
                continue
            utilization = read(nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = read(nvml.nvmlDeviceGetMemoryInfo, handle)
            temperature = read(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            milliwatts = read(nvml.nvmlDeviceGetPowerUsage, handle)
            ecc = read(
                nvml.nvmlDeviceGetTotalEccErrors, handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
            )
            readings.append(
                Telemetry(
                    index=index,
                    utilization_pct=None if utilization is None else float(utilization.gpu),
                    memory_used_mb=None if memory is None else memory.used // MIB,
                    temperature_c=None if temperature is None else float(temperature),
                    memory_free_mb=None if memory is None else memory.free // MIB,
                    power_w=None if milliwatts is None else milliwatts / 1000,
                    ecc_errors=None if ecc is None else int(ecc),
                    xid_errors=self._xid_errors(index, handle),
                )
            )
        return readings

    def _xid_errors(self, index, handle):
        """Critical XID events since this process started, counted from an NVML event set of the
        device's own (one per device, so every event is this device's). None where the device
        takes no XID events (NVML refuses to register them)."""
        nvml = self.nvml
        if index not in self.xid_sets:
            event_set = self._read(nvml.nvmlEventSetCreate)
            if event_set is not None:
                try:
                    nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, event_set)
                except nvml.NVMLError as exc:
                    log.info("GPU %s takes no XID events (%s); its XID count is not read", index, exc)
                    self._read(nvml.nvmlEventSetFree, event_set)
                    event_set = None
            self.xid_sets[index] = event_set
            self.xid_counts[index] = 0
        event_set = self.xid_sets[index]
        if event_set is None:
            return None
        for _ in range(XID_EVENTS_PER_READ):
            try:
                event = nvml.nvmlEventSetWait_v2(event_set, 0)
            except nvml.NVMLError:  # NVML_ERROR_TIMEOUT: nothing waiting
                break
            if event.eventType == nvml.nvmlEventTypeXidCriticalError:
                self.xid_counts[index] += 1
                log.warning("GPU %s: XID %s", index, event.eventData)
        return self.xid_counts[index]


class CpuHardware:
    """No GPU here: offer CPU "devices" so the whole flow runs; training uses device="cpu"."""

    kind = "cpu"

    def __init__(self, count=None):
        self.count = count or settings.CPU_DEVICE_COUNT

    def devices(self):
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
        return [Device(index=i, model=GPU.CPU_MODEL, memory_mb=total_mb // self.count, uuid=f"cpu-{i}") for i in range(self.count)]

    def telemetry(self):
        load = min(os.getloadavg()[0] / (os.cpu_count() or 1) * 100, 100.0)
        used, free = _machine_memory_mb()
        # Each device was offered an equal share of the machine's memory (devices()); so is its use.
        share = (lambda mb: None if mb is None else mb // self.count)
        return [
            Telemetry(index=i, utilization_pct=load, memory_used_mb=share(used), memory_free_mb=share(free))
            for i in range(self.count)
        ]


def _machine_memory_mb():
    """(used, available) MiB from /proc/meminfo, or (None, None) where there is none."""
    try:
        values = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0])  # kB
        total, available = values["MemTotal"] // 1024, values["MemAvailable"] // 1024
    except (OSError, KeyError, ValueError, IndexError):
        return None, None
    return total - available, available


class FileHardware:
    """A device double, selected with NODE_DEVICES=double:<json file>: the devices and their
    readings come from the file, read again at every heartbeat, so a test (or a rehearsal of the
    alerts) heats a GPU or gives it an ECC error by rewriting the file under a running worker.

    {"devices": [{"index": 0, "model": "H100", "memory_mb": 81559}],
     "readings": [{"index": 0, "temperature_c": 90, "ecc_errors": 0, ...}]}   (Telemetry's fields)
    """

    kind = "double"

    def __init__(self, path):
        self.path = Path(path)

    def _load(self):
        return json.loads(self.path.read_text())

    def devices(self):
        return [
            Device(index=d["index"], model=d.get("model", "double"), memory_mb=d.get("memory_mb", 0),
                   uuid=d.get("uuid", f"double-{d['index']}"))
            for d in self._load()["devices"]
        ]

    def telemetry(self):
        known = {f.name for f in fields(Telemetry)}
        readings = []
        for reading in self._load().get("readings", []):
            values = {name: None for name in known} | {k: v for k, v in reading.items() if k in known}
            readings.append(Telemetry(**values))
        return readings


def detect():
    if settings.NODE_DEVICES == "cpu":
        return CpuHardware()
    if settings.NODE_DEVICES.startswith("double:"):
        return FileHardware(settings.NODE_DEVICES.removeprefix("double:"))
    try:
        hardware = NvmlHardware()
        if hardware.devices():
            return hardware
    except Exception as exc:  # no driver, no library, no device: all mean "no NVIDIA GPU here"
        log.info("NVML unavailable (%s); offering CPU devices", exc)
    return CpuHardware()
