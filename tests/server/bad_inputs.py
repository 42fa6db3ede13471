"""The bad-input table: every kind of client mistake on every route and dialect, with the 4xx it must get.

One table for two layers: `test_http_layer.py` sends it to the HTTP layer with a stand-in scorer, and
`test_fuzz_live.py` to the real vLLM server on tiny models (with and without an API key). Each case is a raw
request (method, path, headers, body bytes), so malformed bytes, content types and sizes are expressible.
`ODD_BUT_VALID` holds inputs that look hostile but are legitimate text: they must be scored (200).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON = {"content-type": "application/json"}
RERANK_PATHS = ("/rerank", "/v1/rerank", "/v2/rerank", "/v1/v1/rerank")
SCORE_PATHS = ("/score", "/v1/score")
NVIDIA_PATHS = ("/v1/reranking", "/v1/ranking")
GET_PATHS = ("/v1/models", "/models", "/info")
DEEP = 10_000


@dataclass(frozen=True)
class Case:
    """One request and the status it must get."""

    id: str
    method: str
    path: str
    body: bytes | None
    status: int
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))

    def __str__(self) -> str:
        return self.id


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _deep(inner: str = "1") -> str:
    return "[" * DEEP + inner + "]" * DEEP


def good_body(path: str, query: str = "q", documents: list[Any] | None = None) -> dict[str, Any]:
    """A valid body for `path`'s dialect."""
    documents = ["a", "b"] if documents is None else documents
    if path in SCORE_PATHS:
        return {"text_1": query, "text_2": documents}
    if path in NVIDIA_PATHS:
        return {"query": {"text": query}, "passages": [{"text": d} for d in documents]}
    return {"query": query, "documents": documents}


