"""Scaling simulation: how the autoscaled reranker service behaves when load moves (`make bench-scale`).

Every run feeds the HPA that the operator's own renderer produces for a RerankerDeployment (targets and behavior
are never retyped here) into a SimPy model of the service (`bench/scalesim/`), with pods as fast as
`reranker_operator.capacity` says. Writes `bench/results/scaling.md` and the plots `docs/scaling-*.png`.

    python bench/scale_sim.py            # the full study (a few minutes)
    python bench/scale_sim.py --smoke    # shortened traces, fewer settings (< 60 s); results not written
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from reranker_operator.api import Autoscaling  # noqa: E402
from reranker_operator.capacity import DEFAULT_PROFILE, PROFILES, PodProfile  # noqa: E402
from reranker_operator.plan import Load, pods_needed  # noqa: E402
from reranker_operator.render import build_router_config, load_spec, render_all  # noqa: E402
from reranker_operator.render.scaling import DEFAULT_BEHAVIOR, DEFAULT_TARGETS  # noqa: E402
from reranker_router.config import RouterConfig  # noqa: E402
from scalesim import traces  # noqa: E402
from scalesim.report import Summary, summarize  # noqa: E402
from scalesim.sim import Result, SimConfig, Simulation  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scaling.md"
DOCS = ROOT / "docs"
METRICS = ("pairsInFlight", "tokensInFlight", "pairsWaiting")
POLICIES = ("service", "router", "router-sg")
SWEEP = {
    "pairsInFlight": ["16", "24", "32", "48", "64", "96"],
    "tokensInFlight": ["4k", "6k", "8k", "12k", "16k", "24k"],
    "pairsWaiting": ["1", "4", "16", "64"],
}
MAX_REPLICAS = 16
CEILING_S = 100.0
# The previous default behavior (before this study), kept to show what the new one changes.
OLD_BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 600,
        "selectPolicy": "Min",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
    },
}


def reranker_deployment(
    metric: str | None = None,
    target: str | None = None,
    behavior: dict | None = None,
    min_replicas: int = 1,
    max_replicas: int = MAX_REPLICAS,
) -> dict:
    """The simulated RerankerDeployment: Qwen3-Reranker-0.6B on one GPU per pod, autoscaled."""
    autoscaling: dict = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
    if metric:
        autoscaling["metric"] = metric
    if target:
        autoscaling["targetAverageValue"] = target
    if behavior:
        autoscaling["behavior"] = copy.deepcopy(behavior)
    return {
        "apiVersion": "reranker.dev/v1alpha1",
        "kind": "RerankerDeployment",
        "metadata": {"name": "qwen3-reranker", "namespace": "rag"},
        "spec": {
            "model": {"name": "Qwen/Qwen3-Reranker-0.6B", "family": "qwen3-reranker"},
            "gpusPerPod": 1,
            "autoscaling": autoscaling,
        },
    }


def rendered_hpa(resource: dict) -> dict:
    """The HPA the operator renders for `resource` (the same code path as `reranker-operator render`)."""
    meta = resource["metadata"]
    manifests = render_all(meta["name"], meta["namespace"], load_spec(resource["spec"]))
    (hpa,) = [m for m in manifests if m["kind"] == "HorizontalPodAutoscaler"]
    return hpa


def rendered_router_config(resource: dict) -> RouterConfig:
    """The router config the operator renders for `resource` (scale-to-zero idle and hold times)."""
    meta = resource["metadata"]
    return build_router_config(meta["name"], meta["namespace"], load_spec(resource["spec"]))


def simulate(trace: traces.Trace, resource: dict, config: SimConfig) -> tuple[Result, Summary]:
    result = Simulation(trace, rendered_hpa(resource), config).run()
    return result, summarize(
        result, slo=config.slo_s, timeout=config.client_timeout_s, gpus=config.profile.gpus
    )


def _fmt_target(metric: str, target: float) -> str:
    return f"{target / 1000:g}k" if metric == "tokensInFlight" else f"{target:g}"


def time_weighted_pods(result: Result, start: float, end: float) -> float:
    """Mean number of existing pods (GPUs held) between `start` and `end`."""
    total = 0.0
    points = result.timeline + [(end, 0, 0, 0)]
    for (t0, _, _, existing), (t1, *_) in zip(points, points[1:], strict=False):
        lo, hi = max(t0, start), min(t1, end)
        if hi > lo:
            total += existing * (hi - lo)
    return total / (end - start)


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def row(s: Summary, extra: str = "") -> str:
    return (
        f"| {s.trace} | {s.policy} | {s.metric} {_fmt_target(s.metric, s.target)} |{extra} {s.p50:.2f} | "
        f"{s.p95:.2f} | {s.p99:.2f} | {100 * s.within_slo:.1f} % | {s.breach_minutes} | "
        f"{s.replica_minutes:.0f} | {s.peak_replicas} | {s.direction_changes_per_hour:.2f} | {s.rejected} | "
        f"{s.timed_out} |"
    )


HEADER = (
    "| trace | policy | metric, target |{extra} p50 s | p95 s | p99 s | within 1 s | SLO-breach min | "
    "GPU-min | peak pods | direction changes/h | rejected | > 30 s |\n|{sep}"
)


def header(extra: str = "") -> str:
    columns = 13 + extra.count("|")
    return HEADER.format(extra=extra, sep="---|" * columns)


def choose_target(rows: dict[str, list[Summary]], slo: float) -> str | None:
    """The cheapest target (GPU-minutes on the steady traces) that keeps p95 within the SLO on each of them.

    `rows[target]` holds one summary per trace; the burst is judged apart (no target keeps p95 during a 10x
    jump while pods start).
    """
    steady = {"diurnal", "mix"}
    eligible = [
        (sum(s.replica_minutes for s in summaries if s.trace in steady), target)
        for target, summaries in rows.items()
        if all(s.p95 <= slo for s in summaries if s.trace in steady)
    ]
    return min(eligible)[1] if eligible else None


def plot_timelines(path: Path, runs: list[tuple[str, Result]], title: str, slo: float) -> None:
    """Arrival rate, replicas (spec and ready) and per-minute p95 latency over time, one column per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(3, len(runs), figsize=(5.5 * len(runs), 8), sharex=True, squeeze=False)
    for col, (label, result) in enumerate(runs):
        trace = result.trace
        minutes = int(trace.duration // 60)
        xs = np.arange(minutes)
        arrivals = np.bincount([int(r.arrival // 60) for r in trace.requests], minlength=minutes)[:minutes]
        axes[0][col].plot(xs / 60, arrivals / 60, color="tab:gray")
        axes[0][col].set_ylabel("requests/s")
        axes[0][col].set_title(label, fontsize=10)
        times = [t for t, *_ in result.timeline] + [trace.duration]
        spec = [r for _, r, _, _ in result.timeline] + [result.timeline[-1][1]]
        ready = [r for _, _, r, _ in result.timeline] + [result.timeline[-1][2]]
        axes[1][col].step(np.array(times) / 3600, spec, where="post", label="spec.replicas (HPA)")
        axes[1][col].step(np.array(times) / 3600, ready, where="post", label="ready pods")
        axes[1][col].set_ylabel("pods")
        axes[1][col].legend(fontsize=8, loc="upper right")
        buckets: dict[int, list[float]] = {}
        for o in result.outcomes:
            # Rejected requests and waits past 100 s are drawn at 100 s (the plot's ceiling).
            latency = CEILING_S if o.latency is None else min(o.latency, CEILING_S)
            buckets.setdefault(int(o.request.arrival // 60), []).append(latency)
        keys = sorted(buckets)
        p95 = [float(np.percentile(buckets[k], 95)) for k in keys]
        axes[2][col].semilogy(np.array(keys) / 60, p95, color="tab:red", lw=0.8)
        axes[2][col].axhline(slo, color="black", ls="--", lw=0.8)
        axes[2][col].set_ylim(0.1, CEILING_S * 1.5)
        axes[2][col].set_ylabel("p95 per minute (s; rejected = 100)")
        axes[2][col].set_xlabel("hours")
        if trace.window:
            for ax in axes[:, col]:
                ax.axvspan(trace.window[0] / 3600, trace.window[1] / 3600, color="tab:orange", alpha=0.12)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_sweep(path: Path, sweep: dict[str, dict[str, list[Summary]]]) -> None:
    """GPU-minutes against the share of requests within the SLO, per metric and target (all traces summed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for metric, rows in sweep.items():
        xs, ys = [], []
        for target, summaries in rows.items():
            total = sum(s.requests for s in summaries)
            xs.append(sum(s.replica_minutes for s in summaries))
            ys.append(100 * sum(s.within_slo * s.requests for s in summaries) / total)
            ax.annotate(target, (xs[-1], ys[-1]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.plot(xs, ys, marker="o", label=metric)
    ax.set_xlabel("GPU-minutes (burst + mix + diurnal)")
    ax.set_ylabel("% of requests within 1 s")
    ax.set_title("Scaling signal: cost against latency, per target (router + scatter-gather)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="short traces, few settings, nothing written")
    parser.add_argument(
        "--profile", default=DEFAULT_PROFILE, help=f"pod profile name or file ({list(PROFILES)})"
    )
    parser.add_argument("--startup", type=float, nargs=2, default=(60.0, 180.0), help="pod start-up range, s")
    parser.add_argument("--slo", type=float, default=1.0, help="latency objective in seconds")
    args = parser.parse_args(argv)
    began = time.time()
    profile: PodProfile = PROFILES.get(args.profile) or PodProfile.from_file(args.profile)
    base = SimConfig(profile=profile, startup_s=tuple(args.startup), slo_s=args.slo)
    scale = 1.0
    if args.smoke:
        trace_set = {
            "burst": traces.burst(minutes=45),
            "mix": traces.mix(minutes=40),
            "diurnal": traces.diurnal(hours=6, scale=scale),
            "night": traces.night(hours=2),
        }
        sweep_targets = {m: SWEEP[m][2:5:2] for m in SWEEP}
    else:
        trace_set = {name: make() for name, make in traces.TRACES.items()}
        sweep_targets = SWEEP
    lines: list[str] = []
    out = lines.append

    # 1. Which signal and target: sweep every metric's target on the traces that move.
    sweep: dict[str, dict[str, list[Summary]]] = {}
    chosen: dict[str, str] = {}
    out("## 1. Scaling signal and target (policy router-sg, behavior: the operator's default)\n")
    out(header(""))
    for metric in METRICS:
        sweep[metric] = {}
        for target in sweep_targets[metric]:
            resource = reranker_deployment(metric, target)
            sweep[metric][target] = []
            for name in ("burst", "mix", "diurnal"):
                _, summary = simulate(trace_set[name], resource, replace(base, policy="router-sg"))
                sweep[metric][target].append(summary)
                out(row(summary))
        chosen[metric] = choose_target(sweep[metric], args.slo)
    out("\nPer metric, the cheapest target (GPU-minutes on diurnal + mix) whose p95 stays within the SLO on ")
    out("both (`choose_target`; the burst is judged apart, in section 2):\n")
    out("| metric | chosen target | GPU-min diurnal + mix | p95 diurnal | p95 mix | burst: SLO-breach min |")
    out("|---|---|---|---|---|---|")
    for metric in METRICS:
        if chosen[metric] is None:
            out(f"| {metric} | none meets it | | | | |")
            continue
        by_trace = {s.trace: s for s in sweep[metric][chosen[metric]]}
        minutes = by_trace["diurnal"].replica_minutes + by_trace["mix"].replica_minutes
        out(
            f"| {metric} | {chosen[metric]} | {minutes:.0f} | {by_trace['diurnal'].p95:.2f} s | "
            f"{by_trace['mix'].p95:.2f} s | {by_trace['burst'].breach_minutes} |"
        )

    # 2. Behavior: the previous default against the renderer's current default, on the burst.
    out("\n## 2. Scale-up behavior on the 10x burst (router-sg, default metric and target)\n")
    out(header(" behavior | burst breach min |"))
    behavior_runs = []
    for label, behavior in (("previous (2 pods/min)", OLD_BEHAVIOR), ("default (4 pods/min)", None)):
        for startup in ((60.0, 180.0),) if args.smoke else ((30.0, 60.0), (60.0, 180.0), (180.0, 300.0)):
            config = replace(base, policy="router-sg", startup_s=startup)
            result, summary = simulate(trace_set["burst"], reranker_deployment(behavior=behavior), config)
            extra = f" {label}, start-up {startup[0]:g}-{startup[1]:g} s | {summary.window_breach_minutes} |"
            out(row(summary, extra))
            if startup == (60.0, 180.0):
                behavior_runs.append((f"router-sg, {label} behavior", result))

    # 3. The matrix: every trace, policy and metric, each metric at its default target.
    out("\n## 3. Every trace x policy x metric (renderer defaults: target and behavior)\n")
    out(header(""))
    matrix: dict[tuple[str, str, str], Result] = {}
    for name, trace in trace_set.items():
        for policy in POLICIES:
            for metric in METRICS:
                result, summary = simulate(trace, reranker_deployment(metric), replace(base, policy=policy))
                matrix[(name, policy, metric)] = result
                out(row(summary))

    # 4. Scale to zero: the cold-start cost on the quiet night and on the burst, with the idle and hold times
    # the operator renders into the router's config for `minReplicas: 0`.
    zero = reranker_deployment(min_replicas=0)
    zero_config = rendered_router_config(zero)
    assert zero_config.scale_from_zero is not None
    zero_base = replace(
        base,
        policy="router-zero",
        idle_to_zero_s=zero_config.scale_from_zero.idle_seconds,
        hold_s=zero_config.no_backend.wait_seconds,
        hold_requests=zero_config.no_backend.max_waiting_requests,
    )
    out(
        f"\n## 4. Scale to zero (router-zero, the operator's minReplicas 0 defaults: idle "
        f"{zero_base.idle_to_zero_s / 60:g} min -> 0 replicas; the first request scales to 1 and is held up to "
        f"{zero_base.hold_s:g} s, at most {zero_base.hold_requests} requests)\n"
    )
    out(header(""))
    zero_runs = []
    for name in ("night", "burst"):
        result, summary = simulate(trace_set[name], zero, zero_base)
        out(row(summary))
        zero_runs.append((f"{name}: router-zero", result))
        cold = [o.latency for o in result.outcomes if o.latency is not None and o.latency > 30]
        out(
            f"\n{name}: {len(cold)} requests waited > 30 s for a cold start (longest {max(cold, default=0):.0f} s).\n"
        )

    # 5. Capacity: steady loads with the defaults, against `reranker-operator plan`.
    out("\n## 5. Capacity: steady load, defaults, router-sg; second hour (after the HPA settled)\n")
    out("| requests/s | pods (time-weighted mean) | GPU-min per hour | p95 s | within 1 s | plan: pods |")
    out("|---|---|---|---|---|---|")
    capacity = []
    for rate in (1, 4) if args.smoke else (0.5, 1, 2, 3, 4, 6, 8):
        trace = traces.steady(rate, minutes=30 if args.smoke else 120)
        result, _ = simulate(trace, reranker_deployment(), replace(base, policy="router-sg"))
        half = trace.duration / 2
        pods = time_weighted_pods(result, half, trace.duration)
        late = [o.latency for o in result.outcomes if o.request.arrival >= half and o.latency is not None]
        answered = [o for o in result.outcomes if o.request.arrival >= half]
        within = sum(1 for latency in late if latency <= args.slo) / max(1, len(answered))
        planned = pods_needed(profile, Load(rate, latency_p95_s=args.slo))
        capacity.append((rate, pods, planned))
        out(
            f"| {rate:g} | {pods:.2f} | {pods * 60:.0f} | {percentile(late, 95):.2f} | {100 * within:.1f} % | "
            f"{planned} |"
        )

    elapsed = time.time() - began
    print("\n".join(lines))
    print(f"\n(simulated in {elapsed:.1f} s)")
    if args.smoke:
        return 0
    default_metric = Autoscaling().metric
    RESULTS.write_text(
        "# Scaling simulation\n\n"
        f"Written by `bench/scale_sim.py` ({elapsed:.0f} s wall-clock on a shared 2-core machine; the simulation is "
        "deterministic, seeded, and its numbers do not depend on the machine). Pod profile: "
        f"`{profile.name}`: {profile.description} Start-up {args.startup[0]:g}-{args.startup[1]:g} s "
        f"(40 % Pending, then loading), scrape 15 s, adapter avg_over_time 1 min, HPA sync 15 s, "
        f"minReplicas 1, maxReplicas {MAX_REPLICAS}. SLO: {args.slo:g} s per request. "
        "`SLO-breach min`: minutes (with >= 3 requests) whose p95 exceeds the SLO; `burst breach min`: the same "
        "from the burst's start to 15 minutes after its end; `rejected`: 429/503; "
        "`> 30 s`: answered after RAGFlow's client timeout. Defaults at the time of the run: "
        f"targets {DEFAULT_TARGETS}, behavior {DEFAULT_BEHAVIOR}.\n\nTraces:\n\n"
        + "".join(f"- `{t.name}`: {t.description} ({len(t.requests)} requests)\n" for t in trace_set.values())
        + "\n"
        + "\n".join(lines)
        + "\n"
    )
    plot_sweep(DOCS / "scaling-metrics.png", sweep)
    plot_timelines(
        DOCS / "scaling-burst.png",
        [
            ("Service (L4, keep-alive)", matrix[("burst", "service", default_metric)]),
            ("router + scatter-gather", matrix[("burst", "router-sg", default_metric)]),
            behavior_runs[0],
        ],
        "10x burst, default metric and target",
        args.slo,
    )
    plot_timelines(
        DOCS / "scaling-diurnal.png",
        [
            ("Service (L4, keep-alive)", matrix[("diurnal", "service", default_metric)]),
            ("router + scatter-gather", matrix[("diurnal", "router-sg", default_metric)]),
        ],
        "Diurnal day, default metric and target",
        args.slo,
    )
    plot_timelines(DOCS / "scaling-zero.png", zero_runs, "Scale to zero: cold starts", args.slo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
