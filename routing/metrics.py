"""The front door's Prometheus metrics, in a registry of its own (each front door process is scraped
on its own /metrics)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RouterMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "router_requests", "Predict requests answered, by model (name:version; empty before it is known), "
            "status and replica (empty when none was chosen).",
            ["model", "status", "replica"], registry=self.registry,
        )
        self.decisions = Counter(
            "router_decisions", "Routing decisions: warm, batch, spill, cold, retry, and replicas ejected.",
            ["decision"], registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "router_queue_seconds", "Time a request spent in the front door before it was sent to a replica "
            "(authentication, limits, choice, waiting for a connection).",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.latency = Histogram(
            "router_request_seconds", "End-to-end latency of predict requests in the front door.",
            ["model"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge(
            "router_requests_in_flight", "Predict requests this front door holds (bounded by ROUTER_MAX_QUEUE).",
            registry=self.registry,
        )
        self.replica_state = Gauge(
            "router_replica_state", "1 for each replica's current state as this front door sees it "
            "(ready, loading, draining, ejected, offline).",
            ["replica", "node", "state"], registry=self.registry,
        )
