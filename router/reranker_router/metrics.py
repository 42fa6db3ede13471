"""The router's Prometheus metrics (its own registry, served at `/metrics`).

Per-replica series come from a collector that reads the live replica set at scrape time, so replicas that
went away leave no stale series behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .replicas import ReplicaSet

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SHARD_BUCKETS = (1, 2, 4, 8, 16, 32)


class ReplicaCollector(Collector):
    """`reranker_router_replica_pairs_in_flight{replica}`, `reranker_router_replicas{state}` and the queue."""

    def __init__(self, replicas: ReplicaSet, pending: Callable[[], int]) -> None:
        self._replicas = replicas
        self._pending = pending

    def collect(self) -> Iterator[Metric]:
        """Read the replica set now."""
        in_flight = GaugeMetricFamily(
            "reranker_router_replica_pairs_in_flight",
            "Pairs this router sent to the replica and has no answer for yet",
            labels=["replica"],
        )
        replicas = list(self._replicas)
        for replica in replicas:
            in_flight.add_metric([replica.url], replica.pending_pairs)
        yield in_flight
        available = len(self._replicas.available())
        states = GaugeMetricFamily("reranker_router_replicas", "Known replicas by state", labels=["state"])
        states.add_metric(["available"], available)
        states.add_metric(["ejected"], len(replicas) - available)
        yield states
        yield GaugeMetricFamily(
            "reranker_router_pending_pairs",
            "Pairs admitted by this router and not answered yet",
            self._pending(),
        )
        yield GaugeMetricFamily(
            "reranker_router_requests_waiting_for_replica",
            "Requests held because no replica is available",
            self._replicas.waiting,
        )


class RouterMetrics:
    """Every router metric, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "reranker_router_requests",
            "Client requests by dialect and HTTP status",
            ["dialect", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "reranker_router_request_duration_seconds",
            "Time from the request's body arriving to its reply being ready, by dialect",
            ["dialect"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.shards = Histogram(
            "reranker_router_shards_per_request",
            "Shards one scoring request was split into",
            buckets=SHARD_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "reranker_router_retries",
            "Shards sent again to another replica, by reason",
            ["reason"],
            registry=registry,
        )
        self.ejections = Counter(
            "reranker_router_ejections",
            "Times a replica was left out for a while, by reason (connect, 5xx, draining)",
            ["reason"],
            registry=registry,
        )
        self.rejections = Counter(
            "reranker_router_rejections",
            "Requests refused by the router itself, by reason (admission, no_backend, draining)",
            ["reason"],
            registry=registry,
        )
        self.scale_actions = Counter(
            "reranker_router_scale",
            "Scale-from-zero writes this router made to the server Deployment, by direction (up, down)",
            ["direction"],
            registry=registry,
        )
        self.scale_errors = Counter(
            "reranker_router_scale_errors",
            "Failed scale-from-zero API calls, by reason (forbidden, not_found, network, config, http_<code>)",
            ["reason"],
            registry=registry,
        )

    def watch(self, replicas: ReplicaSet, pending: Callable[[], int]) -> None:
        """Export the replica set's live state."""
        self.registry.register(ReplicaCollector(replicas, pending))

    def observe_request(self, dialect: str, status: int, seconds: float) -> None:
        """Count one finished request and its duration."""
        self.requests.labels(dialect=dialect, status=str(status)).inc()
        self.duration.labels(dialect=dialect).observe(seconds)
