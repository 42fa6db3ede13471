"""Scale from zero: the router starts the first server pod and stops the last one.

The HorizontalPodAutoscaler cannot take a Deployment to 0 replicas (nor act while it has 0), so with
`autoscaling.minReplicas: 0` the routers, which see the traffic, do the two steps the HPA cannot:

- **Up.** A request that finds no replica at all wakes the scaler, which reads the Deployment's scale
  subresource (`apps/v1 deployments/<name>/scale`) and, only when `spec.replicas` is 0, writes 1 with the
  resourceVersion it read (optimistic concurrency). A 409 means someone else (another router pod, the HPA, a
  person) changed it first: the scaler reads again and never lowers a count. While requests are still held and
  no replica is known it checks again every probe interval, so a scale-down that raced the request is undone.
- **Down.** Each probe interval the scaler reads every known replica's `/metrics` (`reranker_requests_total`,
  `reranker_pairs_in_flight`): the servers count every request they serve, whichever router sent it, so all
  routers' traffic counts, not only this one's. Activity is also: a request held or in flight in this router, a
  replica seen for the first time, a change of the Deployment's `spec.replicas`, and a replica whose metrics
  could not be read (what cannot be seen is not idle). After `idle_seconds` without any, and with nothing held
  or in flight here, it writes 0 replicas, again with the resourceVersion it read.

API errors (403 without RBAC, 404, network) are logged with what to do, counted in
`reranker_router_scale_errors_total{reason}`, and retried with exponential backoff; they never stop the router.
The API client is kubernetes_asyncio (aiohttp, like the rest of the router): in a pod it uses the mounted
ServiceAccount token and re-reads it as the kubelet rotates it; elsewhere `$KUBECONFIG` (or ~/.kube/config).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from prometheus_client.parser import text_string_to_metric_families

from .config import ScaleFromZeroConfig
from .metrics import RouterMetrics
from .replicas import ReplicaSet

log = logging.getLogger(__name__)

FIELD_MANAGER = "reranker-router"
# The server's metrics (server/reranker_server/metrics.py) that show it is serving someone.
SERVED_COUNTER = "reranker_requests_total"
IN_FLIGHT_GAUGE = "reranker_pairs_in_flight"
API_TIMEOUT_SECONDS = 10.0
METRICS_TIMEOUT_SECONDS = 3.0
UNREADABLE_WARN_AFTER = 2  # probes in a row before an unreadable replica's metrics are worth a warning
BACKOFF_MAX_SECONDS = 30.0


def probe_interval(idle_seconds: float) -> float:
    """How often activity is sampled: a tenth of the idle period, between 0.5 and 15 seconds."""
    return min(max(idle_seconds / 10, 0.5), 15.0)


class ScaleError(Exception):
    """The API refused or could not be reached; `reason` labels the error metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Scale:
    """The Deployment's scale subresource as read: desired replicas and the resourceVersion to write against."""

    replicas: int
    resource_version: str


class DeploymentScale:
    """Reads and writes one Deployment's `/scale` subresource (the only API calls the router makes)."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str) -> None:
        self._api = api
        self._apps = k8s.AppsV1Api(api)
        self.namespace = namespace
        self.name = name

    @classmethod
    async def connect(cls, namespace: str, name: str) -> DeploymentScale:
        """In a pod: the ServiceAccount token (re-read as it rotates); elsewhere $KUBECONFIG or ~/.kube/config."""
        configuration = k8s.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            await k8s_config.load_kube_config(client_configuration=configuration)
        return cls(k8s.ApiClient(configuration), namespace, name)

    async def close(self) -> None:
        """Close the API client's connections."""
        await self._api.close()

    async def read(self) -> Scale:
        """The current desired replicas and resourceVersion."""
        scale = await self._call(
            self._apps.read_namespaced_deployment_scale(
                self.name, self.namespace, _request_timeout=API_TIMEOUT_SECONDS
            )
        )
        return Scale(scale.spec.replicas or 0, scale.metadata.resource_version)

    async def write(self, replicas: int, read: Scale) -> bool:
        """Set `replicas` if the scale is still the one `read`; False on a 409 (someone changed it first)."""
        body = k8s.V1Scale(
            metadata=k8s.V1ObjectMeta(
                name=self.name, namespace=self.namespace, resource_version=read.resource_version
            ),
            spec=k8s.V1ScaleSpec(replicas=replicas),
        )
        try:
            await self._call(
                self._apps.replace_namespaced_deployment_scale(
                    self.name,
                    self.namespace,
                    body,
                    field_manager=FIELD_MANAGER,
                    _request_timeout=API_TIMEOUT_SECONDS,
                )
            )
        except ScaleError as exc:
            if exc.reason == "conflict":
                return False
            raise
        return True

    async def _call(self, call):
        target = f"deployments/{self.name}/scale in namespace {self.namespace}"
        try:
            return await call
        except k8s.ApiException as exc:
            if exc.status == 409:
                raise ScaleError("conflict", f"{target} changed meanwhile") from None
            if exc.status in (401, 403):
                raise ScaleError(
                    "forbidden",
                    f"the API refused access to {target} ({exc.status} {exc.reason}): the router's "
                    "ServiceAccount needs get and update on deployments/scale (group apps) there",
                ) from None
            if exc.status == 404:
                raise ScaleError("not_found", f"{target}: the Deployment does not exist (404)") from None
            raise ScaleError(f"http_{exc.status}", f"{target}: {exc.status} {exc.reason}") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise ScaleError("network", f"{target}: {type(exc).__name__}: {exc}") from None


