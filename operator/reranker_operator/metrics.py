"""Prometheus metrics of the operator process (exposed on the metrics port, default 9090)."""

from __future__ import annotations

import threading
from collections import Counter as Counter_

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILE_TOTAL = Counter(
    "reranker_operator_reconcile_total",
    "Reconcile passes by result (ok, invalid_spec, rejected, retry).",
    ["result"],
)
RECONCILE_DURATION = Histogram(
    "reranker_operator_reconcile_duration_seconds",
    "Wall time of one reconcile pass: plan from the cache, check, apply, prune, observe.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "reranker_operator_reconcile_errors_total",
    "Failed reconcile passes by reason (conflict, rejected, throttled, server_error, client_error, unreachable).",
    ["reason"],
)
MANAGED_OBJECTS = Gauge(
    "reranker_operator_managed_objects",
    "Child objects the operator currently manages, by kind (last observed per RerankerDeployment).",
    ["kind"],
)
DRIFT_REPAIRS = Counter(
    "reranker_operator_drift_repairs_total",
    "Children re-created or restored because they differed from the desired state outside a spec change.",
    ["kind"],
)

# Per RerankerDeployment, from its last computed status: what dashboards and alerts (no ready replica, stalled,
# invalid spec) read without kube-state-metrics. The labels name the object, so the operator's ServiceMonitor
# keeps them (honorLabels) instead of overwriting `namespace` with the operator's own.
CONDITION = Gauge(
    "reranker_operator_rerankerdeployment_condition",
    "1 for each condition a RerankerDeployment reports now, with its status and reason.",
    ["namespace", "rerankerdeployment", "type", "status", "reason"],
)
REPLICAS = Gauge(
    "reranker_operator_rerankerdeployment_replicas",
    "Server pods of a RerankerDeployment by state (existing, ready, updated), as in its status.",
    ["namespace", "rerankerdeployment", "state"],
)
_REPLICA_FIELDS = {"existing": "replicas", "ready": "readyReplicas", "updated": "updatedReplicas"}


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics on `port` from a daemon thread."""
    start_http_server(port, addr=addr)


# Per-owner child counts and their running total, so one update costs O(kinds), not O(owners).
_managed: dict[tuple[str, str], Counter_] = {}
_totals: Counter_ = Counter_()
_managed_lock = threading.Lock()


def record_managed(owner: tuple[str, str], kinds: list[str]) -> None:
    """Remember the children last observed for one RerankerDeployment and refresh the per-kind gauge."""
    _replace_managed(owner, Counter_(kinds))


def forget_managed(owner: tuple[str, str]) -> None:
    """Drop a deleted RerankerDeployment from the gauges (its children, conditions and replicas)."""
    _replace_managed(owner, Counter_())
    record_status(owner, None)


# Label sets last exported per owner, so a condition whose reason changed leaves no stale series behind.
_conditions: dict[tuple[str, str], list[tuple[str, ...]]] = {}


def record_status(owner: tuple[str, str], status: dict | None) -> None:
    """Export one RerankerDeployment's conditions and replica counts (camelCase status); None removes them."""
    namespace, name = owner
    with _managed_lock:
        for labels in _conditions.pop(owner, []):
            CONDITION.remove(*labels)
        for state in _REPLICA_FIELDS:
            try:
                REPLICAS.remove(namespace, name, state)
            except KeyError:
                pass
        if status is None:
            return
        current = [
            (namespace, name, c["type"], c["status"], c.get("reason", ""))
            for c in status.get("conditions", [])
        ]
        for labels in current:
            CONDITION.labels(*labels).set(1)
        _conditions[owner] = current
        for state, field in _REPLICA_FIELDS.items():
            REPLICAS.labels(namespace, name, state).set(status.get(field) or 0)


def _replace_managed(owner: tuple[str, str], counts: Counter_) -> None:
    with _managed_lock:
        old = _managed.pop(owner, Counter_())
        if counts:
            _managed[owner] = counts
        for kind in set(old) | set(counts):
            _totals[kind] += counts.get(kind, 0) - old.get(kind, 0)
            MANAGED_OBJECTS.labels(kind).set(_totals[kind])
