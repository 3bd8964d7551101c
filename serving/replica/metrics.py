"""The replica's Prometheus metrics, in a registry of its own (one process per replica, so no
multiprocess mode is needed). Model labels are `name:version`."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ReplicaMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, memory_budget=0):
        self.registry = registry = CollectorRegistry()
        self.resident_models = Gauge("replica_resident_models", "Models resident in the cache", registry=registry)
        self.resident_bytes = Gauge(
            "replica_resident_bytes", "Measured bytes of all resident models", registry=registry
        )
        self.model_bytes = Gauge(
            "replica_model_resident_bytes", "Measured bytes of one resident model (0 when evicted)", ["model"],
            registry=registry,
        )
        self.memory_budget = Gauge("replica_memory_budget_bytes", "The replica's memory budget", registry=registry)
        self.memory_budget.set(memory_budget)
        self.device_allocated = Gauge(
            "replica_device_memory_allocated_bytes", "torch.cuda.memory_allocated on the replica's device (0 on CPU)",
            registry=registry,
        )
        self.loads = Counter(
            "replica_loads", "Model loads, by outcome (ok, weights_mismatch, model_too_large, no_room, error)",
            ["model", "outcome"], registry=registry,
        )
        self.load_seconds = Histogram(
            "replica_load_seconds", "Time to verify, load and warm up a model", ["model"], buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.hits = Counter(
            "replica_cache_hits", "Requests that found their model resident", ["model"], registry=registry
        )
        self.misses = Counter(
            "replica_cache_misses", "Requests that had to wait for their model to load", ["model"], registry=registry
        )
        self.evictions = Counter(
            "replica_evictions", "Models evicted, by reason (lru, unload)", ["model", "reason"], registry=registry
        )
        self.queue_depth = Gauge(
            "replica_queue_depth", "Images waiting for their model's batcher", ["model"], registry=registry
        )
        self.batch_size = Histogram(
            "replica_batch_size", "Images per batch", ["model"], buckets=BATCH_BUCKETS, registry=registry
        )
        self.inference_seconds = Histogram(
            "replica_inference_seconds", "Time of one batch's predict call", ["model"], buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_seconds = Histogram(
            "replica_request_seconds", "HTTP request latency, by endpoint and status", ["endpoint", "status"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )

    def render(self):
        return generate_latest(self.registry)
