"""`reranker-operator plan`: replicas, GPUs per pod and the HPA target for an expected load.

The pod is `reranker_operator.capacity.PodProfile` (the same model the scaling simulation runs). The queue is
the router's least-load balancing over `c` pods, approximated as an M/G/c queue: Erlang C gives the chance a
request waits, Allen-Cunneen scales the wait for the spread of request sizes, and the p95 wait comes from the
exponential tail of the waiting time. The HPA target is what each pod then holds in flight (an M/G/1 queue per
pod, as the router dispatches at once). `docs/scaling.md` compares these estimates with the simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reranker_operator.capacity import PodProfile

# Requests above the p95 of the size mix: RAGFlow sends 64-126 documents per call, ~1.25x the mean.
P95_SIZE_FACTOR = 1.25
# Squared coefficient of variation of service times for a RAGFlow-like mix (sizes and chunk lengths vary).
SERVICE_CV2 = 0.15
# Extra maximum replicas over the peak need, to absorb load growth while new pods start (minutes on a GPU).
HEADROOM = 1.25


@dataclass(frozen=True)
class Load:
    """The expected traffic."""

    requests_per_second: float
    documents: float = 96.0
    document_tokens: float = 180.0
    query_tokens: float = 20.0
    latency_p95_s: float = 1.0
    low_requests_per_second: float | None = None  # the quiet hours; default: a tenth of the load

    @property
    def tokens(self) -> float:
        """Prompt tokens of a mean request (query repeated in every pair, plus 3 special tokens a pair)."""
        return self.documents * (self.document_tokens + self.query_tokens + 3)


@dataclass(frozen=True)
class PodPlan:
    """The answer for one pod shape."""

    gpus_per_pod: int
    service_s: float  # a mean request alone on an idle pod
    service_p95_s: float
    pods: int | None  # None: the latency target cannot be met by adding pods
    p95_s: float | None
    pairs_per_pod: float  # pairs in flight per pod at this load (Little's law): the HPA target
    tokens_per_pod: float

    @property
    def gpus(self) -> int | None:
        return None if self.pods is None else self.pods * self.gpus_per_pod


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with `offered` = lambda / mu < servers."""
    if offered <= 0:
        return 0.0
    term, total = 1.0, 1.0
    for k in range(1, servers):
        term *= offered / k
        total += term
    last = term * offered / servers * servers / (servers - offered)
    return last / (total + last)


def p95_latency(profile: PodProfile, load: Load, pods: int) -> float | None:
    """Estimated p95 latency with `pods` pods behind least-load balancing; None when overloaded."""
    service = profile.service_seconds(round(load.documents), round(load.tokens))
    service_p95 = service * P95_SIZE_FACTOR
    offered = load.requests_per_second * service
    if offered >= pods:
        return None
    wait_probability = erlang_c(pods, offered)
    if wait_probability <= 0.05:
        return service_p95
    drain_rate = pods / service - load.requests_per_second
    wait_p95 = (1 + SERVICE_CV2) / 2 / drain_rate * math.log(wait_probability / 0.05)
    return service_p95 + wait_p95


def requests_in_flight_per_pod(profile: PodProfile, load: Load, pods: int) -> float:
    """Mean requests a pod holds (what its in-flight gauges count): M/G/1 per pod (Pollaczek-Khinchine).

    The router hands every request to a pod at once and each pod queues first come, first served, so the gauges
    see a per-pod queue, longer than the shared queue that the p95 estimate above assumes.
    """
    service = profile.service_seconds(round(load.documents), round(load.tokens))
    rho = min(load.requests_per_second / pods * service, 0.99)
    return rho + rho * rho * (1 + SERVICE_CV2) / (2 * (1 - rho))


def pods_needed(profile: PodProfile, load: Load, limit: int = 1000) -> int | None:
    """Fewest pods whose estimated p95 meets the target; None when even an idle pod is too slow."""
    service = profile.service_seconds(round(load.documents), round(load.tokens))
    if service * P95_SIZE_FACTOR > load.latency_p95_s:
        return None
    pods = max(1, math.ceil(load.requests_per_second * service))
    while pods <= limit:
        latency = p95_latency(profile, load, pods)
        if latency is not None and latency <= load.latency_p95_s:
            return pods
        pods += 1
    return None


