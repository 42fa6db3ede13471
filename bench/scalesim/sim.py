"""The discrete-event simulation (SimPy) of one scaled reranker service.

Parts: a Deployment whose pods start (Pending, then loading the model, then Ready) and drain on scale-down; each
pod scores requests first come, first served at the speed of `reranker_operator.capacity.PodProfile` (vLLM's
scheduler is FCFS); Prometheus scrapes every pod's gauges every 15 s; the adapter serves the average of the
last minute's samples; the HPA (`hpa.HpaController`, fed the operator's rendered manifest) syncs every 15 s;
requests reach pods through one of the routing policies:

- `service`: a Kubernetes Service (L4). Clients keep HTTP/1.1 connections alive (httpx reuses the oldest idle
  connection, both sides drop a connection idle for 5 s); a new connection goes to a random ready pod
  (kube-proxy), so a new pod only gets connections opened after it became ready.
- `router`: the rerank-aware router, each request to the ready pod with the fewest pairs in flight; admission
  control answers 429 beyond `router_max_pairs` queued pairs per ready pod.
- `router-sg`: the same, and a request with more than `shard_documents` documents is split into shards scored
  on different pods in parallel (the reply waits for the last shard).
- `router-zero`: `router-sg` with scale to zero: after `idle_to_zero_s` without requests the router sets the
  Deployment to 0 replicas (the HPA is inactive at 0); the first request scales it to 1 through the scale
  subresource and is held (at most `hold_s` seconds and `hold_requests` requests, 503 past that) until a pod is
  ready; the HPA takes over from one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import simpy
from reranker_operator.capacity import PodProfile

from .hpa import HpaController
from .traces import Request, Trace

POLICIES = ("service", "router", "router-sg", "router-zero")
METRIC_NAMES = {
    "reranker_pairs_in_flight": "pairsInFlight",
    "reranker_pairs_waiting": "pairsWaiting",
    "reranker_tokens_in_flight": "tokensInFlight",
}


@dataclass
class SimConfig:
    """Everything about the world that is not the HPA manifest or the trace."""

    profile: PodProfile
    policy: str = "router"
    startup_s: tuple[float, float] = (60.0, 180.0)
    pending_share: float = 0.4  # part of the start-up spent Pending (scheduling, image) before model loading
    scrape_s: float = 15.0
    adapter_window_s: float = 60.0
    hpa_sync_s: float = 15.0
    keepalive_s: float = 5.0
    clients: int = 4
    router_overhead_s: float = 0.001
    router_max_pairs: int = 4096
    shard_documents: int = 64
    idle_to_zero_s: float = 900.0
    hold_s: float = 300.0
    hold_requests: int = 1000
    client_timeout_s: float = 30.0
    slo_s: float = 1.0
    initial_replicas: int | None = None  # default: minReplicas (ready at t=0); router-zero starts at 0
    seed: int = 7


@dataclass(eq=False)
class Pod:
    name: str
    created: float
    ready_at: float
    pending_until: float
    deleted: float | None = None
    gone: float | None = None
    busy_until: float = 0.0
    pairs: int = 0
    tokens: int = 0
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)

    def ready(self, now: float) -> bool:
        return self.deleted is None and now >= self.ready_at


@dataclass
class Outcome:
    """What one request experienced."""

    request: Request
    latency: float | None = None  # None: rejected
    status: int = 200


@dataclass
class Result:
    trace: Trace
    policy: str
    metric: str
    target: float
    outcomes: list[Outcome]
    timeline: list[tuple[float, int, int, int]]  # (time, spec.replicas, ready pods, existing pods)
    pod_seconds: float
    scale_changes: list[tuple[float, int, int]]
    min_replicas: int
    max_replicas: int


class Simulation:
    """One run: a trace through a policy, scaled by the HPA of a rendered manifest."""

    def __init__(self, trace: Trace, hpa_manifest: dict, config: SimConfig) -> None:
        if config.policy not in POLICIES:
            raise ValueError(f"unknown policy {config.policy!r}; one of {POLICIES}")
        self.trace = trace
        self.config = config
        self.profile = config.profile
        self.hpa = HpaController.from_manifest(hpa_manifest)
        self.metric = METRIC_NAMES[self.hpa.metric]
        self.env = simpy.Environment()
        self.rng = random.Random(config.seed)
        self.pods: list[Pod] = []
        self.replicas = 0
        self.outcomes: dict[int, Outcome] = {}
        self.timeline: list[tuple[float, int, int, int]] = []
        self.scale_changes: list[tuple[float, int, int]] = []
        self.connections: list[list[list]] = [[] for _ in range(config.clients)]  # [pod, free_at]
        self.held: list[Request] = []
        self.last_request = 0.0
        self._names = 0

    # -- the Deployment -------------------------------------------------------------------------------------
    def _new_pod(self, now: float, warm: bool) -> Pod:
        self._names += 1
        delay = 0.0 if warm else self.rng.uniform(*self.config.startup_s)
        pod = Pod(f"pod-{self._names}", now, now + delay, now + delay * self.config.pending_share)
        self.pods.append(pod)
        self.env.process(self._scrape(pod))
        if not warm:
            self.env.process(self._on_ready(pod))
        return pod

    def scale(self, replicas: int, why: str = "hpa") -> None:
        """Set the Deployment's spec.replicas; the ReplicaSet adds pods or deletes the least useful ones."""
        now = self.env.now
        if replicas != self.replicas:
            self.scale_changes.append((now, self.replicas, replicas))
        self.replicas = replicas
        alive = [p for p in self.pods if p.deleted is None]
        for _ in range(replicas - len(alive)):
            self._new_pod(now, warm=False)
        if len(alive) > replicas:
            # ReplicaSet order: Pending before loading before ready; among ready pods the newest first.
            def rank(p: Pod) -> tuple:
                if now < p.pending_until:
                    return (0, -p.created)
                if now < p.ready_at:
                    return (1, -p.created)
                return (2, -p.ready_at)

            for pod in sorted(alive, key=rank)[: len(alive) - replicas]:
                pod.deleted = now
                # A ready pod finishes what it accepted (SIGTERM drain); others go at once.
                pod.gone = max(now, pod.busy_until) if now >= pod.ready_at else now
        self._record()

    def _record(self) -> None:
        now = self.env.now
        existing = sum(1 for p in self.pods if p.gone is None or p.gone > now)
        ready = sum(1 for p in self.pods if p.ready(now))
        self.timeline.append((now, self.replicas, ready, existing))

    def _on_ready(self, pod: Pod):
        yield self.env.timeout(pod.ready_at - self.env.now)
        if pod.deleted is None:
            self._record()
            self._release_held()

    # -- pods -----------------------------------------------------------------------------------------------
    def _assign(self, pod: Pod, pairs: int, tokens: int) -> float:
        """Queue a request (or shard) on `pod`; returns when it finishes."""
        now = self.env.now
        service = self.profile.service_seconds(pairs, tokens, pod.pairs + pairs)
        finish = max(now, pod.busy_until) + service
        pod.busy_until = finish
        pod.pairs += pairs
        pod.tokens += tokens
        if pod.deleted is not None:
            pod.gone = max(pod.gone or now, finish)

        def done(_event, pod=pod, pairs=pairs, tokens=tokens) -> None:
            pod.pairs -= pairs
            pod.tokens -= tokens

        self.env.timeout(finish - now).callbacks.append(done)
        return finish

    def _gauges(self, pod: Pod) -> tuple[float, float, float]:
        return (float(pod.pairs), float(max(0, pod.pairs - self.profile.max_num_seqs)), float(pod.tokens))

    def _scrape(self, pod: Pod):
        yield self.env.timeout(
            max(0.0, pod.ready_at - self.env.now) + self.rng.uniform(0, self.config.scrape_s)
        )
        while pod.deleted is None:
            pod.samples.append((self.env.now, *self._gauges(pod)))
            cutoff = self.env.now - self.config.adapter_window_s - self.config.scrape_s
            if len(pod.samples) > 16:
                pod.samples = [s for s in pod.samples if s[0] > cutoff]
            yield self.env.timeout(self.config.scrape_s)

    # -- the HPA --------------------------------------------------------------------------------------------
    def metric_values(self, now: float) -> tuple[dict[str, float], int]:
        """What the HPA reads: avg_over_time(metric[window]) of each pod that has samples; missing pods."""
        column = {"pairsInFlight": 1, "pairsWaiting": 2, "tokensInFlight": 3}[self.metric]
        values: dict[str, float] = {}
        missing = 0
        for pod in self.pods:
            if pod.deleted is not None or now < pod.pending_until:
                continue  # terminating and Pending pods are ignored
            window = [s[column] for s in pod.samples if s[0] > now - self.config.adapter_window_s]
            if window:
                values[pod.name] = sum(window) / len(window)
            else:
                missing += 1  # Running but loading the model: no /metrics yet
        return values, missing

    def _hpa_loop(self):
        yield self.env.timeout(self.rng.uniform(0, self.config.hpa_sync_s))
        while True:
            now = self.env.now
            if self.config.policy == "router-zero" and self.replicas > 0 and not self.held:
                if now - self.last_request >= self.config.idle_to_zero_s:
                    self.scale(0, why="router")
            values, missing = self.metric_values(now)
            new = self.hpa.sync(now, self.replicas, values, missing)
            if new != self.replicas:
                self.scale(new)
            yield self.env.timeout(self.config.hpa_sync_s)

    # -- routing --------------------------------------------------------------------------------------------
    def _ready_pods(self) -> list[Pod]:
        now = self.env.now
        return [p for p in self.pods if p.ready(now)]

    def _settle(self, outcome: Outcome) -> None:
        if outcome.request.id in self.outcomes:
            raise AssertionError(f"request {outcome.request.id} answered twice")
        self.outcomes[outcome.request.id] = outcome

    def _finish(self, request: Request, finish: float, extra: float = 0.0) -> None:
        self._settle(Outcome(request, finish + extra - request.arrival))

    def _reject(self, request: Request, status: int) -> None:
        self._settle(Outcome(request, None, status))

    def _via_service(self, request: Request) -> None:
        now = self.env.now
        pool = self.connections[request.id % self.config.clients]
        # Drop connections the server closed: idle for keepalive_s, or to a pod that is going away.
        pool[:] = [c for c in pool if c[0].deleted is None and now - c[1] < self.config.keepalive_s]
        # httpx takes the oldest idle connection; a connection is busy until its last request finished.
        connection = next((c for c in pool if c[1] <= now), None)
        if connection is None:
            ready = self._ready_pods()
            if not ready:
                self._reject(request, 503)
                return
            connection = [self.rng.choice(ready), now]
            pool.append(connection)
        connection[1] = self._assign(connection[0], request.pairs, request.tokens)
        self._finish(request, connection[1])

    def _via_router(self, request: Request, ready: list[Pod]) -> None:
        if sum(p.pairs for p in ready) + request.pairs > self.config.router_max_pairs * len(ready):
            self._reject(request, 429)
            return
        count = 1
        if self.config.policy != "router":
            # Shards go to different pods: two shards on one pod would only queue behind each other.
            count = min(math.ceil(request.pairs / self.config.shard_documents), len(ready))
        shard = math.ceil(request.pairs / count)
        finish = 0.0
        used: set[int] = set()
        remaining_pairs, remaining_tokens = request.pairs, request.tokens
        for index in range(count):
            pairs = min(shard, remaining_pairs)
            tokens = remaining_tokens if index == count - 1 else round(request.tokens * pairs / request.pairs)
            remaining_pairs -= pairs
            remaining_tokens -= tokens
            pod = min((p for p in ready if id(p) not in used), key=lambda p: p.pairs)
            used.add(id(pod))
            finish = max(finish, self._assign(pod, pairs, tokens))
        self._finish(request, finish, self.config.router_overhead_s)

    def _arrive(self, request: Request) -> None:
        self.last_request = self.env.now
        if self.config.policy == "service":
            self._via_service(request)
            return
        ready = self._ready_pods()
        if ready:
            self._via_router(request, ready)
            return
        if self.config.policy != "router-zero" or len(self.held) >= self.config.hold_requests:
            self._reject(request, 503)
            return
        self.held.append(request)
        if self.replicas == 0:
            self.scale(1, why="router")
        self.env.process(self._hold_timeout(request))

    def _hold_timeout(self, request: Request):
        yield self.env.timeout(self.config.hold_s)
        if request in self.held:
            self.held.remove(request)
            self._reject(request, 503)

    def _release_held(self) -> None:
        ready = self._ready_pods()
        held, self.held = self.held, []
        for request in held:
            self._via_router(request, ready)

    def _arrivals(self):
        for request in self.trace.requests:
            yield self.env.timeout(max(0.0, request.arrival - self.env.now))
            self._arrive(request)

    # -- the run --------------------------------------------------------------------------------------------
    def run(self) -> Result:
        """Run the trace to its end plus a drain, and return what happened."""
        start = self.config.initial_replicas
        if start is None:
            start = 0 if self.config.policy == "router-zero" else self.hpa.min_replicas
        self.replicas = start
        for _ in range(start):
            self._new_pod(0.0, warm=True)
        self._record()
        self.env.process(self._arrivals())
        self.env.process(self._hpa_loop())
        self.env.run(until=self.trace.duration)
        end = self.trace.duration
        # Requests still held at the end never got an answer within the trace: count them as rejected.
        for request in self.held:
            self._reject(request, 503)
        self.held = []
        pod_seconds = sum(min(p.gone if p.gone is not None else end, end) - p.created for p in self.pods)
        return Result(
            self.trace,
            self.config.policy,
            self.metric,
            self.hpa.target,
            [self.outcomes[r.id] for r in self.trace.requests if r.id in self.outcomes],
            self.timeline,
            pod_seconds,
            self.scale_changes,
            self.hpa.min_replicas,
            self.hpa.max_replicas,
        )
