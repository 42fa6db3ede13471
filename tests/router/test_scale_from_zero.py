"""Scale from zero: the router's scaler against the API emulator, and the hold of requests at zero replicas.

The scaler talks to the emulator exactly as to kube-apiserver (kubernetes_asyncio, the `deployments/scale`
subresource, resourceVersion preconditions); replicas are fake servers on loopback that export the server's
`reranker_requests_total` and `reranker_pairs_in_flight`.
"""

from __future__ import annotations

import asyncio
import datetime
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from kubernetes_asyncio import client as k8s
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from cluster import DEPLOYMENTS, NAME, NS, history, replicas_of  # noqa: E402
from e2e.emulator import Fault, StampingEmulator  # noqa: E402
from fakes import FakeBackend, RouterUnderTest, Served  # noqa: E402
from reranker_router.config import EjectionConfig, ScaleFromZeroConfig  # noqa: E402
from reranker_router.metrics import RouterMetrics  # noqa: E402
from reranker_router.replicas import ReplicaSet  # noqa: E402
from reranker_router.scaler import DeploymentScale, ScaleError, Scaler  # noqa: E402


def connector(emulator: StampingEmulator | None):
    async def connect() -> DeploymentScale:
        configuration = k8s.Configuration(host=str(emulator.url).rstrip("/"))
        return DeploymentScale(k8s.ApiClient(configuration), NS, NAME)

    return connect


class Harness:
    """One router pod's scaler: its replica set, metrics and a stand-in for its request counters."""

    made: list[Harness] = []  # closed by the `session` fixture

    def __init__(self, emulator: StampingEmulator, session: aiohttp.ClientSession, idle: float = 600) -> None:
        self.replicas = ReplicaSet(EjectionConfig(), wait_seconds=30)
        self.metrics = RouterMetrics(CollectorRegistry())
        self.started = 0
        self.active = 0
        self.scaler = Scaler(
            ScaleFromZeroConfig(namespace=NS, deployment=NAME, idle_seconds=idle),
            self.replicas,
            session,
            self.metrics,
            busy=lambda: (self.started, self.active),
            connect=connector(emulator),
        )
        self.replicas.on_no_backend = self.scaler.request_scale_up  # wired as reranker_router.app.run does
        Harness.made.append(self)

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture()
async def session():
    async with aiohttp.ClientSession() as session:
        yield session
    for harness in Harness.made:
        await harness.scaler.close()
    Harness.made.clear()


async def test_scale_up_sets_one_replica_through_the_scale_subresource(emulator, session) -> None:
    harness = Harness(emulator, session)
    assert await harness.scaler.scale_up() is True
    assert replicas_of(emulator) == 1
    assert ("update", "deployments/scale", "apps") in emulator.api_calls
    assert harness.count("reranker_router_scale_total", direction="up") == 1
    # At 1 (or more) nothing is written again, and a count is never lowered.
    assert await harness.scaler.scale_up() is False
    await emulator.scale(DEPLOYMENTS, NS, NAME, 3)
    assert await harness.scaler.scale_up() is False
    assert history(emulator) == [0, 1, 3]


async def test_two_routers_scaling_up_at_once_write_one_replica_once(emulator, session) -> None:
    first, second = Harness(emulator, session), Harness(emulator, session)
    # Both read replicas 0 before either writes (the emulator holds each read for a moment).
    emulator.faults.append(Fault(verb="get", plural="deployments", subresource="scale", delay=0.2, times=2))
    results = await asyncio.gather(first.scaler.scale_up(), second.scaler.scale_up())
    assert sorted(results) == [False, True]
    assert history(emulator) == [0, 1]
    ups = first.count("reranker_router_scale_total", direction="up")
    ups += second.count("reranker_router_scale_total", direction="up")
    assert ups == 1


async def test_a_stale_resource_version_gets_409_from_the_emulator(emulator) -> None:
    connect = connector(emulator)
    scale = await connect()
    read = await scale.read()
    await emulator.scale(DEPLOYMENTS, NS, NAME, 2)  # someone else writes in between
    try:
        assert await scale.write(1, read) is False
    finally:
        await scale.close()
    assert replicas_of(emulator) == 2