def plan_pod(profile: PodProfile, load: Load, gpus_per_pod: int) -> PodPlan:
    """Pods, latency and per-pod in-flight load for one `gpusPerPod`."""
    pod = profile.with_gpus(gpus_per_pod)
    service = pod.service_seconds(round(load.documents), round(load.tokens))
    pods = pods_needed(pod, load)
    latency = None if pods is None else p95_latency(pod, load, pods)
    in_flight = 0.0 if pods is None else requests_in_flight_per_pod(pod, load, pods)
    return PodPlan(
        gpus_per_pod=gpus_per_pod,
        service_s=service,
        service_p95_s=service * P95_SIZE_FACTOR,
        pods=pods,
        p95_s=latency,
        pairs_per_pod=in_flight * load.documents,
        tokens_per_pod=in_flight * load.tokens,
    )


def format_plan(profile: PodProfile, load: Load, gpu_options: tuple[int, ...] = (1, 2, 4)) -> str:
    """The plan as text: replica range, gpusPerPod against replicas, and the HPA target to use."""
    low = load.low_requests_per_second
    low_load = Load(
        **{**load.__dict__, "requests_per_second": low if low is not None else load.requests_per_second / 10}
    )
    plans = [plan_pod(profile, load, g) for g in gpu_options]
    lines = [
        f"Pod profile: {profile.name} ({profile.description})",
        f"Load: {load.requests_per_second:g} requests/s of {load.documents:g} documents x "
        f"{load.document_tokens:g} tokens (+{load.query_tokens:g}-token query) = {load.tokens:,.0f} tokens "
        f"a request; p95 target {load.latency_p95_s:g} s.",
        "",
        "| gpusPerPod | request alone | pods at this load | GPUs | est. p95 |",
        "|---|---|---|---|---|",
    ]
    for plan in plans:
        pods = "target not reachable" if plan.pods is None else str(plan.pods)
        gpus = "-" if plan.gpus is None else str(plan.gpus)
        p95 = "-" if plan.p95_s is None else f"{plan.p95_s:.2f} s"
        lines.append(f"| {plan.gpus_per_pod} | {plan.service_s:.2f} s | {pods} | {gpus} | {p95} |")
    feasible = [p for p in plans if p.pods is not None]
    lines.append("")
    if not feasible:
        lines.append(
            "No pod shape meets the latency target for a single request: shard requests across pods with the "
            "router's scatter-gather (--shard-documents), use a faster GPU, or relax the target."
        )
        return "\n".join(lines)
    best = min(feasible, key=lambda p: (p.gpus, p.gpus_per_pod))
    quiet = pods_needed(profile.with_gpus(best.gpus_per_pod), low_load) or 1
    lines += [
        f"Use gpusPerPod: {best.gpus_per_pod} ({best.gpus} GPUs in all). "
        + (
            "More replicas beat tensor parallelism here: a small reranker gains little from a second GPU in "
            "the same pod, while a second pod doubles the throughput."
            if best.gpus_per_pod == 1
            else "A single request needs the faster pod to meet the latency target."
        ),
        "",
        "spec.autoscaling:",
        f"  minReplicas: {quiet}        # {low_load.requests_per_second:g} requests/s in the quiet hours",
        f"  maxReplicas: {math.ceil(best.pods * HEADROOM)}        # {best.pods} at this load + "
        f"{round((HEADROOM - 1) * 100)} % while new pods start",
        "  metric: tokensInFlight",
        f'  targetAverageValue: "{_quantity(best.tokens_per_pod)}"   # tokens in flight per pod at this load',
        f'  # or metric: pairsInFlight, targetAverageValue: "{max(1, round(best.pairs_per_pod))}"',
    ]
    return "\n".join(lines)


def _quantity(value: float) -> str:
    return f"{round(value / 1000)}k" if value >= 10_000 else str(max(1, round(value)))
