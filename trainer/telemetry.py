"""The node's GPU readings for Prometheus, under the names DCGM-exporter users know (gpu_temp_celsius,
gpu_memory_used_mib, ...), labelled with the GPU's index and the node's hostname.

The node agent reads its hardware at each heartbeat and hands the readings here; a scrape serves the
latest ones and never touches NVML itself. A reading a device cannot give (a CPU device's
temperature) is left out rather than served as 0.
"""

import logging
import threading

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

# (metric name, Telemetry field, help, counter?)
METRICS = (
    ("gpu_temp_celsius", "temperature_c", "GPU temperature in degrees Celsius.", False),
    ("gpu_memory_used_mib", "memory_used_mb", "GPU memory in use, MiB.", False),
    ("gpu_memory_free_mib", "memory_free_mb", "GPU memory free, MiB.", False),
    ("gpu_utilization_percent", "utilization_pct", "GPU utilisation, percent.", False),
    ("gpu_power_watts", "power_w", "GPU power draw, watts.", False),
    # Counters: Prometheus adds _total, and rate() reads them across resets.
    ("gpu_ecc_errors", "ecc_errors", "Volatile uncorrected ECC errors since the driver loaded.", True),
    ("gpu_xid_errors", "xid_errors", "Critical XID events since the node agent started.", True),
)


class GpuCollector:
    def __init__(self):
        self.lock = threading.Lock()
        self.node = ""
        self.readings = []

    def update(self, node, readings):
        with self.lock:
            self.node, self.readings = node, list(readings)

    def collect(self):
        with self.lock:
            node, readings = self.node, self.readings
        for name, field, documentation, counter in METRICS:
            family = (CounterMetricFamily if counter else GaugeMetricFamily)(name, documentation, labels=["gpu", "node"])
            for reading in readings:
                value = getattr(reading, field, None)
                if value is not None:
                    family.add_metric([str(reading.index), node], value)
            yield family


COLLECTOR = GpuCollector()
REGISTRY.register(COLLECTOR)
_server = None


def start_exporter(port, addr="0.0.0.0"):
    """Serve this process's metrics (the GPU readings and whatever else it registered) on `addr`:
    `port`; port 0 serves nothing. A port already taken is logged, not fatal: the node still trains
    and books."""
    global _server
    if not port or _server is not None:
        return _server
    try:
        _server = start_http_server(port, addr=addr)
    except OSError as exc:
        log.error("GPU metrics not served: port %s: %s", port, exc)
        return None
    log.info("GPU metrics served on %s:%s", addr, port)
    return _server


def publish(node, readings):
    COLLECTOR.update(node, readings)
