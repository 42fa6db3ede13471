"""Long input never fails a request: planned truncation (pure) and the live servers.

Cross-encoders cut the (query, document) pair to max_model_len; template models cut query and document text
before the template, so the suffix that LAST-token pooling reads always survives.
"""

from __future__ import annotations

import json
import re
import types

import pytest
import requests
from conftest import CE_MAX_MODEL_LEN, QWEN3_INSTRUCTION, QWEN3_MAX_MODEL_LEN
from models import WORDS
from reranker_server.dialects import DialectError
from reranker_server.profiles import FAMILIES, TEMPLATE_DIR
from reranker_server.scoring import (
    TEMPLATE_MARGIN,
    TruncationPlan,
    VllmScorer,
    byte_bound,
    plan_budget,
    plan_each,
    plan_pair,
    truncations_from_lengths,
)
from transformers import AutoTokenizer


def words(n: int, offset: int = 0) -> str:
    return " ".join(WORDS[(i + offset) % len(WORDS)] for i in range(n))


class WordCounter:
    """A token counter that counts words and remembers which texts it was asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, texts):
        self.asked.extend(texts)
        return [len(t.split()) for t in texts]


# --- pure planning -----------------------------------------------------------------------------------------------


def test_short_texts_are_never_tokenised():
    count = WordCounter()
    plan = plan_pair("short query", ["a doc", "another doc"], max_len=128, special=3, count=count)
    assert plan == TruncationPlan(truncate_prompt_tokens=-1)
    assert count.asked == []
    assert plan_budget("q", ["d"], max_len=256, overhead=60, count=count) == TruncationPlan()
    assert count.asked == []


def test_byte_bound_is_an_upper_bound_on_real_tokens(tiny_bert_path, tiny_qwen3_path):
    texts = [
        "",
        "plain ascii words",
        "ünïcödé façade — “quotes”",
        "日本語のテキスト",
        "emoji 🎉🎉",
        words(300),
    ]
    for path in (tiny_bert_path, tiny_qwen3_path):
        tok = AutoTokenizer.from_pretrained(path)
        for text in texts:
            assert len(tok(text, add_special_tokens=False)["input_ids"]) <= byte_bound(text), (
                path.name,
                text,
            )


@pytest.mark.parametrize(
    ("q", "docs", "truncated_docs", "truncated_query"),
    [
        (5, [50, 200], 1, False),  # a long document is cut, the short query kept
        (200, [5], 0, True),  # a long query is cut against a short document
        (200, [200], 1, True),  # both long: longest-first cuts both to about half
        (60, [60], 0, False),  # 120 + 3 special tokens fit in 128
        (60, [66], 1, False),  # one token over: only the longer document is cut
    ],
)
def test_plan_pair_follows_longest_first(q, docs, truncated_docs, truncated_query):
    plan = plan_pair(words(q), [words(d, 7) for d in docs], max_len=128, special=3, count=WordCounter())
    assert (plan.truncate_prompt_tokens, plan.truncated_documents, plan.truncated_query) == (
        -1,
        truncated_docs,
        truncated_query,
    )


def test_plan_each_counts_query_and_documents_separately():
    plan = plan_each(
        words(300), [words(10), words(300), words(126)], max_len=128, special=2, count=WordCounter()
    )
    assert (plan.truncated_documents, plan.truncated_query) == (1, True)


def test_plan_budget_keeps_room_for_the_template():
    overhead, max_len = 60, 256
    available = max_len - overhead - TEMPLATE_MARGIN
    plan = plan_budget(
        words(5), [words(10), words(5000)], max_len=max_len, overhead=overhead, count=WordCounter()
    )
    assert plan.max_tokens_per_doc == available - 5
    assert (plan.max_tokens_per_query, plan.truncated_documents, plan.truncated_query) == (0, 1, False)
    plan = plan_budget(words(1500), [words(5)], max_len=max_len, overhead=overhead, count=WordCounter())
    assert plan.max_tokens_per_query == available // 2 and plan.truncated_query
    assert plan.max_tokens_per_doc == 0  # the short document fits next to the cut query
    with pytest.raises(DialectError, match="leaving no room"):
        plan_budget("q", ["d"], max_len=64, overhead=50, count=WordCounter())


# --- with the real tiny tokenizers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen3_scorer(tiny_qwen3_path):
    return VllmScorer(
        None,
        AutoTokenizer.from_pretrained(tiny_qwen3_path),
        family=FAMILIES["qwen3-reranker"],
        served_name="q",
        model_names=frozenset({"q"}),
        max_model_len=QWEN3_MAX_MODEL_LEN,
        default_instruction=QWEN3_INSTRUCTION,
        chat_template=(TEMPLATE_DIR / "qwen3_reranker.jinja").read_text(),
    )


def cut_to_tokens(tokenizer, text: str, n: int) -> str:
    """The first n tokens of text, sliced from the original string (what vLLM's max_tokens_per_* does)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= n:
        return text
    return text[: enc["offset_mapping"][n - 1][1]]


def test_qwen3_plan_keeps_the_suffix_and_fits(qwen3_scorer):
    tok = qwen3_scorer._tokenizer
    query, long_query, doc = "what is the capital city of france", words(1500), words(5000)
    for q in (query, long_query):
        plan = qwen3_scorer.plan(q, [doc, "short"], QWEN3_INSTRUCTION)
        assert plan.truncated_documents == 1 and plan.truncated_query == (q is long_query)
        q_cut = cut_to_tokens(tok, q, plan.max_tokens_per_query) if plan.max_tokens_per_query else q
        prompt = qwen3_scorer.render_prompt(
            q_cut, cut_to_tokens(tok, doc, plan.max_tokens_per_doc), QWEN3_INSTRUCTION
        )
        assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert len(tok(prompt)["input_ids"]) <= QWEN3_MAX_MODEL_LEN


# --- live servers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, lengths, query, docs, expected",
    [
        # Cross-encoders: one pair length per document; a pair at max_len (20) was cut.
        ("pair", [12, 20, 20], "q", ["a", "b", "c"], (2, False)),
        ("pair", [5, 6], "q", ["a", "b"], (0, False)),
        # A query longer than half the budget: the cut pairs are re-planned exactly (word counter).
        ("pair", [20, 11], " ".join(["q"] * 16), [" ".join(["d"] * 3), "e"], (0, True)),
        ("pair", [20], " ".join(["q"] * 12), [" ".join(["d"] * 12)], (1, True)),
        # Bi-encoders: the query's length, then each document's.
        ("each", [20, 3, 20], "q", ["a", "b"], (1, True)),
        ("each", [4, 3, 2], "q", ["a", "b"], (0, False)),
    ],
)
def test_truncations_from_vllm_prompt_lengths(kind, lengths, query, docs, expected):
    counter = WordCounter()
    got = truncations_from_lengths(kind, lengths, query, docs, max_len=20, special=3, count=counter)
    assert got == expected
    if byte_bound(query) <= (20 - 3) // 2:
        assert counter.asked == [], "a short query never needs tokenising: vLLM's lengths say it all"


