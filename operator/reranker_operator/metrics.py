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
    """Drop a deleted RerankerDeployment's children from the gauge."""
    _replace_managed(owner, Counter_())


def _replace_managed(owner: tuple[str, str], counts: Counter_) -> None:
    with _managed_lock:
        old = _managed.pop(owner, Counter_())
        if counts:
            _managed[owner] = counts
        for kind in set(old) | set(counts):
            _totals[kind] += counts.get(kind, 0) - old.get(kind, 0)
            MANAGED_OBJECTS.labels(kind).set(_totals[kind])
