"""Every RAGFlow provider (and a few other clients) against the REAL server on tiny models.

Each test builds the URL, body and headers exactly as the client does (see
/work/shared/reference/ragflow-contract.md §1 and §6) and parses the reply with the client's own rule. The
VLLM provider goes through the real `cohere==5.6.2` SDK that RAGFlow pins. Servers come from conftest.py:
`ce_server` (tiny BERT cross-encoder, no key), `qwen3_server` (tiny Qwen3 reranker, API key), `minilm_server`
(the packaged MiniLM bi-encoder).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urljoin

import cohere
import pytest
import requests
from conftest import GUARDED_ROUTES

pytestmark = pytest.mark.vllm

QUERY = "what is the capital city of france"
DOCS = [
    "paris is the capital city of france",
    "the cat is a pet animal",
    "rain and snow in winter",
    "football is a game",
    "the river of paris",
]
TIMEOUT = 30


def ragflow_rank(results: list[dict], n: int) -> list[float]:
    """RAGFlow's parsing rule `rank[d["index"]] = d["relevance_score"]`, with MWS's strict checks on top.

    Every input document must come back once, with a unique integer index in range and a finite score in
    [0, 1] (RAGFlow blends the score with text similarity, so logits or raw cosines would distort retrieval).
    """
    assert len(results) == n, f"expected {n} results, got {len(results)}"
    indices = [d["index"] for d in results]
    assert all(isinstance(i, int) and 0 <= i < n for i in indices), indices
    assert len(set(indices)) == n, f"duplicate indices: {indices}"
    rank = [0.0] * n
    for d in results:
        score = d["relevance_score"]
        assert isinstance(score, float) and math.isfinite(score), score
        assert 0.0 <= score <= 1.0, score
        rank[d["index"]] = score
    scores = [d["relevance_score"] for d in results]
    assert scores == sorted(scores, reverse=True), "results must be sorted by score"
    return rank


def bearer(key: str | None) -> dict[str, str]:
    # RAGFlow's requests-based providers send `Bearer <key>` even when the key is empty.
    return {"Authorization": f"Bearer {key or ''}"}


def post(url: str, body: dict, headers: dict | None = None) -> requests.Response:
    reply = requests.post(url, json=body, headers=headers or {}, timeout=TIMEOUT)
    assert reply.status_code == 200, f"{url}: {reply.status_code} {reply.text[:300]}"
    return reply


def roots(server) -> list[str]:
    """The two base URLs users type: `http://svc:8000` and `http://svc:8000/v1`."""
    return [server.url, server.url + "/v1"]


@pytest.mark.parametrize("suffix", ["", "/v1", "/v1/"])
def test_vllm_provider_through_cohere_5_6_2(ce_server, suffix):
    client = cohere.Client(api_key=ce_server.api_key or "x", base_url=ce_server.url + suffix, timeout=30.0)
    res = client.rerank(
        model=ce_server.served_name, query=QUERY, documents=DOCS, top_n=len(DOCS), return_documents=False
    )
    rank = ragflow_rank(
        [{"index": r.index, "relevance_score": r.relevance_score} for r in res.results], len(DOCS)
    )
    assert len(rank) == len(DOCS)
    assert res.meta is None or res.meta.api_version.version == "1"


def test_vllm_provider_with_a_key_through_cohere(qwen3_server):
    base = qwen3_server.url + "/v1"
    res = cohere.Client(api_key=qwen3_server.api_key, base_url=base, timeout=30.0).rerank(
        model=qwen3_server.served_name, query=QUERY, documents=DOCS, top_n=len(DOCS), return_documents=False
    )
    ragflow_rank([{"index": r.index, "relevance_score": r.relevance_score} for r in res.results], len(DOCS))
    with pytest.raises(cohere.core.api_error.ApiError) as info:
        cohere.Client(api_key="x", base_url=base, timeout=30.0).rerank(
            model=qwen3_server.served_name,
            query=QUERY,
            documents=DOCS,
            top_n=len(DOCS),
            return_documents=False,
        )
    assert info.value.status_code == 401


def test_cohere_5_8_url_with_a_v1_base(ce_server):
    # cohere >= 5.8 posts to "v1/rerank" relative to the base, so a ".../v1" base gives /v1/v1/rerank.
    body = {
        "model": ce_server.served_name,
        "query": QUERY,
        "documents": DOCS,
        "top_n": len(DOCS),
        "return_documents": False,
    }
    ragflow_rank(post(ce_server.url + "/v1/v1/rerank", body, bearer("x")).json()["results"], len(DOCS))


@pytest.mark.parametrize("rule", ["0.24+", "<=0.23"])
def test_openai_api_compatible_provider(ce_server, rule):
    for base in roots(ce_server):
        if rule == "0.24+":
            url = base if "/rerank" in base else base.rstrip("/") + "/rerank"
        else:
            url = urljoin(base, "/rerank")
        body = {
            "model": ce_server.served_name.split("___")[0],
            "query": QUERY,
            "documents": DOCS,
            "top_n": len(DOCS),
        }
        reply = post(url, body, bearer(ce_server.api_key))
        ragflow_rank(reply.json().get("results", []), len(DOCS))


def test_localai_provider(ce_server):
    for base in roots(ce_server):
        url = base if "/rerank" in base else urljoin(base, "/rerank")
        body = {"model": ce_server.served_name, "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
        ragflow_rank(post(url, body, bearer(ce_server.api_key)).json()["results"], len(DOCS))


def test_xinference_provider_string_flags_and_no_top_n(ce_server):
    for base in roots(ce_server):
        url = base
        if "/v1" not in url:
            url = urljoin(base, "/v1/rerank")
        if "/rerank" not in url:
            url = urljoin(base, "/v1/rerank")
        assert url == ce_server.url + "/v1/rerank"
        body = {
            "model": ce_server.served_name,
            "query": QUERY,
            "return_documents": "true",
            "return_len": "true",
            "documents": DOCS,
        }
        key = ce_server.api_key
        headers = bearer(key) if key not in (None, "", "x") else {}
        results = post(url, body, headers).json()["results"]
        ragflow_rank(results, len(DOCS))
        assert {r["document"]["text"] for r in results} == set(DOCS), (
            "return_documents 'true' echoes the texts"
        )


def test_huggingface_tei_provider_batches_of_8(ce_server):
    texts = [f"{DOCS[i % len(DOCS)]} {i}" for i in range(19)]
    for base in roots(ce_server):
        url = base.rstrip("/")
        if not url.endswith("/rerank"):
            url += "/rerank"
        scores = [0.0] * len(texts)
        for start in range(0, len(texts), 8):
            batch = texts[start : start + 8]
            # No Authorization header at all: RAGFlow's TEI provider sends only Content-Type.
            reply = post(url, {"query": QUERY, "texts": batch, "raw_scores": False, "truncate": True})
            items = reply.json()
            assert isinstance(items, list) and len(items) == len(batch)
            assert sorted(item["index"] for item in items) == list(range(len(batch)))
            for item in items:
                assert math.isfinite(item["score"]) and 0.0 <= item["score"] <= 1.0
                scores[start + item["index"]] = item["score"]
        assert all(s > 0.0 for s in scores)


def test_gpustack_provider(ce_server):
    # yarl: URL(base) / "v1" / "rerank" -> /v1/rerank for the root, /v1/v1/rerank for a /v1 base.
    for base in roots(ce_server):
        url = base.rstrip("/") + "/v1/rerank"
        body = {"model": ce_server.served_name, "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
        headers = {"authorization": f"Bearer {ce_server.api_key or 'x'}"}
        ragflow_rank(post(url, body, headers).json()["results"], len(DOCS))


def test_jina_provider_full_url_and_token_usage(ce_server):
    body = {"model": ce_server.served_name, "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
    reply = post(ce_server.url + "/v1/rerank", body, bearer(ce_server.api_key)).json()
    ragflow_rank(reply["results"], len(DOCS))
    assert reply["usage"]["total_tokens"] > 0, "RAGFlow 0.26+ verification fails when total_tokens is 0"


def test_ragflow_0_26_verification_probe_and_discovery(ce_server):
    base = ce_server.url + "/v1"  # 0.26+ appends /v1 to whatever the user typed
    models = requests.get(base + "/models", headers=bearer("x"), timeout=TIMEOUT).json()
    # Discovery types a model as rerank only if its id contains "rerank": the id is the served name, so that
    # is the user's choice (docs/api.md); here it must simply be the served name, in OpenAI's list shape.
    assert models["object"] == "list"
    assert [(m["id"], m["object"], m["root"]) for m in models["data"]] == [
        (ce_server.served_name, "model", ce_server.model_path)
    ]
    started = time.monotonic()
    res = cohere.Client(api_key="x", base_url=base, timeout=10.0).rerank(
        model=ce_server.served_name,
        query="What's the weather?",
        documents=["Is it sunny today?"],
        top_n=1,
        return_documents=False,
    )
    assert time.monotonic() - started < 10
    assert len(res.results) == 1 and math.isfinite(res.results[0].relevance_score)
    assert res.meta.billed_units.input_tokens > 0


def test_ragflow_0_25_add_llm_probe(ce_server):
    res = cohere.Client(api_key="x", base_url=ce_server.url, timeout=10.0).rerank(
        model=ce_server.served_name,
        query="Hello~ RAGFlower!",
        documents=["Hi, there!", "Ohh, my friend!"],
        top_n=2,
        return_documents=False,
    )
    ragflow_rank([{"index": r.index, "relevance_score": r.relevance_score} for r in res.results], 2)


def test_long_inputs_are_truncated_never_refused(ce_server):
    long_doc = " ".join(["paris france capital city river"] * 1200)  # 6 000 words
    long_query = " ".join(["what is the capital of france"] * 250)  # 1 500 words
    body = {"model": ce_server.served_name, "query": QUERY, "documents": [long_doc, "short one"], "top_n": 2}
    ragflow_rank(post(ce_server.url + "/v1/rerank", body, bearer("x")).json()["results"], 2)
    body = {"model": ce_server.served_name, "query": long_query, "documents": DOCS, "top_n": len(DOCS)}
    ragflow_rank(post(ce_server.url + "/rerank", body, bearer("x")).json()["results"], len(DOCS))
    metrics = requests.get(ce_server.url + "/metrics", timeout=TIMEOUT).text
    assert 'reranker_truncations_total{part="document"}' in metrics
    assert 'reranker_truncations_total{part="query"}' in metrics


def test_empty_and_identical_documents(ce_server):
    docs = ["", "paris is a city", "", "paris is a city", "the cat"]
    body = {"model": ce_server.served_name, "query": QUERY, "documents": docs, "top_n": len(docs)}
    rank = ragflow_rank(post(ce_server.url + "/v1/rerank", body).json()["results"], len(docs))
    assert rank[0] == pytest.approx(rank[2], abs=1e-6) and rank[1] == pytest.approx(rank[3], abs=1e-6)


@pytest.mark.parametrize("window", [66, 90, 126])
def test_ragflow_windows(ce_server, window):
    docs = [
        f"{DOCS[i % len(DOCS)]} chunk {i} " + "history of the king and queen " * 10 for i in range(window)
    ]
    body = {"model": ce_server.served_name, "query": QUERY, "documents": docs, "top_n": window}
    ragflow_rank(post(ce_server.url + "/v1/rerank", body, bearer("x")).json()["results"], window)


def test_concurrent_ragflow_workers(ce_server):
    docs = [f"{DOCS[i % len(DOCS)]} {i}" for i in range(66)]
    body = {"model": ce_server.served_name, "query": QUERY, "documents": docs, "top_n": 66}

    def one(_):
        return ragflow_rank(post(ce_server.url + "/v1/rerank", body).json()["results"], 66)

    with ThreadPoolExecutor(4) as pool:
        ranks = list(pool.map(one, range(4)))
    for rank in ranks[1:]:
        assert rank == pytest.approx(ranks[0], abs=1e-5), "the same request scores the same under concurrency"


def test_cohere_v2_route_langchain_llamaindex(ce_server):
    # ClientV2 (cohere >= 5.9) posts to {base}/v2/rerank; LangChain's default top_n is 3.
    body = {
        "model": ce_server.served_name,
        "query": QUERY,
        "documents": DOCS,
        "top_n": 3,
        "max_tokens_per_doc": 4096,
    }
    results = post(ce_server.url + "/v2/rerank", body, bearer("x")).json()["results"]
    assert len(results) == 3 and "document" not in results[0]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_dify_tei_info_and_rerank(ce_server):
    info = requests.get(ce_server.url + "/info", timeout=TIMEOUT).json()
    assert "reranker" in info["model_type"]
    items = post(ce_server.url + "/rerank", {"query": QUERY, "texts": DOCS, "return_text": True}).json()
    assert {item["text"] for item in items} == set(DOCS)
    assert [item["score"] for item in items] == sorted((item["score"] for item in items), reverse=True)


def test_nvidia_provider(ce_server):
    url = urljoin(ce_server.url + "/v1/", "reranking")
    body = {
        "model": ce_server.served_name,
        "query": {"text": QUERY},
        "passages": [{"text": d} for d in DOCS],
        "truncate": "END",
        "top_n": len(DOCS),
    }
    rankings = post(url, body, bearer("x")).json()["rankings"]
    assert sorted(r["index"] for r in rankings) == list(range(len(DOCS)))
    assert all(math.isfinite(r["logit"]) for r in rankings)


def test_score_route(ce_server):
    reply = post(
        ce_server.url + "/score", {"model": ce_server.served_name, "text_1": QUERY, "text_2": DOCS}
    ).json()
    assert [d["index"] for d in reply["data"]] == list(range(len(DOCS)))
    rerank = post(ce_server.url + "/rerank", {"query": QUERY, "documents": DOCS}).json()["results"]
    by_index = {r["index"]: r["relevance_score"] for r in rerank}
    assert [d["score"] for d in reply["data"]] == pytest.approx(
        [by_index[i] for i in range(len(DOCS))], abs=1e-6
    )


def test_bi_encoder_through_every_main_route(minilm_server):
    body = {"model": minilm_server.served_name, "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
    rank = ragflow_rank(post(minilm_server.url + "/v1/rerank", body).json()["results"], len(DOCS))
    assert rank.index(max(rank)) == 0, "the pretrained MiniLM puts the Paris answer first"
    raw = post(minilm_server.url + "/v1/rerank", {**body, "use_activation": False}).json()["results"]
    cosine = {d["index"]: d["relevance_score"] for d in raw}
    assert [(1 + cosine[i]) / 2 for i in range(len(DOCS))] == pytest.approx(rank, abs=1e-6), (
        "by default a bi-encoder's cosine is mapped onto [0, 1]; raw scores return the cosine itself"
    )
    tei = post(minilm_server.url + "/rerank", {"query": QUERY, "texts": DOCS}).json()
    assert tei[0]["index"] == 0


def test_unknown_model_is_404_naming_the_served_model(ce_server):
    reply = requests.post(
        ce_server.url + "/v1/rerank",
        json={"model": "bge-reranker-v2-m3", "query": QUERY, "documents": DOCS},
        timeout=TIMEOUT,
    )
    assert reply.status_code == 404 and ce_server.served_name in reply.json()["error"]["message"]


def test_api_key_guards_every_scoring_and_tokenising_route(qwen3_server):
    body = {
        "model": qwen3_server.served_name,
        "query": QUERY,
        "documents": DOCS[:2],
        "text_1": QUERY,
        "text_2": DOCS[:2],
    }
    for method, path in GUARDED_ROUTES:
        for headers in ({}, {"Authorization": "Bearer x"}, {"Authorization": "Bearer "}):
            reply = requests.request(
                method, qwen3_server.url + path, json=body, headers=headers, timeout=TIMEOUT
            )
            assert reply.status_code == 401, f"{method} {path} {headers}: {reply.status_code}"
    for path in ("/v1/rerank", "/rerank", "/score"):
        post(qwen3_server.url + path, body, bearer(qwen3_server.api_key))
    assert requests.get(
        qwen3_server.url + "/v1/models", headers={"X-API-Key": qwen3_server.api_key}, timeout=TIMEOUT
    ).ok
    for path in ("/health", "/metrics", "/ping", "/version"):
        assert requests.get(qwen3_server.url + path, timeout=TIMEOUT).status_code == 200, path


def test_instruction_reaches_the_template_model(qwen3_server):
    headers = bearer(qwen3_server.api_key)
    base = {"model": qwen3_server.served_name, "query": QUERY, "documents": DOCS[:1]}
    plain = post(qwen3_server.url + "/v1/rerank", base, headers).json()
    told = post(
        qwen3_server.url + "/v1/rerank", base | {"instruction": "judge only the weather"}, headers
    ).json()
    assert plain["usage"]["prompt_tokens"] != told["usage"]["prompt_tokens"], (
        "the instruction changes the prompt"
    )


def test_metrics_after_requests(ce_server):
    post(ce_server.url + "/v1/rerank", {"query": QUERY, "documents": DOCS})
    text = requests.get(ce_server.url + "/metrics", timeout=TIMEOUT).text
    for name in (
        'reranker_requests_total{dialect="cohere",status="200"}',
        "reranker_request_duration_seconds_bucket",
        "reranker_documents_per_request_count",
        "reranker_pairs_in_flight 0.0",
        "reranker_pairs_waiting",
        "vllm:num_requests_waiting",
    ):
        assert name in text, name