class LengthReportingBackend:
    """Stands in for the bridge's backend: tokenises nothing, reports each pair's prompt length like vLLM."""

    def __init__(self, lengths: list[int] | None) -> None:
        self.lengths = lengths

    async def rerank(self, query, documents, **options):
        results = [{"index": i, "relevance_score": 0.5} for i in range(len(documents))]
        body = {"results": results, "usage": {"prompt_tokens": sum(self.lengths or [1])}}
        return types.SimpleNamespace(status=200, body=json.dumps(body).encode(), prompt_lengths=self.lengths)


def encoder_scorer(tiny_bert_path, lengths):
    return VllmScorer(
        LengthReportingBackend(lengths),
        AutoTokenizer.from_pretrained(tiny_bert_path),
        family=FAMILIES["cross-encoder"],
        served_name="ce",
        model_names=frozenset({"ce"}),
        max_model_len=20,
    )


async def test_encoder_counts_come_from_vllms_lengths_without_tokenising(tiny_bert_path):
    scorer = encoder_scorer(tiny_bert_path, [20, 7, 20])

    def no_tokenising(texts):
        raise AssertionError(f"tokenised {texts!r}: vLLM's prompt lengths should have been used")

    scorer.count_tokens = no_tokenising
    result = await scorer.rerank("q", [words(40), "short", words(50)])
    assert (result.truncated_documents, result.truncated_query) == (2, False)


