"""Loopback: the first requests arrive at zero replicas, none is lost, and the idle service goes back to zero.

Parts: two real router processes (`scale_from_zero` pointed at the API emulator through a kubeconfig; DNS
discovery reads a file, see zero_router.py), the emulator holding the server Deployment at 0 replicas, and a
stand-in kubelet in the test that watches the Deployment's `spec.replicas`: at 1 it starts a real
`reranker-server` process (vLLM-CPU, tiny BERT cross-encoder) and, once `/ready`, lists it in the discovery
file as the cluster DNS would; at 0 it takes it out of the file and stops the server (SIGTERM, drain).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "server"))

import models  # noqa: E402
from cluster import NAME, NS, StampingEmulator, history, replicas_of  # noqa: E402
from processes import start_router  # noqa: E402
from servers import RunningServer, start_server, stop_server, tiny_ce_config  # noqa: E402
from test_router_vllm import REQUESTS, assert_same_reply  # noqa: E402

pytestmark = pytest.mark.vllm

IDLE_SECONDS = 8.0
WAIT_SECONDS = 600.0  # the server starts in a minute or more on 2 shared cores


@dataclass
class Kubelet:
    """Plays the Deployment controller, the kubelet and the DNS for one pod of the server Deployment."""

    emulator: StampingEmulator
    model: Path
    tmp: Path
    endpoints: Path
    server: RunningServer | None = None
    events: list[tuple[float, str]] = field(default_factory=list)

    async def run(self) -> None:
        """Follow spec.replicas until cancelled."""
        while True:
            wanted = replicas_of(self.emulator)
            if wanted > 0 and self.server is None:
                self.events.append((time.monotonic(), "start"))
                self.server = await asyncio.to_thread(start_server, self.tmp, tiny_ce_config(self.model))
                self.endpoints.write_text(self.server.url + "\n")
                self.events.append((time.monotonic(), "ready"))
            elif wanted == 0 and self.server is not None:
                self.endpoints.write_text("")  # out of the Service's endpoints first, then SIGTERM
                await asyncio.to_thread(stop_server, self.server)
                self.events.append((time.monotonic(), "stopped"))
                self.server = None
            await asyncio.sleep(0.1)

    def time_of(self, event: str) -> float:
        return next(t for t, e in self.events if e == event)


@pytest.fixture()
async def kubelet(emulator: StampingEmulator, tmp_path: Path) -> AsyncIterator[Kubelet]:
    model = await asyncio.to_thread(models.build_tiny_bert_cross_encoder, tmp_path / "tiny-bert-ce")
    kubelet = Kubelet(emulator, model, tmp_path / "pod", tmp_path / "endpoints")
    kubelet.endpoints.write_text("")
    task = asyncio.ensure_future(kubelet.run())
    yield kubelet
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if kubelet.server is not None:
        await asyncio.to_thread(stop_server, kubelet.server)


def router_config(tmp: Path) -> Path:
    path = tmp / "router.yaml"
    config = {
        "discovery": {"service": f"{NAME}-pods.{NS}.svc.cluster.local", "interval_seconds": 0.5},
        "scale_from_zero": {"namespace": NS, "deployment": NAME, "idle_seconds": IDLE_SECONDS},
        "no_backend": {"wait_seconds": WAIT_SECONDS, "max_waiting_requests": 64},
        "request_timeout_seconds": 30,
        "shard_documents": 16,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def kubeconfig(emulator: StampingEmulator, tmp: Path) -> Path:
    path = tmp / "kubeconfig"
    server = str(emulator.url).rstrip("/")
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "router", "user": {"token": "loopback"}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "router"}}],
                "current-context": "emulator",
            }
        )
    )
    return path


def metric(router_url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(router_url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def test_first_requests_at_zero_replicas_are_all_answered_then_idle_scales_to_zero(
    emulator: StampingEmulator, kubelet: Kubelet, tmp_path: Path
) -> None:
    """Two router pods (as the operator runs them) share the Deployment; requests go to both at zero."""
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(kubeconfig(emulator, tmp_path))
    launcher = (str(Path(__file__).parent / "zero_router.py"), str(kubelet.endpoints))
    config = str(router_config(tmp_path))
    routers = await asyncio.gather(
        *(
            asyncio.to_thread(
                start_router, tmp_path / f"router-{i}", [], config=config, launcher=launcher, env=env
            )
            for i in range(2)
        )
    )

    def logs() -> str:
        return "\n".join(router.log_text()[-3000:] for router in routers)

    def total(name: str, **labels: str) -> float:
        return sum(metric(router.url, name, **labels) for router in routers)

    try:
        assert replicas_of(emulator) == 0
        # Every dialect at once, and the model list, while no replica exists, spread over both routers.
        sent = time.monotonic()
        answered: list[float] = []

        async def send(client: httpx.AsyncClient, path: str, body: dict | None) -> httpx.Response:
            reply = await (client.post(path, json=body) if body is not None else client.get(path))
            answered.append(time.monotonic())
            return reply

        calls = [*REQUESTS, ("/v1/models", None)]
        async with httpx.AsyncClient(timeout=WAIT_SECONDS + 60) as client:
            replies = await asyncio.gather(
                *(send(client, routers[i % 2].url + path, body) for i, (path, body) in enumerate(calls))
            )
        lost = [(path, r.status_code, r.text[:200]) for (path, _), r in zip(calls, replies, strict=True)]
        lost = [entry for entry in lost if entry[1] != 200]
        assert not lost, f"requests lost at zero replicas: {lost}\n{logs()}"
        assert kubelet.server is not None
        async with httpx.AsyncClient(base_url=kubelet.server.url, timeout=60) as direct:
            for (path, body), reply in zip(REQUESTS, replies[: len(REQUESTS)], strict=True):
                assert_same_reply(reply.json(), (await direct.post(path, json=body)).json())
            assert [m["id"] for m in replies[-1].json()["data"]] == ["tiny-ce"]
        first_answer = min(answered) - sent
        start_to_ready = kubelet.time_of("ready") - kubelet.time_of("start")
        assert history(emulator) == [0, 1]  # one scale-up for all the held requests of both routers
        assert total("reranker_router_scale_total", direction="up") == 1

        # Idle: back to 0 after IDLE_SECONDS without requests, and the kubelet stops the server.
        last = time.monotonic()
        while "stopped" not in {e for _, e in kubelet.events}:
            assert time.monotonic() - last < IDLE_SECONDS + 60, f"never scaled down\n{logs()}"
            await asyncio.sleep(0.2)
        idle_to_zero = kubelet.time_of("stopped") - last
        assert history(emulator) == [0, 1, 0]
        assert total("reranker_router_scale_total", direction="down") == 1
        assert idle_to_zero >= IDLE_SECONDS
        assert total("reranker_router_scale_errors_total") == 0
        assert "metrics of" not in logs(), "a replica's /metrics could not be read"
        print(
            f"\nscale from zero, 2 routers: {len(calls)} requests sent at 0 replicas, 0 lost; first answer "
            f"after {first_answer:.1f} s (server start to ready {start_to_ready:.1f} s); last answer after "
            f"{max(answered) - sent:.1f} s; scaled to 0 and stopped {idle_to_zero:.1f} s after the last "
            f"request (idle_seconds {IDLE_SECONDS:g})"
        )
    finally:
        await asyncio.gather(*(asyncio.to_thread(router.stop) for router in routers))
