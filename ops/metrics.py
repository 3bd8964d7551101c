"""What /metrics shows: this process's metrics, or every process's in multiprocess mode, and the
database collector.

Under gunicorn each worker is its own process and a scrape reaches one of them, so counters and
histograms kept in memory would each show one worker's share. With PROMETHEUS_MULTIPROC_DIR set
(scheduler/gunicorn.conf.py sees to it), prometheus_client writes every process's values to files
there and MultiProcessCollector adds them up at scrape time; without it (runserver, the tests) the
process's own registry is all there is.
"""

import os

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

# Imported for their metrics: so the web lists every family (at zero) even before a process here
# has recorded one, and Prometheus sees a series from the first scrape rather than a gap.
from reservations import metrics as reservations_metrics  # noqa: F401
from trainer import metrics as trainer_metrics  # noqa: F401

from .collectors import DatabaseCollector

REQUEST_SECONDS = Histogram(
    "gpu_scheduler_http_request_duration_seconds",
    "Time to answer a request, by the view's URL name (not the path, so the series stay few), method "
    "and status class (2xx, 4xx, ...).",
    ["view", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class _Scrape:
    """The collectors one scrape reads, in the shape generate_latest() wants (a collect())."""

    def __init__(self, *collectors):
        self.collectors = collectors

    def collect(self):
        for collector in self.collectors:
            yield from collector.collect()


def scrape(now=None):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        MultiProcessCollector(processes)
    else:
        processes = REGISTRY
    return _Scrape(processes, DatabaseCollector(now))
