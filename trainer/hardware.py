"""GPU discovery and telemetry behind one small interface.

`detect()` returns the NVML implementation on a machine with NVIDIA GPUs and otherwise the CPU one,
which offers CPU_DEVICE_COUNT devices so that booking, training, checkpointing and resuming all run
end to end on a machine without a GPU. Nothing else in the project talks to NVML.
"""

import logging
import os
from dataclasses import dataclass

from django.conf import settings

from reservations.services import Device  # what node registration takes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Telemetry:
    index: int
    utilization_pct: float
    memory_used_mb: int
    temperature_c: float | None = None


class NvmlHardware:
    kind = "nvml"

    def __init__(self):
        import pynvml  # from nvidia-ml-py

        self.nvml = pynvml
        pynvml.nvmlInit()

    def _handles(self):
        return [self.nvml.nvmlDeviceGetHandleByIndex(i) for i in range(self.nvml.nvmlDeviceGetCount())]

    def devices(self):
        found = []
        for index, handle in enumerate(self._handles()):
            name = self.nvml.nvmlDeviceGetName(handle)
            found.append(
                Device(
                    index=index,
                    model=name.decode() if isinstance(name, bytes) else name,
                    memory_mb=self.nvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024),
                    uuid=str(self.nvml.nvmlDeviceGetUUID(handle)),
                )
            )
        return found

    def telemetry(self):
        readings = []
        for index, handle in enumerate(self._handles()):
            utilization = self.nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            temperature = self.nvml.nvmlDeviceGetTemperature(handle, self.nvml.NVML_TEMPERATURE_GPU)
            readings.append(Telemetry(index, float(utilization.gpu), memory.used // (1024 * 1024), float(temperature)))
        return readings


class CpuHardware:
    """No GPU here: offer CPU "devices" so the whole flow runs; training uses device="cpu"."""

    kind = "cpu"

    def __init__(self, count=None):
        self.count = count or settings.CPU_DEVICE_COUNT

    def devices(self):
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
        return [Device(index=i, model="cpu", memory_mb=total_mb // self.count, uuid=f"cpu-{i}") for i in range(self.count)]

    def telemetry(self):
        load = os.getloadavg()[0] / (os.cpu_count() or 1) * 100
        return [Telemetry(i, min(load, 100.0), 0) for i in range(self.count)]


def detect():
    if settings.NODE_DEVICES == "cpu":
        return CpuHardware()
    try:
        hardware = NvmlHardware()
        if hardware.devices():
            return hardware
    except Exception as exc:  # no driver, no library, no device: all mean "no NVIDIA GPU here"
        log.info("NVML unavailable (%s); offering CPU devices", exc)
    return CpuHardware()
