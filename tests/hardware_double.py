"""Doubles of the hardware, the one thing tests may fake: a device file that a node worker started
with NODE_DEVICES=double:<file> reads at every heartbeat, and a tiny `pynvml` stand-in that
NvmlHardware takes in place of the real module."""

import json
import os
from types import SimpleNamespace


class DeviceFile:
    """The devices and readings of a FileHardware node, rewritten whole (a rename) so the worker
    never reads half a file."""

    def __init__(self, path, count=2, model="H100", memory_mb=81559):
        self.path = path
        self.devices = [{"index": i, "model": model, "memory_mb": memory_mb} for i in range(count)]
        self.readings = {
            i: {"index": i, "temperature_c": 40, "memory_used_mb": 1000, "memory_free_mb": memory_mb - 1000,
                "utilization_pct": 10, "power_w": 120.5, "ecc_errors": 0, "xid_errors": 0}
            for i in range(count)
        }
        self.write()

    @property
    def setting(self):
        return f"double:{self.path}"

    def set(self, index, **values):
        self.readings[index].update(values)
        self.write()

    def write(self):
        temporary = f"{self.path}.tmp"
        with open(temporary, "w") as out:
            json.dump({"devices": self.devices, "readings": list(self.readings.values())}, out)
        os.replace(temporary, self.path)


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


class NVMLError_Timeout(NVMLError):
    pass


class NVMLError_GpuIsLost(NVMLError):
    pass


def fake_nvml(devices, refused=(), xid_events=None, lost=()):
    """A `pynvml` with `devices`: dicts of raw NVML values (bytes, milliwatts, ...). Calls named in
    `refused` raise NVMLError_NotSupported, as on a card without that sensor. `xid_events`: per
    device index, a list of (event type, XID) waiting in its event set. Device indexes in `lost`
    have fallen off the bus: NVML gives no handle for them."""
    xid_events = xid_events if xid_events is not None else {}

    def handle(index):
        if index in lost:
            raise NVMLError_GpuIsLost(f"GPU {index} is lost")
        return {"index": index, **devices[index]}

    def call(name, body):
        def function(*args):
            if name in refused:
                raise NVMLError_NotSupported(name)
            return body(*args)

        function.__name__ = name
        return function

    def wait(event_set, timeout_ms):
        waiting = xid_events.get(event_set["index"], [])
        if not waiting:
            raise NVMLError_Timeout("timeout")
        event_type, xid = waiting.pop(0)
        return SimpleNamespace(eventType=event_type, eventData=xid)

    def register(handle, event_types, event_set):
        if "nvmlDeviceRegisterEvents" in refused:
            raise NVMLError_NotSupported("events")
        event_set["index"] = handle["index"]

    return SimpleNamespace(
        NVMLError=NVMLError,
        NVML_TEMPERATURE_GPU=0,
        NVML_MEMORY_ERROR_TYPE_UNCORRECTED=1,
        NVML_VOLATILE_ECC=0,
        nvmlEventTypeXidCriticalError=8,
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=handle,
        nvmlDeviceGetName=call("nvmlDeviceGetName", lambda h: h["name"]),
        nvmlDeviceGetUUID=call("nvmlDeviceGetUUID", lambda h: h["uuid"]),
        nvmlDeviceGetMemoryInfo=call(
            "nvmlDeviceGetMemoryInfo",
            lambda h: SimpleNamespace(total=h["total"], used=h["used"], free=h["total"] - h["used"]),
        ),
        nvmlDeviceGetUtilizationRates=call("nvmlDeviceGetUtilizationRates", lambda h: SimpleNamespace(gpu=h["util"], memory=0)),
        nvmlDeviceGetTemperature=call("nvmlDeviceGetTemperature", lambda h, sensor: h["temp"]),
        nvmlDeviceGetPowerUsage=call("nvmlDeviceGetPowerUsage", lambda h: h["milliwatts"]),
        nvmlDeviceGetTotalEccErrors=call("nvmlDeviceGetTotalEccErrors", lambda h, kind, counter: h["ecc"]),
        nvmlEventSetCreate=call("nvmlEventSetCreate", lambda: {}),
        nvmlDeviceRegisterEvents=register,
        nvmlEventSetWait_v2=wait,
        nvmlEventSetFree=lambda event_set: None,
    )
