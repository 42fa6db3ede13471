"""Pure tests of the dialect layer: parsing every client shape into one call, formatting results back."""

from __future__ import annotations

import json
import math

import pytest
from reranker_server.dialects import (
    DialectError,
    RerankCall,
    check_document_limit,
    ensure_finite,
    error_body,
    format_models,
    format_nvidia,
    format_rerank,
    format_score,
    format_tei,
    group_pairs_by_query,
    is_tei_body,
    parse_nvidia,
    parse_rerank,
    parse_score,
    parse_tei,
    ranking,
    resolve_model,
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # cohere 5.6.2 as RAGFlow's VLLM provider sends it
        (
            {"model": "m", "query": "q", "documents": ["a", "b"], "top_n": 2, "return_documents": False},
            dict(documents=["a", "b"], top_n=2, return_documents=False, model="m"),
        ),
        # Xinference: string flags, no top_n
        (
            {
                "model": "m",
                "query": "q",
                "documents": ["a"],
                "return_documents": "true",
                "return_len": "true",
            },
            dict(top_n=None, return_documents=True),
        ),
        ({"query": "q", "documents": ["a"], "return_documents": "FALSE"}, dict(return_documents=False)),
        # Cohere v1 / Jina object documents, unknown fields ignored
        (
            {
                "query": "q",
                "documents": [{"text": "a", "title": "t"}, "b"],
                "rank_fields": ["text"],
                "max_chunks_per_doc": 3,
            },
            dict(documents=["a", "b"], model=None),
        ),
        ({"query": "q", "documents": "single"}, dict(documents=["single"])),
        ({"query": "q", "documents": ["", "x"]}, dict(documents=["", "x"])),
        ({"query": "q", "documents": ["a"], "top_n": 0}, dict(top_n=None)),
        ({"query": "q", "documents": ["a"], "top_n": "3"}, dict(top_n=3)),
        ({"query": "q", "documents": ["a"], "instruction": "find law"}, dict(instruction="find law")),
        (
            {
                "query": "q",
                "documents": ["a"],
                "instruction": "x",
                "chat_template_kwargs": {"instruction": "y"},
            },
            dict(instruction="y"),
        ),
        (
            {"query": "q", "documents": ["a"], "chat_template_kwargs": {"instruct": "z"}},
            dict(instruction="z"),
        ),
        ({"query": "q", "documents": ["a"], "use_activation": False}, dict(use_activation=False)),
        ({"query": "q", "documents": ["a"], "raw_scores": True}, dict(use_activation=False)),
        (
            {"query": "q", "documents": ["a"]},
            dict(use_activation=True, return_documents=True, instruction=None),
        ),
    ],
)
def test_parse_rerank(body, expected):
    call = parse_rerank(body)
    assert call.query == "q"
    for field, value in expected.items():
        assert getattr(call, field) == value, field


