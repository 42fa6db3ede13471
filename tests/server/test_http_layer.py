"""The HTTP layer alone: FastAPI app + `install`, with a small deterministic in-test Scorer (no vLLM).

The fake scorer's logit is the number of query words found in the document minus 1, so rankings are
predictable; it records every call so tests can see what reached the engine.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import httpx
import pytest
from conftest import GUARDED_ROUTES
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Gauge
from reranker_server.auth import OPEN_PATHS, KeyFile
from reranker_server.config import ServerConfig
from reranker_server.http import install

SERVED = "tiny-reranker"
MODEL_PATH = "/models/org/tiny-ce"
KEY = "s3cret-key"


@dataclass
class FakeResult:
    scores: list[float]
    prompt_tokens: int
    truncated_documents: int
    truncated_query: bool


@dataclass
class FakeScorer:
    served_name: str = SERVED
    model_names: frozenset[str] = frozenset({SERVED, "org/tiny-ce", MODEL_PATH})
    max_model_len: int = 512
    family: str = "cross-encoder"
    calls: list[dict] = field(default_factory=list)
    gate: asyncio.Event | None = None
    fail_with: Exception | None = None

    async def rerank(self, query, documents, *, instruction=None, use_activation=True):
        self.calls.append(
            dict(
                query=query, documents=list(documents), instruction=instruction, use_activation=use_activation
            )
        )
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(0)
        if self.fail_with is not None:
            raise self.fail_with
        words = set(query.lower().split())
        logits = [sum(w in words for w in doc.lower().split()) - 1.0 for doc in documents]
        scores = [1 / (1 + math.exp(-x)) for x in logits] if use_activation else logits
        return FakeResult(
            scores=scores,
            prompt_tokens=sum(len(query.split()) + len(d.split()) + 3 for d in documents),
            truncated_documents=sum(len(d.split()) > 50 for d in documents),
            truncated_query=len(query.split()) > 20,
        )


def make_app(scorer=None, *, key_file=None, max_documents=100, max_request_bytes=4096):
    """A stand-in for vLLM's app: probe and tokenising routes vLLM would leave, then our `install`."""
    app = FastAPI()

    async def ok():
        return {"ok": True}

    for path in ("/health", "/ready", "/ping", "/version", "/load"):
        app.add_api_route(path, ok, methods=["GET"])
    for path in ("/pooling", "/tokenize", "/detokenize", "/invocations", "/classify"):
        app.add_api_route(path, ok, methods=["POST"])
    registry = CollectorRegistry()
    config = ServerConfig(
        model={"name": MODEL_PATH, "served_name": SERVED},
        limits={"max_documents": max_documents, "max_request_bytes": max_request_bytes},
        auth={"api_key_file": str(key_file) if key_file else None},
    )
    scorer = scorer or FakeScorer()
    install(app, scorer, config, registry=registry)
    return app, scorer, registry


@pytest.fixture
def served():
    app, scorer, registry = make_app()
    with TestClient(app) as client:
        yield client, scorer, registry


DOCS = ["paris is the capital of france", "the cat is a pet", "", "paris france capital", "the cat is a pet"]
QUERY = "capital of france paris"


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank", "/v1/v1/rerank"])
def test_cohere_jina_routes_rank_every_document(served, path):
    client, _, _ = served
    reply = client.post(path, json={"model": SERVED, "query": QUERY, "documents": DOCS, "top_n": len(DOCS)})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    results = body["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert results[0]["index"] in (0, 3)
    by_index = {r["index"]: r["relevance_score"] for r in results}
    assert by_index[1] == by_index[4], "identical documents must score the same"
    assert body["usage"]["total_tokens"] > 0 and body["model"] == SERVED and body["id"]
    assert body["meta"]["api_version"]["version"] == ("2" if path == "/v2/rerank" else "1")
    echoed = "document" in results[0]
    assert echoed is (path != "/v2/rerank"), "Jina/Cohere v1 echo documents by default, Cohere v2 does not"


def test_rerank_options(served):
    client, scorer, _ = served
    top = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2}).json()["results"]
    assert len(top) == 2 and top[0]["document"]["text"] in (DOCS[0], DOCS[3])
    assert (
        len(client.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 0}).json()["results"])
        == 5
    )
    xinference = {
        "model": "org/tiny-ce",
        "query": QUERY,
        "documents": DOCS,
        "return_documents": "false",
        "return_len": "true",
    }
    results = client.post("/v1/rerank", json=xinference).json()["results"]
    assert len(results) == 5 and "document" not in results[0]
    objects = client.post(
        "/v1/rerank", json={"query": QUERY, "documents": [{"text": d} for d in DOCS], "rank_fields": ["text"]}
    )
    assert objects.status_code == 200 and len(objects.json()["results"]) == 5
    raw = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "use_activation": False}).json()[
        "results"
    ]
    assert raw[-1]["relevance_score"] == -1.0, "raw logits pass through unsquashed"
    client.post(
        "/rerank", json={"query": QUERY, "documents": ["x"], "chat_template_kwargs": {"instruction": "legal"}}
    )
    assert scorer.calls[-1]["instruction"] == "legal"


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank"])
def test_tei_shape_on_the_rerank_paths(served, path):
    client, scorer, _ = served
    reply = client.post(path, json={"query": QUERY, "texts": DOCS[:3], "raw_scores": False, "truncate": True})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert isinstance(body, list) and [item["index"] for item in body] == [0, 1, 2]
    assert set(body[0]) == {"index", "score"}
    with_text = client.post(
        path, json={"query": QUERY, "texts": DOCS[:2], "return_text": True, "raw_scores": True}
    ).json()
    assert with_text[0] == {"index": 0, "score": 3.0, "text": DOCS[0]}
    assert scorer.calls[-1]["use_activation"] is False


