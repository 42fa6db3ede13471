"""Ranking quality with a real pretrained model: all-MiniLM-L6-v2 served as a bi-encoder reranker.

Each query has exactly one passage in the shared pool that answers it; every query is ranked against the whole
pool, so the other queries' answers are the distractors.
"""

from __future__ import annotations

import math

import pytest
import requests

pytestmark = pytest.mark.vllm

# (query, the passage that answers it)
CASES = [
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    (
        "How do plants make their food?",
        "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar.",
    ),
    (
        "Who wrote Romeo and Juliet?",
        "Romeo and Juliet is a tragedy written by William Shakespeare early in his career.",
    ),
    ("What is the boiling point of water at sea level?", "At sea level, water boils at 100 degrees Celsius."),
    (
        "Which planet is known as the red planet?",
        "Mars is often called the Red Planet because of its reddish surface.",
    ),
    ("How many legs does a spider have?", "Spiders are arachnids with eight legs and two body segments."),
    (
        "What language is mostly spoken in Brazil?",
        "Portuguese is the official and most widely spoken language of Brazil.",
    ),
    ("What does a thermometer measure?", "A thermometer is an instrument that measures temperature."),
    (
        "When did the Second World War end?",
        "The Second World War ended in 1945 with the surrender of Germany and Japan.",
    ),
    (
        "What is the largest ocean on Earth?",
        "The Pacific Ocean is the largest and deepest of Earth's oceans.",
    ),
]
POOL = [passage for _, passage in CASES]


def test_minilm_ranks_the_answer_first(minilm_server, capsys):
    reciprocal_ranks, top1 = [], 0
    for i, (query, _) in enumerate(CASES):
        reply = requests.post(
            minilm_server.url + "/v1/rerank",
            json={"model": minilm_server.served_name, "query": query, "documents": POOL},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        assert len(results) == len(POOL)
        assert all(math.isfinite(r["relevance_score"]) for r in results)
        order = [r["index"] for r in results]
        rank = order.index(i) + 1
        reciprocal_ranks.append(1 / rank)
        top1 += rank == 1
    mrr = sum(reciprocal_ranks) / len(CASES)
    with capsys.disabled():
        print(f"\nMiniLM bi-encoder: top-1 {top1}/{len(CASES)}, MRR {mrr:.3f}")
    assert top1 >= len(CASES) - 1
    assert mrr >= 0.9


def test_minilm_passed_the_ranking_readiness_check(minilm_server):
    ready = requests.get(minilm_server.url + "/ready", timeout=10).json()
    assert (
        ready["status"] == "ready" and ready["golden_check"] == "ranking" and ready["family"] == "bi-encoder"
    )
    scores = ready["golden_scores"]
    assert scores[0] > max(scores[1:])


def test_scores_are_probabilities_and_raw_logits_come_on_request(ce_server):
    """The tiny cross-encoder declares Identity (like ms-marco MiniLM); the server still returns sigmoid scores."""
    body = {
        "model": ce_server.served_name,
        "query": "the cat",
        "documents": ["the cat is a pet", "rain in winter"],
    }
    default = requests.post(ce_server.url + "/v1/rerank", json=body, timeout=60).json()["results"]
    raw = requests.post(
        ce_server.url + "/v1/rerank", json={**body, "use_activation": False}, timeout=60
    ).json()
    by_index = {r["index"]: r["relevance_score"] for r in default}
    for r in raw["results"]:
        probability = 1 / (1 + math.exp(-r["relevance_score"]))
        assert by_index[r["index"]] == pytest.approx(probability, abs=2e-3)
        assert by_index[r["index"]] != pytest.approx(r["relevance_score"], abs=1e-3)