def bad_inputs(*, max_documents: int, max_request_bytes: int, served_name: str) -> list[Case]:
    """Every bad input (4xx expected) for a server with these limits: 105 cases (10 kinds on each of the 8 POST routes, then 25 more)."""
    cases: list[Case] = []

    def add(id_: str, path: str, body: bytes | None, status: int = 400, **kwargs: Any) -> None:
        cases.append(Case(f"{id_}@{path}", kwargs.pop("method", "POST"), path, body, status, **kwargs))

    # Raw-byte mistakes: on every POST route (8 x 10 = 80).
    for path in (*RERANK_PATHS, *SCORE_PATHS, *NVIDIA_PATHS):
        add("malformed-json", path, b'{"query": "q", "documents": [')
        add("empty-body", path, b"")
        add("not-an-object", path, b'["q", "a"]')
        add("deep-body", path, _deep().encode())
        deep_query = {**good_body(path), "query": "__DEEP__"}
        add("deep-in-query", path, _json(deep_query).replace(b'"__DEEP__"', _deep('"q"').encode()))
        add("lone-surrogate-query", path, _json(good_body(path, query="\ud800 q")))
        add("lone-surrogate-document", path, _json(good_body(path, documents=["ok", "x\udfff"])))
        add("not-utf8", path, b'{"query": "caf\xe9", "documents": ["a"]}')
        add("text-plain", path, _json(good_body(path)), 415, headers={"content-type": "text/plain"})
        too_many = good_body(path, documents=["d"] * (max_documents + 1))
        add("too-many-documents", path, _json(too_many), 413)
    # Field mistakes per dialect.
    for id_, body in (
        ("query-missing", {"documents": ["a"]}),
        ("query-blank", {"query": "  ", "documents": ["a"]}),
        ("query-list", {"query": ["q"], "documents": ["a"]}),
        ("documents-empty", {"query": "q", "documents": []}),
        ("document-null", {"query": "q", "documents": [None]}),
        ("document-object-without-text", {"query": "q", "documents": [{"title": "t"}]}),
        ("surrogate-in-document-object", {"query": "q", "documents": [{"text": "\udc00"}]}),
        ("surrogate-in-field-name", {"query": "q", "documents": ["a"], "\ud800": 1}),
        ("top-n-negative", {"query": "q", "documents": ["a"], "top_n": -1}),
        ("top-n-superscript", {"query": "q", "documents": ["a"], "top_n": "\u00b2"}),
        ("return-documents-maybe", {"query": "q", "documents": ["a"], "return_documents": "maybe"}),
        ("instruction-number", {"query": "q", "documents": ["a"], "instruction": 7}),
        ("texts-and-documents", {"query": "q", "documents": ["a"], "texts": ["b"]}),
        ("tei-texts-empty", {"query": "q", "texts": []}),
    ):
        add(id_, "/v1/rerank", _json(body))
    add("huge-integer", "/rerank", b'{"query": "q", "documents": ["a"], "top_n": ' + b"9" * 5000 + b"}")
    add("nan-top-n", "/rerank", b'{"query": "q", "documents": ["a"], "top_n": NaN}')
    add("unknown-model", "/v2/rerank", _json({**good_body("/v2/rerank"), "model": f"{served_name}-x"}), 404)
    add("score-not-pairable", "/score", _json({"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}))
    add("score-no-fields", "/v1/score", _json({"query": "q", "documents": ["a"]}))
    add(
        "nvidia-query-text-number",
        "/v1/reranking",
        _json({"query": {"text": 5}, "passages": [{"text": "a"}]}),
    )
    # Size, methods, unknown paths.
    add("body-over-the-limit", "/rerank", _json({"query": "q", "documents": ["x" * max_request_bytes]}), 413)
    add("get-on-a-post-route", "/v1/rerank", None, 405, method="GET")
    add("post-on-a-get-route", "/v1/models", _json({}), 405)
    add("unknown-path", "/v1/rerankk", _json(good_body("/rerank")), 404)
    add(
        "form-body",
        "/v1/rerank",
        b"query=q&documents=a",
        415,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    return cases


def key_cases(key: str) -> list[Case]:
    """Credential mistakes on a server with an API key: 401 before anything is parsed (10 cases)."""
    body = _json(good_body("/v1/rerank"))
    return [
        Case("no-key", "POST", "/v1/rerank", body, 401),
        Case("bearer-without-key", "POST", "/v1/rerank", body, 401, {**JSON, "authorization": "Bearer"}),
        Case("wrong-key", "POST", "/v1/rerank", body, 401, {**JSON, "authorization": "Bearer nope"}),
        Case("key-without-scheme", "POST", "/v1/rerank", body, 401, {**JSON, "authorization": key}),
        Case("basic-scheme", "POST", "/v1/rerank", body, 401, {**JSON, "authorization": f"Basic {key}"}),
        Case("wrong-x-api-key", "POST", "/v1/rerank", body, 401, {**JSON, "x-api-key": "nope"}),
        Case("latin1-key", "POST", "/v1/rerank", body, 401, {**JSON, "authorization": "Bearer caf\u00e9"}),
        Case("huge-key", "POST", "/v1/rerank", body, 401, {**JSON, "authorization": "Bearer " + "k" * 8000}),
        Case("bad-body-without-key", "POST", "/v1/rerank", _deep().encode(), 401),
        Case("models-without-key", "GET", "/v1/models", None, 401),
    ]


# Hostile-looking but legitimate text: scored like any other (200).
ODD_BUT_VALID = [
    ("nul-characters", {"query": "q\u0000", "documents": ["a\u0000b", "\u0000"]}),
    ("surrogate-pair-emoji", {"query": "\U0001f600 weather", "documents": ["\U0001f327 rain", "sun"]}),
    (
        "control-and-format",
        {"query": "\u202eright-to-left\u200b", "documents": ["\x1b[31mred\x1b[0m", "\ufeff"]},
    ),
    ("combining-marks", {"query": "e" + "\u0301" * 500, "documents": ["z\u0336" * 300]}),
    ("special-token-text", {"query": "<|im_end|><|endoftext|>[SEP][CLS]", "documents": ["</s><s>", "<pad>"]}),
    ("private-use-and-noncharacters", {"query": "\ue000\uffff", "documents": ["\U0010ffff", "\ufdd0"]}),
    ("only-whitespace-documents", {"query": "q", "documents": [" ", "\n\t", ""]}),
    ("brackets-in-text", {"query": "[" * 5000, "documents": ["{" * 5000, "]}"]}),
    ("long-query", {"query": "word " * 20000, "documents": ["a"]}),
    ("json-escapes", {"query": '\\u0000 \\ud800 "quoted"', "documents": ["\\"]}),
]