def test_score_route_pairings(served):
    client, scorer, _ = served
    one_to_many = client.post(
        "/score", json={"model": SERVED, "queries": QUERY, "documents": DOCS[:2]}
    ).json()
    assert one_to_many["object"] == "list" and [d["index"] for d in one_to_many["data"]] == [0, 1]
    assert one_to_many["data"][0]["score"] > one_to_many["data"][1]["score"]
    zipped = client.post(
        "/v1/score", json={"text_1": ["paris", "cat", "paris"], "text_2": ["paris", "paris", "cat"]}
    )
    assert zipped.status_code == 200, zipped.text
    assert [round(d["score"], 4) for d in zipped.json()["data"]] == [0.5, 0.2689, 0.2689]
    assert len(scorer.calls) == 3, "one scorer call per distinct query: 1 (1:N) + 2 (paris, cat)"
    assert client.post("/score", json={"data_1": "a", "data_2": ["a", "b"]}).status_code == 200


def test_nvidia_shape(served):
    client, _, _ = served
    body = {
        "model": SERVED,
        "query": {"text": QUERY},
        "passages": [{"text": d} for d in DOCS[:3]],
        "truncate": "END",
    }
    rankings = client.post("/v1/reranking", json=body).json()["rankings"]
    assert [r["index"] for r in rankings] == [0, 1, 2] and rankings[0]["logit"] == 3.0


def test_models_and_info(served):
    client, _, _ = served
    for path in ("/v1/models", "/models"):
        model = client.get(path).json()["data"][0]
        assert (model["id"], model["root"], model["max_model_len"], model["object"]) == (
            SERVED,
            MODEL_PATH,
            512,
            "model",
        )
    info = client.get("/info").json()
    assert info["model_id"] == SERVED and "reranker" in info["model_type"] and info["max_input_length"] == 512