def test_parse_rerank_v2_default_does_not_echo_documents():
    assert (
        parse_rerank({"query": "q", "documents": ["a"]}, default_return_documents=False).return_documents
        is False
    )


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ([1, 2], 400, "JSON object, not a list"),
        ({"documents": ["a"]}, 400, "'query' is required"),
        ({"query": "", "documents": ["a"]}, 400, "'query' is empty"),
        ({"query": "   ", "documents": ["a"]}, 400, "'query' is empty"),
        ({"query": 5, "documents": ["a"]}, 400, "'query' must be a string, not a number"),
        ({"query": "q"}, 400, "'documents' is required"),
        ({"query": "q", "documents": []}, 400, "'documents' is empty"),
        ({"query": "q", "documents": {"a": 1}}, 400, "'documents' must be a list"),
        ({"query": "q", "documents": ["a", 3]}, 400, "'documents[1]' must be a string"),
        (
            {"query": "q", "documents": ["a", {"title": "t"}]},
            400,
            "'documents[1]' is an object without a 'text'",
        ),
        ({"query": "q", "documents": ["a"], "top_n": -1}, 400, "'top_n' must be a non-negative integer"),
        ({"query": "q", "documents": ["a"], "top_n": 2.5}, 400, "'top_n'"),
        ({"query": "q", "documents": ["a"], "top_n": True}, 400, "'top_n'"),
        (
            {"query": "q", "documents": ["a"], "return_documents": "maybe"},
            400,
            "'return_documents' must be true or false",
        ),
        ({"query": "q", "documents": ["a"], "model": 7}, 400, "'model' must be a string"),
        ({"query": "q", "documents": ["a"], "instruction": 1}, 400, "'instruction' must be a string"),
        (
            {"query": "q", "documents": ["a"], "chat_template_kwargs": "x"},
            400,
            "'chat_template_kwargs' must be an object",
        ),
        ({"query": "q", "documents": ["a"], "texts": ["b"]}, 400, "not both"),
    ],
)
def test_parse_rerank_refusals(body, status, fragment):
    with pytest.raises(DialectError) as info:
        parse_rerank(body)
    assert info.value.status == status
    assert fragment in info.value.message


def test_tei_body_detection_and_parse():
    body = {"query": "q", "texts": ["a", "b"], "raw_scores": False, "truncate": True, "return_text": True}
    assert is_tei_body(body)
    assert not is_tei_body({"query": "q", "documents": ["a"]})
    assert not is_tei_body(["texts"])
    call = parse_tei(body)
    assert (call.documents, call.return_documents, call.use_activation, call.top_n) == (
        ["a", "b"],
        True,
        True,
        None,
    )
    assert parse_tei({"query": "q", "texts": ["a"], "raw_scores": True}).use_activation is False
    with pytest.raises(DialectError, match="'texts' is empty"):
        parse_tei({"query": "q", "texts": []})


def test_parse_nvidia():
    call = parse_nvidia(
        {"model": "m", "query": {"text": "q"}, "passages": [{"text": "a"}, {"text": "b"}], "truncate": "END"}
    )
    assert (call.query, call.documents, call.use_activation) == ("q", ["a", "b"], False)
    with pytest.raises(DialectError, match="'passages' is required"):
        parse_nvidia({"query": {"text": "q"}})
    with pytest.raises(DialectError, match="'query.text' is required"):
        parse_nvidia({"query": {}, "passages": [{"text": "a"}]})


@pytest.mark.parametrize(
    ("body", "pairs"),
    [
        ({"queries": "q", "documents": ["a", "b"]}, [("q", "a"), ("q", "b")]),
        ({"queries": ["q"], "items": ["a"]}, [("q", "a")]),
        ({"text_1": ["q1", "q2"], "text_2": ["a", "b"]}, [("q1", "a"), ("q2", "b")]),
        ({"data_1": "q", "data_2": "a"}, [("q", "a")]),
        ({"text_1": "q", "text_2": [{"text": "a"}, ""]}, [("q", "a"), ("q", "")]),
    ],
)
def test_parse_score_pairings(body, pairs):
    assert parse_score(body).pairs == pairs


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            {"text_1": ["q1", "q2"], "text_2": ["a", "b", "c"]},
            "1:1, 1:N or N:N; got 2 'text_1' and 3 'text_2'",
        ),
        ({"query": "q", "documents": ["a"]}, "needs 'queries' with 'documents'"),
        ({"text_1": "", "text_2": "a"}, "'text_1[0]' is empty"),
        ({"text_1": "q", "text_2": []}, "'text_2' is empty"),
    ],
)
def test_parse_score_refusals(body, fragment):
    with pytest.raises(DialectError) as info:
        parse_score(body)
    assert info.value.status == 400
    assert fragment in info.value.message


def test_group_pairs_by_query_keeps_first_seen_order():
    assert group_pairs_by_query([("b", "1"), ("a", "2"), ("b", "3")]) == {"b": [0, 2], "a": [1]}


