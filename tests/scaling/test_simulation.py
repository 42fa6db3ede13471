"""Invariants of the scaling simulation on smoke-sized traces (each run well under a second)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from reranker_operator.capacity import PROFILES, PodProfile, fit_linear_cost
from scalesim import traces
from scalesim.report import direction_changes, summarize
from scalesim.sim import POLICIES, SimConfig, Simulation

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from scale_sim import rendered_hpa, reranker_deployment  # noqa: E402

PROFILE = PROFILES["gpu-l4-qwen3-0.6b"]


@pytest.fixture(scope="module")
def short_traces() -> dict[str, traces.Trace]:
    return {"burst": traces.burst(minutes=40), "mix": traces.mix(minutes=20, scale=2)}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("trace_name", ["burst", "mix"])
def test_every_request_is_answered_exactly_once_and_replicas_stay_in_bounds(
    short_traces: dict[str, traces.Trace], policy: str, trace_name: str
) -> None:
    trace = short_traces[trace_name]
    hpa = rendered_hpa(reranker_deployment(min_replicas=1, max_replicas=6))
    result = Simulation(trace, hpa, SimConfig(profile=PROFILE, policy=policy)).run()
    ids = [o.request.id for o in result.outcomes]
    assert sorted(ids) == [r.id for r in trace.requests]  # none lost, none twice (Simulation raises on twice)
    low = 0 if policy == "router-zero" else 1
    assert all(low <= replicas <= 6 for _, replicas, _, _ in result.timeline)
    assert all(ready <= existing for _, _, ready, existing in result.timeline)
    assert max(r for _, r, _, _ in result.timeline) > 1, "the burst must make the HPA scale up"
    for outcome in result.outcomes:
        if outcome.latency is not None:
            shards = max(1, -(-outcome.request.pairs // 64))
            # No request is faster than its share of the work on one idle pod.
            assert (
                outcome.latency
                >= PROFILE.work_seconds(outcome.request.pairs, outcome.request.tokens) / shards
            )
        else:
            assert outcome.status in (429, 503)
    summary = summarize(result)
    assert summary.requests == len(trace.requests)
    assert 0 < summary.replica_minutes <= 6 * trace.duration / 60 + 1e-6


def test_the_simulated_hpa_is_the_rendered_one() -> None:
    hpa = rendered_hpa(reranker_deployment("tokensInFlight", "12k", max_replicas=9))
    simulation = Simulation(traces.night(hours=0.1), hpa, SimConfig(profile=PROFILE))
    assert simulation.hpa.metric == "reranker_tokens_in_flight"
    assert simulation.hpa.target == 12000
    assert simulation.hpa.max_replicas == 9
    assert simulation.hpa.scale_up == hpa["spec"]["behavior"]["scaleUp"]


def test_a_lone_request_on_an_idle_pod_takes_its_service_time() -> None:
    trace = traces.night(hours=0.5)
    result = Simulation(trace, rendered_hpa(reranker_deployment()), SimConfig(profile=PROFILE)).run()
    first = result.outcomes[0]
    expected = PROFILE.service_seconds(first.request.pairs, first.request.tokens) + 0.001
    assert first.latency == pytest.approx(expected, rel=1e-6)


def test_service_keeps_connections_on_old_pods_and_the_router_spreads() -> None:
    """L4 with keep-alive: pods added by the HPA get only new connections, so the old pod stays hot."""
    trace = traces.burst(minutes=40)
    resource = reranker_deployment(min_replicas=1, max_replicas=8)
    config = SimConfig(profile=PROFILE)
    service = summarize(Simulation(trace, rendered_hpa(resource), replace(config, policy="service")).run())
    router = summarize(Simulation(trace, rendered_hpa(resource), replace(config, policy="router")).run())
    assert router.within_slo > service.within_slo
    assert router.p99 < service.p99


def test_scale_to_zero_holds_the_first_request_through_the_cold_start() -> None:
    trace = traces.night(hours=0.3)
    config = SimConfig(profile=PROFILE, policy="router-zero", startup_s=(100.0, 100.0))
    result = Simulation(trace, rendered_hpa(reranker_deployment()), config).run()
    first = result.outcomes[0]
    assert first.latency is not None and first.latency >= 100.0 - first.request.arrival
    assert result.timeline[0][1] == 0


def test_direction_changes_count_flips_only() -> None:
    assert direction_changes([(0, 1, 2), (1, 2, 3), (2, 3, 2), (3, 2, 1), (4, 1, 2)]) == 2


def test_cpu_profile_reproduces_the_measured_server_benchmark() -> None:
    profile: PodProfile = PROFILES["cpu-2core-minilm"]
    # bench/results/server.md: 70 pairs/s at 64 x 120 words (135 tokens/pair), 130 at 20 x 60 (75).
    for tokens, pairs_per_second in ((135, 70), (75, 130)):
        seconds = profile.work_seconds(1000, 1000 * tokens) / 1000
        assert 1 / seconds == pytest.approx(pairs_per_second, rel=0.03)  # a line through 0 fits both
    # One 64-pair request alone reaches ~98 % of the saturated rate (measured: 98 %).
    assert profile.efficiency(64) == pytest.approx(0.98, abs=0.01)
    assert fit_linear_cost([(1.0, 2.0), (2.0, 3.0)]) == pytest.approx((1.0, 1.0))