@pytest.mark.parametrize("lengths", [None, [20, 7]], ids=["not-recorded", "mismatched"])
async def test_encoder_counts_fall_back_to_tokenising(tiny_bert_path, lengths, caplog):
    scorer = encoder_scorer(tiny_bert_path, lengths)
    result = await scorer.rerank("q", [words(40), "short", words(50)])
    assert (result.truncated_documents, result.truncated_query) == (2, False)
    if lengths is not None:  # a mismatch is a vLLM change worth a warning (once)
        assert "do not match the inputs" in caplog.text


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="expected 2 prompt lengths"):
        truncations_from_lengths("pair", [1], "q", ["a", "b"], max_len=20, special=3, count=WordCounter())


def truncation_counts(server) -> dict[str, float]:
    text = requests.get(server.url + "/metrics", timeout=10).text
    found = re.findall(r'^reranker_truncations_total\{part="(\w+)"\} ([0-9.e+]+)$', text, flags=re.M)
    return {part: float(value) for part, value in found}


def rerank(server, query: str, documents: list[str], **extra) -> dict:
    reply = requests.post(
        server.url + "/v1/rerank",
        json={"model": server.served_name, "query": query, "documents": documents, **extra},
        headers=server.headers(),
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def scores_by_index(body: dict) -> list[float]:
    return [r["relevance_score"] for r in sorted(body["results"], key=lambda r: r["index"])]


@pytest.mark.vllm
def test_cross_encoder_long_document_and_query_are_cut_and_counted(ce_server):
    before = truncation_counts(ce_server)
    body = rerank(ce_server, words(1500), ["paris is the capital", words(5000, 3), ""])
    assert len(body["results"]) == 3
    assert body["usage"]["prompt_tokens"] <= 3 * CE_MAX_MODEL_LEN
    after = truncation_counts(ce_server)
    # All three pairs are over 128 tokens: the long query is cut in each; only the 5000-word document is cut.
    assert after.get("document", 0) - before.get("document", 0) == 1
    assert after.get("query", 0) - before.get("query", 0) == 1


@pytest.mark.vllm
def test_cross_encoder_counts_cut_documents_from_vllm_lengths(ce_server):
    before = truncation_counts(ce_server)
    rerank(ce_server, "the cat", [words(400), "the cat is a pet", words(300, 5)])
    after = truncation_counts(ce_server)
    assert after.get("document", 0) - before.get("document", 0) == 2
    assert after.get("query", 0) - before.get("query", 0) == 0


@pytest.mark.vllm
def test_cross_encoder_edge_documents(ce_server):
    scores = scores_by_index(rerank(ce_server, "the cat", ["", "the cat is a pet", "the cat is a pet"]))
    assert len(scores) == 3 and scores[1] == scores[2]


@pytest.mark.vllm
def test_qwen3_long_document_keeps_the_suffix(qwen3_server, qwen3_scorer):
    """The server's score of a 5000-word document equals its score of our own cut: same prompt, suffix intact."""
    tok = qwen3_scorer._tokenizer
    query, doc = "what is the capital city of france", words(5000)
    plan = qwen3_scorer.plan(query, [doc], QWEN3_INSTRUCTION)
    cut = cut_to_tokens(tok, doc, plan.max_tokens_per_doc)
    before = truncation_counts(qwen3_server)
    body = rerank(qwen3_server, query, [doc, cut, "paris"])
    scores = scores_by_index(body)
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)
    assert truncation_counts(qwen3_server).get("document", 0) - before.get("document", 0) == 1
    expected_tokens = sum(
        len(tok(qwen3_scorer.render_prompt(query, d, QWEN3_INSTRUCTION))["input_ids"])
        for d in (cut, cut, "paris")
    )
    assert body["usage"]["prompt_tokens"] == expected_tokens


@pytest.mark.vllm
def test_qwen3_long_query_is_cut_not_refused(qwen3_server, qwen3_scorer):
    tok = qwen3_scorer._tokenizer
    query = words(1500)
    plan = qwen3_scorer.plan(query, ["paris"], QWEN3_INSTRUCTION)
    cut_query = cut_to_tokens(tok, query, plan.max_tokens_per_query)
    long_scores = scores_by_index(rerank(qwen3_server, query, ["paris", "", "paris"]))
    cut_scores = scores_by_index(rerank(qwen3_server, cut_query, ["paris", "", "paris"]))
    assert long_scores == pytest.approx(cut_scores, abs=1e-6)
    assert long_scores[0] == long_scores[2]  # identical documents, identical scores