def test_resolve_model():
    accepted = frozenset({"tiny", "org/tiny", "/models/tiny"})
    assert resolve_model(None, "tiny", accepted) == "tiny"
    assert resolve_model("org/tiny", "tiny", accepted) == "tiny"
    with pytest.raises(DialectError) as info:
        resolve_model("gpt-4", "tiny", accepted)
    assert info.value.status == 404
    assert (
        "'gpt-4'" in info.value.message
        and "'tiny'" in info.value.message
        and "'org/tiny'" in info.value.message
    )


def test_limits_and_finiteness():
    check_document_limit(10, 10)
    with pytest.raises(DialectError) as info:
        check_document_limit(11, 10)
    assert info.value.status == 413 and "11" in info.value.message and "limit is 10" in info.value.message
    ensure_finite([0.0, 1.0, -3.0])
    with pytest.raises(DialectError, match=r"documents \[1\]"):
        ensure_finite([0.0, math.nan])


def test_ranking_sorts_by_score_keeps_ties_in_input_order_and_cuts():
    assert ranking([0.1, 0.9, 0.5, 0.9], None) == [1, 3, 2, 0]
    assert ranking([0.1, 0.9, 0.5], 2) == [1, 2]
    assert ranking([0.1, 0.9], 5) == [1, 0]


def _call(**overrides) -> RerankCall:
    fields = dict(
        query="q",
        documents=["a", "b", "c"],
        top_n=None,
        return_documents=True,
        instruction=None,
        use_activation=True,
        model=None,
    )
    fields.update(overrides)
    return RerankCall(**fields)


def test_format_rerank_shape():
    reply = format_rerank(_call(top_n=2), [0.2, 0.7, 0.5], 42, model="tiny", api_version="2")
    assert [r["index"] for r in reply["results"]] == [1, 2]
    assert reply["results"][0] == {"index": 1, "relevance_score": 0.7, "document": {"text": "b"}}
    assert reply["usage"] == {"prompt_tokens": 42, "total_tokens": 42}
    assert reply["model"] == "tiny" and reply["id"].startswith("rerank-")
    assert reply["meta"]["api_version"] == {"version": "2"}
    assert (
        "document" not in format_rerank(_call(return_documents=False), [1, 2, 3], 1, model="m")["results"][0]
    )
    json.dumps(reply, allow_nan=False)


def test_format_tei_nvidia_score_models():
    assert format_tei(_call(), [0.1, 0.3, 0.2]) == [
        {"index": 1, "score": 0.3, "text": "b"},
        {"index": 2, "score": 0.2, "text": "c"},
        {"index": 0, "score": 0.1, "text": "a"},
    ]
    assert format_tei(_call(return_documents=False), [0.1, 0.3, 0.2])[0] == {"index": 1, "score": 0.3}
    assert format_nvidia(_call(), [-1.0, 2.0, 0.0], 9)["rankings"] == [
        {"index": 1, "logit": 2.0},
        {"index": 2, "logit": 0.0},
        {"index": 0, "logit": -1.0},
    ]
    score = format_score([0.5, 0.25], 7, model="tiny")
    assert score["object"] == "list" and score["model"] == "tiny"
    assert score["data"] == [
        {"index": 0, "object": "score", "score": 0.5},
        {"index": 1, "object": "score", "score": 0.25},
    ]
    models = format_models("tiny-reranker", "/models/tiny", 512, 1700000000)
    assert models["object"] == "list"
    assert models["data"][0] == {
        "id": "tiny-reranker",
        "object": "model",
        "created": 1700000000,
        "owned_by": "vllm",
        "root": "/models/tiny",
        "parent": None,
        "max_model_len": 512,
        "permission": [],
    }


def test_error_body_carries_every_key_clients_read():
    body = error_body(413, "too big", "RequestTooLargeError")
    assert body == {
        "error": {"message": "too big", "type": "RequestTooLargeError", "code": 413},
        "detail": "too big",
        "message": "too big",
    }