async def test_forbidden_is_logged_counted_retried_and_survived(emulator, session, caplog) -> None:
    harness = Harness(emulator, session)
    emulator.faults.append(Fault(verb="get", plural="deployments", subresource="scale", status=403, times=2))
    with pytest.raises(ScaleError, match="needs get and update on deployments/scale"):
        await harness.scaler.scale_up()
    # The loop (its probe waits 15 s first): a request waits at zero; the loop's first try gets the second 403,
    # the next one (after the backoff) works.
    loop = asyncio.ensure_future(harness.scaler.run())
    held = asyncio.ensure_future(harness.replicas.hold())
    try:
        deadline = time.monotonic() + 15
        while replicas_of(emulator) != 1:
            assert time.monotonic() < deadline, "the scaler never recovered from the 403s"
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
        held.cancel()
        await asyncio.gather(loop, held, return_exceptions=True)
    assert harness.count("reranker_router_scale_errors_total", reason="forbidden") == 1
    assert harness.count("reranker_router_scale_total", direction="up") == 1
    assert "ServiceAccount needs get and update on deployments/scale" in caplog.text


async def test_unreachable_api_is_an_error_not_a_crash(session) -> None:
    async def nowhere() -> DeploymentScale:
        return DeploymentScale(k8s.ApiClient(k8s.Configuration(host="http://127.0.0.1:9")), NS, NAME)

    harness = Harness(None, session)  # type: ignore[arg-type]
    harness.scaler._connect = nowhere
    with pytest.raises(ScaleError) as error:
        await harness.scaler.scale_up()
    assert error.value.reason == "network"


class MetricsBackend(FakeBackend):
    """A fake replica whose /metrics has the server's request counter and in-flight gauge."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            text = (
                "# TYPE reranker_requests_total counter\n"
                f'reranker_requests_total{{dialect="score",status="200"}} {len(self.seen)}.0\n'
                "# TYPE reranker_pairs_in_flight gauge\n"
                f"reranker_pairs_in_flight {self.in_flight}.0\n"
            ).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": text})
            return
        await super().__call__(scope, receive, send)


async def test_idle_replicas_are_scaled_to_zero_but_traffic_from_any_router_keeps_them(
    emulator, session
) -> None:
    await emulator.scale(DEPLOYMENTS, NS, NAME, 2)
    fakes = [MetricsBackend("a"), MetricsBackend("b")]
    served = [await Served(fake).start() for fake in fakes]
    harness = Harness(emulator, session, idle=1.0)
    harness.replicas.set_urls([s.url for s in served])
    loop = asyncio.ensure_future(harness.scaler.run())
    try:
        # Another router's traffic: requests straight to replica b every 0.3 s, for 2.5 idle periods.
        async with httpx.AsyncClient() as other_router:
            until = time.monotonic() + 2.5
            while time.monotonic() < until:
                body = {"text_1": ["q"], "text_2": ["d"]}
                assert (await other_router.post(served[1].url + "/score", json=body)).status_code == 200
                last_request = time.monotonic()
                await asyncio.sleep(0.3)
        assert replicas_of(emulator) == 2, "scaled down while another router's requests were served"
        # Then silence: down to 0 after about one idle period.
        quiet = time.monotonic()
        while replicas_of(emulator) != 0:
            assert time.monotonic() - quiet < 10, "never scaled down"
            await asyncio.sleep(0.05)
        assert time.monotonic() - last_request >= 1.0
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        for s in served:
            await s.stop()
    assert history(emulator)[-2:] == [2, 0]
    assert harness.count("reranker_router_scale_total", direction="down") == 1


async def test_a_replica_gone_for_one_probe_is_expected_but_two_probes_in_a_row_warn(
    emulator, session, caplog
) -> None:
    """Scaled away, a pod stays listed until discovery catches up (Endpoints removal and SIGTERM race in
    Kubernetes): one unreadable /metrics is routine, a replica still unreadable at the next probe is not."""
    await emulator.scale(DEPLOYMENTS, NS, NAME, 1)
    fake = MetricsBackend("a")
    served = await Served(fake).start()
    url = served.url
    await served.stop()  # the pod is gone, its URL not yet out of the replica set
    harness = Harness(emulator, session)
    harness.replicas.set_urls([url])
    caplog.set_level("DEBUG", logger="reranker_router.scaler")
    await harness.scaler.probe()
    misses = [r for r in caplog.records if r.getMessage().startswith("metrics of")]
    assert [r.levelname for r in misses] == ["DEBUG"], misses
    await harness.scaler.probe()
    misses = [r for r in caplog.records if r.getMessage().startswith("metrics of")]
    assert [r.levelname for r in misses] == ["DEBUG", "WARNING"], misses
    assert url in misses[-1].getMessage() and "2 probe(s) in a row" in misses[-1].getMessage()
    # Discovery drops it: the count starts over for whatever is listed next.
    harness.replicas.set_urls([])
    await harness.scaler.probe()
    assert harness.scaler._unreadable == {}


async def test_no_scale_down_while_this_router_holds_or_serves_requests(emulator, session) -> None:
    await emulator.scale(DEPLOYMENTS, NS, NAME, 1)
    harness = Harness(emulator, session, idle=0.5)
    harness.active = 1  # a request in flight (e.g. a long 1 000-document request)
    harness.scaler.last_activity -= 10
    assert await harness.scaler.scale_down() is False
    harness.active = 0
    harness.replicas.waiting = 1  # a request held for a replica
    harness.scaler.last_activity -= 10
    assert await harness.scaler.scale_down() is False
    harness.replicas.waiting = 0
    harness.scaler.last_activity -= 10
    assert await harness.scaler.scale_down() is True
    assert replicas_of(emulator) == 0


async def test_a_scale_up_by_someone_else_restarts_the_idle_clock(emulator, session) -> None:
    """Router B scales 0 -> 1 for its held request; router A, idle for long, must not undo it."""
    harness = Harness(emulator, session, idle=1.0)
    await harness.scaler.probe()  # sees 0
    harness.scaler.last_activity -= 10
    await emulator.scale(DEPLOYMENTS, NS, NAME, 1)
    await harness.scaler.probe()  # sees 1: a change is activity
    assert harness.scaler.idle_for() < 1.0
    assert await harness.scaler.scale_down() is False
    assert replicas_of(emulator) == 1


async def test_a_held_request_is_not_cut_short_by_the_request_timeout() -> None:
    """The hold comes before the request's deadline: held 1.5 s with a 1 s request timeout, then served."""
    async with RouterUnderTest([], request_timeout_seconds=1.0, no_backend={"wait_seconds": 10}) as router:
        async with httpx.AsyncClient(base_url=router.url, timeout=30) as client:
            started = time.monotonic()
            held = asyncio.ensure_future(client.post("/rerank", json={"query": "q", "documents": ["a", "b"]}))
            while not router.router.replicas.waiting:
                await asyncio.sleep(0.005)
            await asyncio.sleep(1.5)
            served = await Served(FakeBackend("late")).start()
            router.router.replicas.set_urls([served.url])
            reply = await held
    assert reply.status_code == 200, reply.text
    assert time.monotonic() - started >= 1.5
    await served.stop()


