"""Event metrics of the replica supervision, observed by the node agent in its node's worker (its
exporter serves them, NODE_METRICS_PORT). Each replica serves its own cache metrics (serving.replica)."""

from prometheus_client import Counter, Histogram

START_SECONDS = Histogram(
    "gpu_scheduler_replica_start_latency_seconds",
    "From a replica's process starting to it answering (its pinned models loaded and warmed up).",
    buckets=(0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300),
)
EXITS = Counter(
    "gpu_scheduler_replica_exits",
    "Replica processes that ended: drained (asked: slot end, preemption, cancel) or failed.",
    ["outcome"],
)
for _outcome in ("drained", "failed"):
    EXITS.labels(outcome=_outcome)
