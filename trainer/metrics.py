"""Event metrics of the training side, recorded where they happen (prometheus_client objects).

The start and stop latencies are observed by the node agent, in its node's worker: that worker's
exporter serves them (NODE_METRICS_PORT), or the web's /metrics when the worker runs on the web
machine with the same PROMETHEUS_MULTIPROC_DIR. The reconcile duration comes from the central worker.
"""

from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800)

START_SECONDS = Histogram(
    "gpu_scheduler_job_start_latency_seconds",
    "From when a job may start (its booking's start, or its submission if later) to its training running.",
    buckets=_LATENCY_BUCKETS,
)
STOP_SECONDS = Histogram(
    "gpu_scheduler_job_stop_latency_seconds",
    "From the node agent asking a job to stop to its training process gone with its checkpoint saved "
    "(phase=checkpoint), and to its devices being free for the next job (phase=gpu_free).",
    ["phase"],
    buckets=_LATENCY_BUCKETS,
)
STOP_KILLS = Counter(
    "gpu_scheduler_job_stop_kills",
    "Jobs killed because they had not stopped within STOP_GRACE_SECONDS (no checkpoint at the stop).",
)
RECONCILE_SECONDS = Histogram(
    "gpu_scheduler_reconcile_duration_seconds",
    "How long the central reconcile took (lost nodes, start nudges, early release, notices).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def observe_start(job, reservation):
    """A job the agent has just seen running: how long after it could start did training begin."""
    if job.started_at is None:
        return
    ready = max(reservation.start, job.created)
    START_SECONDS.observe(max((job.started_at - ready).total_seconds(), 0.0))


# Both phases from the start, so each has a series at zero before the first stop.
for _phase in ("checkpoint", "gpu_free"):
    STOP_SECONDS.labels(phase=_phase)