@dataclass
class _Seen:
    served: float
    in_flight: float


class Scaler:
    """The scale-from-zero loops of one router pod: up on demand, down after `idle_seconds` of no traffic."""

    def __init__(
        self,
        config: ScaleFromZeroConfig,
        replicas: ReplicaSet,
        session: aiohttp.ClientSession,
        metrics: RouterMetrics,
        *,
        busy: Callable[[], tuple[int, int]],
        connect: Callable[[], Awaitable[DeploymentScale]] | None = None,
    ) -> None:
        """`busy()` is (requests this router has started so far, requests it holds or serves now);
        `connect()` returns an awaitable `DeploymentScale` (default: `DeploymentScale.connect`)."""
        self.config = config
        self.replicas = replicas
        self.session = session
        self.metrics = metrics
        self.busy = busy
        self.interval = probe_interval(config.idle_seconds)
        self._connect = connect or (lambda: DeploymentScale.connect(config.namespace, config.deployment))
        self._scale: DeploymentScale | None = None
        self._wanted = asyncio.Event()
        self._seen: dict[str, _Seen] = {}
        self._unreadable: dict[str, int] = {}  # replica -> probes in a row whose metrics could not be read
        self._last_started = busy()[0]
        self._last_replicas: int | None = None
        self.last_activity = time.monotonic()
        if config.idle_seconds < replicas.wait_seconds:
            log.warning(
                "scale_from_zero.idle_seconds (%g) is below no_backend.wait_seconds (%g): a pod started for "
                "a request another router holds may be stopped before it is ready",
                config.idle_seconds,
                replicas.wait_seconds,
            )

    def request_scale_up(self) -> None:
        """The `on_no_backend` hook: a request waits and no replica exists (quick; the loop does the work)."""
        self._wanted.set()

    async def run(self) -> None:
        """Both loops, until cancelled."""
        await asyncio.gather(self._up_loop(), self._down_loop())

    async def close(self) -> None:
        """Close the API client."""
        if self._scale is not None:
            await self._scale.close()

    def idle_for(self) -> float:
        """Seconds since the last activity this router has seen."""
        return time.monotonic() - self.last_activity

    # ---- up --------------------------------------------------------------------------------------------

    def _needs_replica(self) -> bool:
        return self.replicas.waiting > 0 and len(self.replicas) == 0

    async def _up_loop(self) -> None:
        backoff = 1.0
        while True:
            if not self._needs_replica():
                self._wanted.clear()
                await self._wanted.wait()
            try:
                await self.scale_up()
                backoff = 1.0
                pause = self.interval
            except ScaleError as exc:
                self._failed("up", exc, backoff)
                pause, backoff = backoff, min(backoff * 2, BACKOFF_MAX_SECONDS)
            # Requests still held and still no replica: look again (a racing scale-down may have won).
            self._wanted.clear()
            await asyncio.sleep(pause)

    async def scale_up(self) -> bool:
        """0 -> 1 replica, only if it is 0 now; True if this router's write did it."""
        scale = await self._api()
        while True:
            current = await scale.read()
            self._observe(current.replicas)
            if current.replicas > 0:
                return False
            if await scale.write(1, current):
                self._observe(1)
                self.metrics.scale_actions.labels(direction="up").inc()
                log.info(
                    "scaled deployment %s/%s from 0 to 1 replica (%d requests held)",
                    scale.namespace,
                    scale.name,
                    self.replicas.waiting,
                )
                return True
            log.info(
                "deployment %s/%s changed while scaling up; reading it again", scale.namespace, scale.name
            )

    # ---- down ------------------------------------------------------------------------------------------

    async def _down_loop(self) -> None:
        backoff = 1.0
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.probe()
                if self.idle_for() >= self.config.idle_seconds:
                    await self.scale_down()
                backoff = 1.0
            except ScaleError as exc:
                self._failed("down", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def probe(self) -> None:
        """Sample every activity signal once: this router, every known replica's metrics, the Deployment."""
        started, busy = self.busy()
        if busy or started != self._last_started or self.replicas.waiting:
            self._touch("this router's requests")
        self._last_started = started
        urls = [replica.url for replica in self.replicas]
        readings = await asyncio.gather(*(self._read_replica(url) for url in urls))
        seen = {}
        unreadable = {}
        for url, (reading, why) in zip(urls, readings, strict=True):
            before = self._seen.get(url)
            if reading is None:
                self._touch(f"metrics of {url} unreadable")
                if before is not None:
                    seen[url] = before
                unreadable[url] = self._unreadable.get(url, 0) + 1
                # A replica scaled away is still listed until discovery catches up (Endpoints removal and
                # SIGTERM are concurrent in Kubernetes): one miss is expected, two in a row are not.
                level = logging.WARNING if unreadable[url] >= UNREADABLE_WARN_AFTER else logging.DEBUG
                log.log(level, "metrics of %s: %s (%d probe(s) in a row)", url, why, unreadable[url])
                continue
            seen[url] = reading
            if before is None:
                self._touch(f"new replica {url}")
            elif reading.served != before.served or reading.in_flight > 0:
                self._touch(f"replica {url} served requests")
        self._unreadable = unreadable
        self._seen = seen
        scale = await self._api()
        self._observe((await scale.read()).replicas)

    async def scale_down(self) -> bool:
        """N -> 0 replicas when still idle and nothing is held or in flight here; True if this router did it."""
        started, busy = self.busy()
        if busy or self.replicas.waiting or started != self._last_started:
            self._touch("this router's requests")
            return False
        scale = await self._api()
        current = await scale.read()
        self._observe(current.replicas)
        if current.replicas == 0 or self.idle_for() < self.config.idle_seconds:
            return False
        if not await scale.write(0, current):
            # Someone scaled meanwhile: that is activity; look again after a full idle period.
            self._touch("the deployment changed while scaling down")
            return False
        self._observe(0)
        self.metrics.scale_actions.labels(direction="down").inc()
        log.info(
            "scaled deployment %s/%s from %d to 0 replicas: no request served for %.0f s",
            scale.namespace,
            scale.name,
            current.replicas,
            self.idle_for(),
        )
        return True

    # ---- helpers ---------------------------------------------------------------------------------------

    async def _api(self) -> DeploymentScale:
        if self._scale is None:
            try:
                self._scale = await self._connect()
            except Exception as exc:
                raise ScaleError(
                    "config", f"no Kubernetes API configuration ({type(exc).__name__}: {exc})"
                ) from None
        return self._scale

    def _observe(self, replicas: int) -> None:
        if replicas != self._last_replicas:
            if self._last_replicas is not None:
                self._touch(f"deployment scaled from {self._last_replicas} to {replicas}")
            self._last_replicas = replicas

    def _touch(self, why: str) -> None:
        log.debug("activity: %s", why)
        self.last_activity = time.monotonic()

    def _failed(self, direction: str, exc: ScaleError, retry_in: float) -> None:
        self.metrics.scale_errors.labels(reason=exc.reason).inc()
        log.error("scale %s failed: %s; retrying in %.0f s", direction, exc, retry_in)

    async def _read_replica(self, url: str) -> tuple[_Seen | None, str]:
        """The replica's served-request count and pairs in flight, or None and why its metrics cannot be read."""
        try:
            timeout = aiohttp.ClientTimeout(total=METRICS_TIMEOUT_SECONDS)
            async with self.session.get(url + "/metrics", timeout=timeout) as response:
                if response.status != 200:
                    return None, f"HTTP {response.status}"
                text = await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        # vLLM's own metrics share the page; parse only the two lines of interest.
        wanted = "\n".join(
            line for line in text.splitlines() if line.startswith((SERVED_COUNTER, IN_FLIGHT_GAUGE))
        )
        served = in_flight = 0.0
        found = False
        for family in text_string_to_metric_families(wanted):
            for sample in family.samples:
                if sample.name == SERVED_COUNTER:
                    served += sample.value
                    found = True
                elif sample.name == IN_FLIGHT_GAUGE:
                    in_flight += sample.value
                    found = True
        if not found:
            return None, f"neither {SERVED_COUNTER} nor {IN_FLIGHT_GAUGE} found"
        return _Seen(served, in_flight), ""
