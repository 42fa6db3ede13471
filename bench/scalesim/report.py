"""Numbers a capacity engineer reads from one simulation run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sim import Result

AFTER_WINDOW_S = 900.0  # a burst's breach is counted until 15 minutes after it ends
REJECTED = 1e9  # latency a rejected request counts with in percentiles of a minute


@dataclass(frozen=True)
class Summary:
    trace: str
    policy: str
    metric: str
    target: float
    requests: int
    p50: float
    p95: float
    p99: float
    within_slo: float  # share of all requests answered within the SLO (rejections count as misses)
    breach_minutes: int  # minutes (by arrival) whose p95 exceeds the SLO
    window_breach_minutes: int  # the same, from the window's (burst's) start to 15 minutes after its end
    replica_minutes: float
    gpu_minutes: float
    peak_replicas: int
    direction_changes_per_hour: float
    rejected: int
    timed_out: int


def direction_changes(changes: list[tuple[float, int, int]]) -> int:
    """How often the scaling direction flips (up then down, or down then up)."""
    signs = [1 if new > old else -1 for _, old, new in changes if new != old]
    return sum(1 for a, b in zip(signs, signs[1:], strict=False) if a != b)


def breach_minutes(
    result: Result, slo: float, since: float = 0.0, until: float = float("inf"), minimum: int = 3
) -> int:
    """Minutes with at least `minimum` requests whose p95 latency exceeds `slo` (rejections count as never answered)."""
    buckets: dict[int, list[float]] = {}
    for outcome in result.outcomes:
        if not since <= outcome.request.arrival < until:
            continue
        latency = REJECTED if outcome.latency is None else outcome.latency
        buckets.setdefault(int(outcome.request.arrival // 60), []).append(latency)
    return sum(1 for values in buckets.values() if len(values) >= minimum and np.percentile(values, 95) > slo)


def summarize(result: Result, slo: float = 1.0, timeout: float = 30.0, gpus: int = 1) -> Summary:
    """The per-(trace, policy, metric) row of the results table."""
    latencies = np.array([o.latency for o in result.outcomes if o.latency is not None])
    if latencies.size == 0:
        latencies = np.array([np.nan])
    total = len(result.outcomes)
    hours = result.trace.duration / 3600
    window = result.trace.window or (0.0, result.trace.duration)
    return Summary(
        trace=result.trace.name,
        policy=result.policy,
        metric=result.metric,
        target=result.target,
        requests=total,
        p50=float(np.percentile(latencies, 50)),
        p95=float(np.percentile(latencies, 95)),
        p99=float(np.percentile(latencies, 99)),
        within_slo=float(np.sum(latencies <= slo) / total) if total else 1.0,
        breach_minutes=breach_minutes(result, slo),
        window_breach_minutes=breach_minutes(result, slo, since=window[0], until=window[1] + AFTER_WINDOW_S),
        replica_minutes=result.pod_seconds / 60,
        gpu_minutes=result.pod_seconds / 60 * gpus,
        peak_replicas=max(r for _, r, _, _ in result.timeline),
        direction_changes_per_hour=direction_changes(result.scale_changes) / hours,
        rejected=sum(1 for o in result.outcomes if o.latency is None),
        timed_out=int(np.sum(latencies > timeout)),
    )
