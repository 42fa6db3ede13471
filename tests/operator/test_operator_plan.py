"""`reranker-operator plan`: the capacity estimate users run before writing spec.autoscaling."""

from __future__ import annotations

import pytest
from reranker_operator.capacity import PROFILES, PodProfile
from reranker_operator.cli import main
from reranker_operator.plan import Load, erlang_c, p95_latency, plan_pod, pods_needed

GPU = PROFILES["gpu-l4-qwen3-0.6b"]


def test_erlang_c_matches_textbook_values() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(4, 0.0) == 0.0


def test_more_load_needs_more_pods_and_more_pods_lower_the_latency() -> None:
    counts = [pods_needed(GPU, Load(rps)) for rps in (0.5, 2, 4, 8)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    load = Load(4)
    assert p95_latency(GPU, load, 6) < p95_latency(GPU, load, 4)
    assert p95_latency(GPU, load, 8) <= p95_latency(GPU, load, 6)
    assert p95_latency(GPU, load, 1) is None  # 4 requests/s overload one pod


def test_an_unreachable_target_says_so() -> None:
    assert pods_needed(GPU, Load(1, documents=1000)) is None
    assert "scatter-gather" in main_output(["--requests-per-second", "1", "--documents", "1000"])


def test_replicas_beat_tensor_parallel_for_a_small_reranker() -> None:
    load = Load(4)
    one, two = plan_pod(GPU, load, 1), plan_pod(GPU, load, 2)
    assert two.service_s < one.service_s  # a second GPU speeds up one request ...
    assert one.gpus < two.gpus  # ... but more one-GPU pods serve the load with fewer GPUs


def test_the_hpa_target_is_what_a_pod_holds_at_the_planned_load() -> None:
    load = Load(4)
    plan = plan_pod(GPU, load, 1)
    assert plan.tokens_per_pod == pytest.approx(plan.pairs_per_pod * load.tokens / load.documents)
    # At least the work of the requests being scored, at most the whole load on one pod.
    assert load.tokens * load.requests_per_second / plan.pods * plan.service_s <= plan.tokens_per_pod
    assert plan.tokens_per_pod < load.tokens * load.requests_per_second


def main_output(args: list[str]) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["plan", *args]) == 0
    return buffer.getvalue()


def test_cli_prints_the_range_and_the_autoscaling_block() -> None:
    text = main_output(["--requests-per-second", "4", "--documents", "100", "--latency", "1.5"])
    assert "| gpusPerPod |" in text and "minReplicas:" in text and "maxReplicas:" in text
    assert "targetAverageValue" in text


def test_cli_reads_a_measured_profile_file(tmp_path) -> None:
    path = tmp_path / "a100.yaml"
    path.write_text("seconds_per_token: 0.000005\nhalf_batch_pairs: 32\n")
    profile = PodProfile.from_file(path)
    assert profile.name == "a100" and profile.peak_tokens_per_second() == pytest.approx(200_000)
    assert "a100" in main_output(["--requests-per-second", "4", "--profile", str(path)])


def test_cli_refuses_a_bad_profile(tmp_path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("seconds_per_token: 0.001\nwarp_speed: 9\n")
    assert main(["plan", "--requests-per-second", "1", "--profile", str(path)]) == 2
    assert "unknown profile fields ['warp_speed']" in capsys.readouterr().err
