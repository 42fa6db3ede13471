"""The Qwen3-Reranker prompt, token for token against the model card's format (built here independently).

The model card builds: prefix + "<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}" + suffix,
with the suffix "<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n". LAST-token pooling reads the
final token, so the trailing "\\n\\n" must survive Jinja (which drops a template's last newline).
"""

from __future__ import annotations

import pytest
import requests
from conftest import QWEN3_INSTRUCTION, QWEN3_MAX_MODEL_LEN
from reranker_server.profiles import FAMILIES, TEMPLATE_DIR
from reranker_server.scoring import VllmScorer
from transformers import AutoTokenizer

CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QUERY = "what is the capital city of france"
DOCS = ["paris is the capital city of france", "the cat is a pet animal", ""]


def card_prompt(instruction: str, query: str, document: str) -> str:
    """The prompt exactly as the Qwen3-Reranker model card formats it."""
    return CARD_PREFIX + f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}" + CARD_SUFFIX


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen3_path):
    return AutoTokenizer.from_pretrained(tiny_qwen3_path)


@pytest.fixture(scope="module")
def scorer(tokenizer):
    """Our scorer's rendering path (the template vLLM is given), without an engine behind it."""
    return VllmScorer(
        None,
        tokenizer,
        family=FAMILIES["qwen3-reranker"],
        served_name="q",
        model_names=frozenset({"q"}),
        max_model_len=QWEN3_MAX_MODEL_LEN,
        default_instruction=QWEN3_INSTRUCTION,
        chat_template=(TEMPLATE_DIR / "qwen3_reranker.jinja").read_text(),
    )


@pytest.mark.parametrize(
    ("instruction", "expected_instruction"),
    [(None, CARD_DEFAULT_INSTRUCTION), ("Find the passage about cities", "Find the passage about cities")],
)
@pytest.mark.parametrize("document", DOCS)
def test_rendered_prompt_matches_the_model_card_token_for_token(
    scorer, tokenizer, instruction, expected_instruction, document
):
    rendered = scorer.render_prompt(QUERY, document, instruction)
    expected = card_prompt(expected_instruction, QUERY, document)
    assert rendered == expected
    assert tokenizer(rendered)["input_ids"] == tokenizer(expected)["input_ids"]


def test_last_token_is_the_double_newline(scorer, tokenizer):
    ids = tokenizer(scorer.render_prompt(QUERY, DOCS[0], None))["input_ids"]
    double_newline = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    single_newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert double_newline != single_newline  # the tiny tokenizer can tell them apart, so this test can fail
    assert ids[-len(double_newline) :] == double_newline
    assert ids[-len(double_newline) - 1] == tokenizer.convert_tokens_to_ids("</think>")


def _tokens(tokenizer, instruction: str, documents: list[str]) -> int:
    return sum(len(tokenizer(card_prompt(instruction, QUERY, d))["input_ids"]) for d in documents)


def _rerank(server, **body):
    reply = requests.post(
        server.url + "/v1/rerank",
        json={"model": server.served_name, "query": QUERY, "documents": DOCS, **body},
        headers=server.headers(),
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


@pytest.mark.vllm
def test_server_applies_the_template_with_the_deployment_instruction(qwen3_server, tokenizer):
    body = _rerank(qwen3_server)
    assert body["usage"]["prompt_tokens"] == _tokens(tokenizer, QWEN3_INSTRUCTION, DOCS)


@pytest.mark.vllm
def test_request_instruction_overrides_the_deployment_default(qwen3_server, tokenizer):
    other = "Judge whether the passage talks about animals or pets at all"
    with_default = _rerank(qwen3_server)
    with_other = _rerank(qwen3_server, instruction=other)
    assert with_other["usage"]["prompt_tokens"] == _tokens(tokenizer, other, DOCS)
    assert with_other["usage"]["prompt_tokens"] != with_default["usage"]["prompt_tokens"]
    by_index = lambda body: {r["index"]: r["relevance_score"] for r in body["results"]}  # noqa: E731
    assert by_index(with_other) != by_index(with_default)  # the instruction reaches the model


@pytest.mark.vllm
def test_qwen3_server_requires_its_key(qwen3_server):
    body = {"model": qwen3_server.served_name, "query": QUERY, "documents": DOCS}
    assert requests.post(qwen3_server.url + "/v1/rerank", json=body, timeout=30).status_code == 401
    assert requests.post(qwen3_server.url + "/rerank", json=body, timeout=30).status_code == 401