GOOD = {"query": "q", "documents": ["a"]}


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "fragment"),
    [
        (
            "/rerank",
            dict(content=b"{not json", headers={"content-type": "application/json"}),
            400,
            "malformed JSON",
        ),
        ("/v1/rerank", dict(content=b"", headers={"content-type": "application/json"}), 400, "body is empty"),
        ("/v1/rerank", dict(json=["q"]), 400, "must be a JSON object"),
        ("/v1/rerank", dict(json={"documents": ["a"]}), 400, "'query' is required"),
        ("/v2/rerank", dict(json={"query": "", "documents": ["a"]}), 400, "'query' is empty"),
        ("/rerank", dict(json={"query": ["q"], "documents": ["a"]}), 400, "'query' must be a string"),
        ("/rerank", dict(json={"query": "q", "documents": []}), 400, "'documents' is empty"),
        ("/rerank", dict(json={"query": "q", "documents": [None]}), 400, "'documents[0]' must be a string"),
        ("/rerank", dict(json={"query": "q", "texts": []}), 400, "'texts' is empty"),
        ("/rerank", dict(json={"query": "q", "documents": ["a"], "top_n": -2}), 400, "'top_n'"),
        ("/v1/rerank", dict(json=GOOD | {"model": "bge-reranker"}), 404, f"serves '{SERVED}'"),
        (
            "/v1/score",
            dict(json={"model": "nope", "text_1": "q", "text_2": "a"}),
            404,
            "'nope' does not exist",
        ),
        (
            "/v1/reranking",
            dict(json={"model": "nope", "query": {"text": "q"}, "passages": [{"text": "a"}]}),
            404,
            "nope",
        ),
        ("/rerank", dict(json={"query": "q", "documents": ["d"] * 101}), 413, "limit is 100"),
        ("/score", dict(json={"text_1": "q", "text_2": ["d"] * 101}), 413, "limit is 100"),
        ("/rerank", dict(json={"query": "q", "documents": ["x" * 5000]}), 413, "limit is 4096 bytes"),
        (
            "/rerank",
            dict(content=b'{"query":"q"}', headers={"content-type": "text/plain"}),
            415,
            "application/json",
        ),
        ("/v1/rerank", dict(data={"query": "q", "documents": "a"}), 415, "x-www-form-urlencoded"),
        ("/score", dict(json={"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}), 400, "1:1, 1:N or N:N"),
    ],
)
def test_client_mistakes_get_a_clear_4xx(served, path, kwargs, status, fragment):
    client, scorer, _ = served
    reply = client.post(path, **kwargs)
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert fragment in body["error"]["message"]
    assert body["detail"] == body["message"] == body["error"]["message"] and body["error"]["code"] == status
    assert scorer.calls == [], "a refused request never reaches the engine"


def test_chunked_body_over_the_limit_is_413(served):
    client, _, _ = served

    def chunks():
        yield b'{"query":"q","documents":["'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"]}'

    reply = client.post("/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert reply.status_code == 413 and "limit is 4096 bytes" in reply.json()["detail"]


def test_engine_failure_is_500_and_releases_in_flight_pairs():
    app, scorer, registry = make_app(FakeScorer(fail_with=RuntimeError("engine died")))
    with TestClient(app) as client:
        reply = client.post("/rerank", json={"query": "q", "documents": ["a", "b"]})
    assert reply.status_code == 500 and "engine died" in reply.json()["error"]["message"]
    assert registry.get_sample_value("reranker_pairs_in_flight") == 0
    assert registry.get_sample_value("reranker_tokens_in_flight") == 0
    assert registry.get_sample_value("reranker_requests_total", {"dialect": "cohere", "status": "500"}) == 1


def test_non_finite_engine_scores_are_refused_not_sent():
    class NanScorer(FakeScorer):
        async def rerank(self, query, documents, **kwargs):
            result = await super().rerank(query, documents, **kwargs)
            result.scores[0] = math.nan
            return result

    app, _, _ = make_app(NanScorer())
    with TestClient(app) as client:
        reply = client.post("/rerank", json={"query": "q", "documents": ["a", "b"]})
    assert reply.status_code == 500 and "non-finite" in reply.json()["detail"]


async def test_a_bad_request_among_concurrent_good_ones_disturbs_nothing():
    scorer = FakeScorer(gate=asyncio.Event())
    app, _, registry = make_app(scorer)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        good = [
            asyncio.create_task(
                client.post("/v1/rerank", json={"query": f"w{i}", "documents": [f"w{i}", "z", f"w{i} w{i}"]})
            )
            for i in range(8)
        ]
        bad = [
            asyncio.create_task(
                client.post("/v1/rerank", content=b"{broken", headers={"content-type": "application/json"})
            ),
            asyncio.create_task(client.post("/v1/rerank", json={"query": "q", "documents": []})),
            asyncio.create_task(
                client.post("/v1/rerank", json={"query": "q", "documents": ["a"], "model": "other"})
            ),
        ]
        bad_replies = await asyncio.gather(*bad)
        while len(scorer.calls) < 8:
            await asyncio.sleep(0.001)
        assert registry.get_sample_value("reranker_pairs_in_flight") == 24, (
            "3 pairs x 8 requests held by the engine"
        )
        # 8 x (3 x 2-byte query + "w0" + "z" + "w0 w0") bytes / 4
        assert registry.get_sample_value("reranker_tokens_in_flight") == 8 * ((3 * 2 + 2 + 1 + 5) // 4)
        scorer.gate.set()
        good_replies = await asyncio.gather(*good)
    assert [r.status_code for r in bad_replies] == [400, 400, 404]
    for i, reply in enumerate(good_replies):
        assert reply.status_code == 200
        results = reply.json()["results"]
        assert [r["index"] for r in results] == [2, 0, 1], f"request {i} got someone else's ranking"
        assert results[0]["document"]["text"] == f"w{i} w{i}"
    assert registry.get_sample_value("reranker_pairs_in_flight") == 0


def test_metrics_are_exported_with_the_contract_names(served):
    client, _, registry = served
    waiting = Gauge("vllm:num_requests_waiting", "vLLM's queue", ["model_name"], registry=registry)
    waiting.labels(model_name=SERVED).set(7)
    client.post("/v1/rerank", json={"query": "q", "documents": ["a"] * 3})
    client.post("/rerank", json={"query": "q", "texts": ["a"] * 8})
    client.post("/score", json={"text_1": "q", "text_2": ["a", "b"]})
    client.post("/v1/rerank", json={"query": "", "documents": ["a"]})
    client.post("/v1/rerank", json={"query": "paris " * 30, "documents": ["word " * 60, "short"]})
    text = client.get("/metrics").text
    for name in (
        'reranker_requests_total{dialect="cohere",status="200"} 2.0',
        'reranker_requests_total{dialect="cohere",status="400"} 1.0',
        'reranker_requests_total{dialect="tei",status="200"} 1.0',
        'reranker_requests_total{dialect="score",status="200"} 1.0',
        'reranker_request_duration_seconds_count{dialect="tei"} 1.0',
        "reranker_documents_per_request_count 4.0",
        'reranker_documents_per_request_bucket{le="8.0"} 4.0',
        "reranker_pairs_in_flight 0.0",
        "reranker_tokens_in_flight 0.0",
        "reranker_pairs_waiting 7.0",
        'reranker_truncations_total{part="document"} 1.0',
        'reranker_truncations_total{part="query"} 1.0',
    ):
        assert name in text, name


def test_pairs_waiting_is_zero_before_the_engine_registers_its_gauge(served):
    _, _, registry = served
    assert registry.get_sample_value("reranker_pairs_waiting") == 0


@pytest.fixture
def keyed(tmp_path):
    key_file = tmp_path / "api-keys"
    key_file.write_text(f"\n{KEY}\nsecond-key \n")
    app, scorer, _ = make_app(key_file=key_file)
    with TestClient(app) as client:
        yield client, scorer


@pytest.mark.parametrize(("method", "path"), GUARDED_ROUTES)
def test_every_route_but_the_probes_needs_the_key(keyed, method, path):
    client, scorer = keyed
    # One body every POST route accepts: rerank reads query/documents, score queries/documents, NVIDIA passages.
    body = {"query": "q", "queries": "q", "documents": ["a"], "passages": [{"text": "a"}]}
    for headers in (
        {},
        {"Authorization": "Bearer x"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": KEY},
        {"X-API-Key": "nope"},
    ):
        reply = client.request(method, path, json=body if method == "POST" else None, headers=headers)
        assert reply.status_code == 401, (headers, reply.text)
        assert "API key" in reply.json()["error"]["message"] and reply.headers["www-authenticate"] == "Bearer"
    assert scorer.calls == []
    for headers in (
        {"Authorization": f"Bearer {KEY}"},
        {"authorization": "bearer second-key"},
        {"X-API-Key": KEY},
    ):
        assert (
            client.request(method, path, json=body if method == "POST" else None, headers=headers).status_code
            == 200
        )


@pytest.mark.parametrize("path", ["/health", "/ready", "/ping", "/version", "/metrics"])
def test_probes_stay_open_with_a_key(keyed, path):
    client, _ = keyed
    assert path in OPEN_PATHS
    assert client.get(path).status_code == 200


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer x"}, {"Authorization": "Bearer "}, {"X-API-Key": "x"}]
)
def test_without_a_key_file_any_or_no_credentials_are_accepted(served, headers):
    client, _, _ = served
    assert client.post("/v1/rerank", json=GOOD, headers=headers).status_code == 200


def test_key_file_is_reread_when_the_secret_changes(tmp_path):
    path = tmp_path / "keys"
    path.write_text("old\n")
    keys = KeyFile(path, recheck_seconds=0)
    assert keys.accepts("old") and not keys.accepts("new") and not keys.accepts("") and not keys.accepts(None)
    # Kubernetes swaps the ..data symlink; a rename onto the path is the same kind of change.
    replacement = tmp_path / "keys.new"
    replacement.write_text("new\n")
    replacement.replace(path)
    assert keys.accepts("new") and not keys.accepts("old")
    path.unlink()
    assert not keys.accepts("new"), "a vanished key file lets nobody in"
    path.write_text("\n\n")
    assert not keys.accepts(""), "an empty key file lets nobody in"


def test_install_guards_an_app_whose_middleware_stack_is_already_built(tmp_path):
    # vLLM's build_app returns an app with its middleware stack built; Starlette's add_middleware would refuse.
    app = FastAPI()
    TestClient(app).get("/anything")
    assert app.middleware_stack is not None
    key_file = tmp_path / "keys"
    key_file.write_text(KEY)
    config = ServerConfig(
        model={"name": MODEL_PATH, "served_name": SERVED}, auth={"api_key_file": str(key_file)}
    )
    install(app, FakeScorer(), config, registry=CollectorRegistry())
    with TestClient(app) as client:
        assert client.post("/rerank", json=GOOD).status_code == 401
        assert (
            client.post("/rerank", json=GOOD, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        )
