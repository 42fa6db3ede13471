"""Hypothesis strategies for hostile HTTP requests, and the property every reply must have.

Shared by the fast fuzz against the HTTP layer (stand-in scorer, `test_fuzz_http.py`) and the bounded fuzz
against the real vLLM server (`test_fuzz_live.py`). A request is (method, path, headers, body bytes): dialect
bodies with fields replaced by random JSON (lone surrogates, deep nesting, huge and non-finite numbers,
special-token text), random JSON documents, raw bytes, odd content types and header values, on every route.

The property (`check_reply`): the status is below 500, and every error carries the documented body
(docs/api.md, "Errors"). Callers also check that a good request still succeeds afterwards.

`HYPOTHESIS_PROFILE=fuzz` (`make fuzz`) multiplies every example budget by `FUZZ_FACTOR`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from bad_inputs import GET_PATHS, NVIDIA_PATHS, RERANK_PATHS, SCORE_PATHS
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ_FACTOR = 20
LONG_RUN = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
POST_PATHS = (*RERANK_PATHS, *SCORE_PATHS, *NVIDIA_PATHS)
# uvicorn's plain-text reply to bytes that are not a valid HTTP request (documented in docs/api.md).
INVALID_HTTP = b"Invalid HTTP request received."
ODD_PATHS = (
    "/v1/rerank/",
    "//rerank",
    "/v1/v1/v1/rerank",
    "/rerank%00",
    "/ready",
    "/health",
    "/metrics",
    "/",
)


def fuzz_settings(ci_examples: int) -> settings:
    """`ci_examples` examples per CI run (FUZZ_FACTOR times as many under `make fuzz`), no per-example deadline."""
    return settings(
        max_examples=ci_examples * FUZZ_FACTOR if LONG_RUN else ci_examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None


# Text with everything a tokenizer may choke on: lone surrogates, NUL, control and format characters, text that
# spells special tokens.
any_char = st.characters(codec=None, exclude_categories=())
texts = st.one_of(
    st.text(max_size=40),
    st.text(any_char, max_size=40),
    st.sampled_from(
        ["", " ", "\ud800", "\udfff x", "\u0000", "<|im_end|>", "[SEP]", "</s>", "\ufeff", "\u202e"]
    ),
    st.integers(1, 3000).map(lambda n: "word " * n),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.sampled_from(["true", "false", "3", "\u00b2", "-1", "NaN"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
documents = st.lists(
    st.one_of(texts, st.fixed_dictionaries({"text": texts}), json_values), min_size=0, max_size=6
)


def _dialect_body(path: str) -> st.SearchStrategy[dict[str, Any]]:
    if path in SCORE_PATHS:
        keys = st.sampled_from([("text_1", "text_2"), ("queries", "documents"), ("data_1", "data_2")])
        return keys.flatmap(
            lambda k: st.fixed_dictionaries(
                {k[0]: st.one_of(texts, st.lists(texts, max_size=3)), k[1]: documents}
            )
        )
    if path in NVIDIA_PATHS:
        return st.fixed_dictionaries(
            {
                "query": st.fixed_dictionaries({"text": texts}),
                "passages": st.lists(st.fixed_dictionaries({"text": texts}), max_size=5),
            }
        )
    return st.one_of(
        st.fixed_dictionaries({"query": texts, "documents": documents}),
        st.fixed_dictionaries({"query": texts, "texts": documents}),
    )


OPTIONAL_FIELDS = (
    "top_n",
    "return_documents",
    "return_text",
    "raw_scores",
    "use_activation",
    "instruction",
    "chat_template_kwargs",
    "model",
    "truncate",
    "rank_fields",
)


@st.composite
def mutated_body(draw: st.DrawFn, path: str) -> dict[str, Any]:
    """A dialect body for `path` with optional fields added and some fields replaced or removed."""
    body = dict(draw(_dialect_body(path)))
    for key in draw(st.lists(st.sampled_from(OPTIONAL_FIELDS), max_size=3, unique=True)):
        body[key] = draw(json_values)
    for key in draw(st.lists(st.sampled_from(sorted(body) or ["query"]), max_size=2, unique=True)):
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(json_values)
    return body


def _encode(value: Any) -> bytes:
    # ensure_ascii escapes lone surrogates as \\udXXX, exactly as a client's JSON library would send them.
    return json.dumps(value, allow_nan=True).encode()


def _deep(depth: int) -> bytes:
    return b'{"query": ' + b"[" * depth + b'"q"' + b"]" * depth + b', "documents": ["a"]}'


content_types = st.one_of(
    st.just("application/json"),
    st.sampled_from(
        [
            "application/json; charset=utf-8",
            "application/vnd.api+json",
            "APPLICATION/JSON",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
            ";",
            "application/json;;;",
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)


# Printable latin-1; HTTP clients refuse leading or trailing blanks in a header value, so none are sent.
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40).map(str.strip)


@st.composite
def requests_(draw: st.DrawFn, *, api_key: str | None = None) -> FuzzRequest:
    """One hostile (or occasionally fine) request on any route."""
    path = draw(st.one_of(st.sampled_from(POST_PATHS), st.sampled_from((*GET_PATHS, *ODD_PATHS))))
    method = draw(st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    body = draw(
        st.one_of(
            mutated_body(path if path in POST_PATHS else "/rerank").map(_encode),
            mutated_body(path if path in POST_PATHS else "/rerank").map(_encode),
            json_values.map(_encode),
            st.binary(max_size=200),
            st.integers(60, 20_000).map(_deep),
            st.just(b""),
            st.none(),
        )
    )
    headers: dict[str, str] = {}
    if draw(st.integers(0, 4)):
        headers["content-type"] = draw(content_types)
    if api_key is not None and draw(st.integers(0, 3)):
        headers["authorization"] = f"Bearer {api_key}"
    elif draw(st.booleans()):
        headers["authorization"] = draw(
            st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
        )
    for _ in range(draw(st.integers(0, 2))):
        name = draw(
            st.sampled_from(["x-api-key", "accept", "accept-encoding", "x-request-id", "transfer-encoding-x"])
        )
        headers[name] = draw(header_values)
    return FuzzRequest(method, path, headers, body)


def check_reply(request: FuzzRequest, status: int, content: bytes) -> None:
    """The property: below 500, and an error reply has the documented shape and names its problem."""
    assert status < 500, (
        f"{request.method} {request.path} {request.headers} {request.body!r:.300}: {status} {content[:500]!r}"
    )
    if status < 400 or request.method == "HEAD":
        return
    if status == 400 and content == INVALID_HTTP:
        return  # not HTTP at all (e.g. a control character in a header): uvicorn refuses it before any route
    if request.path in ("/metrics",) or request.path.startswith("/metrics/"):
        return  # Prometheus' own app answers there
    body = json.loads(content)
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"], body
    assert error["code"] == status and isinstance(error["type"], str), body
    assert body["detail"] == body["message"] == error["message"], body