async def test_a_request_held_past_wait_seconds_gets_503_with_retry_after() -> None:
    async with RouterUnderTest(
        [], request_timeout_seconds=30, no_backend={"wait_seconds": 0.5}, admission={"retry_after_seconds": 7}
    ) as router:
        async with httpx.AsyncClient(base_url=router.url, timeout=30) as client:
            started = time.monotonic()
            reply = await client.post("/rerank", json={"query": "q", "documents": ["a"]})
    waited = time.monotonic() - started
    assert reply.status_code == 503 and reply.headers["retry-after"] == "7"
    assert 0.5 <= waited < 5
    assert router.no_backend_calls == 1


async def test_in_a_pod_the_serviceaccount_token_is_used_and_reread_as_it_rotates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes_asyncio.config import incluster_config

    token, cert = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("first-token")
    cert.write_bytes(self_signed_certificate())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
    # The client re-reads the file once its period (a minute) has passed; no waiting a minute here.
    monkeypatch.setattr(incluster_config, "TOKEN_REFRESH_PERIOD", datetime.timedelta(0))
    scale = await DeploymentScale.connect(NS, NAME)
    try:
        configuration = scale._api.configuration
        assert configuration.host == "https://10.96.0.1:443"
        assert await configuration.get_api_key_with_prefix("BearerToken") == "Bearer first-token"
        token.write_text("rotated-token")  # the kubelet rotates projected tokens (about hourly)
        assert await configuration.get_api_key_with_prefix("BearerToken") == "Bearer rotated-token"
    finally:
        await scale.close()


async def test_a_request_waiting_on_ejected_replicas_asks_for_a_scale_up_once_they_are_gone() -> None:
    """The request began waiting while DNS still listed (dead, ejected) replicas; then the list empties."""
    calls = []
    replicas = ReplicaSet(EjectionConfig(seconds=60), wait_seconds=5, on_no_backend=lambda: calls.append(1))
    replicas.set_urls(["http://a"])
    replicas.failed(next(iter(replicas)), "connect")
    held = asyncio.ensure_future(replicas.hold())
    while not replicas.waiting:
        await asyncio.sleep(0.005)
    assert calls == []
    replicas.set_urls([])
    assert calls == [1]
    replicas.set_urls(["http://b"])
    await asyncio.wait_for(held, 1)


def self_signed_certificate() -> bytes:
    """A PEM CA certificate (the client loads the cluster CA when it is created)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)
