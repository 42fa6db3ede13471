"""Decoding a client's body: every way bytes can be unusable is a 400 naming the problem, never an exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reranker_server.dialects import DialectError
from reranker_server.jsonbody import (
    MAX_JSON_DEPTH,
    decode_json,
    find_invalid_unicode,
    nesting_exceeds,
    read_json,
)
from starlette.requests import Request


def refusal(raw: bytes) -> str:
    with pytest.raises(DialectError) as info:
        decode_json(raw)
    assert info.value.status == 400
    return info.value.message


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"{bad", "malformed JSON"),
        (b'{"query": "q", "documents": ["a"}', "malformed JSON"),
        (b"\xff\xfe\x00{", "not valid UTF-8"),
        (b'{"query": "\xed\xa0\x80"}', "not valid UTF-8"),  # a surrogate encoded as UTF-8 bytes
        (nested(10_000).encode(), f"more than {MAX_JSON_DEPTH} levels"),
        (nested(300).encode(), f"more than {MAX_JSON_DEPTH} levels"),  # parses, then held to the limit
        (('{"query": ' + nested(10_000, '"q"') + ', "documents": ["a"]}').encode(), "nested too deeply"),
        (('{"a":' * 5_000 + "1" + "}" * 5_000).encode(), "nested too deeply"),
        (('{"top_n": ' + "9" * 5_000 + "}").encode(), "unusable JSON"),
        (b'{"query": "\\ud800", "documents": ["a"]}', "'query' holds invalid Unicode at character 0"),
        (
            b'{"query": "q", "documents": ["a", "ok\\udfff"]}',
            "'documents[1]' holds invalid Unicode at character 2",
        ),
        (b'{"query": {"text": "x\\ud83d"}}', "'query.text' holds invalid Unicode at character 1"),
        (b'{"query": "q", "\\udc00": 1}', "a field name holds invalid Unicode"),
        (b'"\\ud800"', "the body holds invalid Unicode"),
    ],
)
def test_unusable_bodies_are_400_with_a_reason(raw, fragment):
    assert fragment in refusal(raw)


def test_usable_bodies_decode():
    assert decode_json(nested(MAX_JSON_DEPTH).encode()) == json.loads(nested(MAX_JSON_DEPTH))
    assert "nested too deeply" in refusal(nested(MAX_JSON_DEPTH + 1).encode())
    # Brackets inside strings are text, not nesting; an escaped quote does not end the string.
    text = "[" * 500 + '\\"' + "{" * 500
    assert decode_json(f'{{"query": "{text}", "documents": ["]]]"]}}'.encode())["documents"] == ["]]]"]
    # A surrogate PAIR written as escapes is one valid character (an emoji).
    assert decode_json(b'{"query": "\\ud83d\\ude00"}') == {"query": "\U0001f600"}
    assert decode_json(b"[]") == [] and decode_json(b'"plain"') == "plain"


def reference_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    return 0


# Strings made of the characters that matter: brackets and quotes (nesting check), lone surrogates (Unicode).
texts = st.text(alphabet=st.sampled_from(["a", "[", "]", "{", "}", '"', "\\", ",", "\ud800", "\udfff", "é"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=40,
)


@given(value=json_values, limit=st.integers(min_value=0, max_value=8))
def test_nesting_check_agrees_with_the_parsed_depth(value, limit):
    assert nesting_exceeds(value, limit) == (reference_depth(value) > limit)


@given(value=json_values)
def test_invalid_unicode_is_found_exactly_when_a_string_cannot_be_encoded(value):
    # What the server sees: escaped, a high surrogate followed by a low one becomes one valid character.
    value = json.loads(json.dumps(value))
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        encodable = True
    except UnicodeEncodeError:
        encodable = False
    assert (find_invalid_unicode(value) is None) == encodable
    if not encodable:
        assert "holds invalid Unicode" in refusal(json.dumps(value).encode())


@pytest.mark.parametrize(
    ("headers", "chunks", "status", "fragment"),
    [
        ({"content-length": "9" * 5000}, [b"{}"], 413, "the limit is 1024 bytes"),
        ({"content-length": "2048"}, [b"{}"], 413, "2048 bytes"),
        ({}, [b"[" + b" " * 600, b" " * 600 + b"]"], 413, "1202 bytes"),  # chunked: counted while reading
        ({"content-type": "text/csv"}, [b"{}"], 415, "'text/csv'"),
    ],
)
async def test_read_json_limits(headers, chunks, status, fragment):
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]

    async def receive():
        return messages.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/rerank",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    with pytest.raises(DialectError) as info:
        await read_json(Request(scope, receive), 1024)
    assert info.value.status == status and fragment in info.value.message


async def test_a_client_that_disconnects_mid_body_gets_a_400_not_a_500():
    messages = [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    with pytest.raises(DialectError) as info:
        await read_json(
            Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive), 1024
        )
    assert info.value.status == 400 and "disconnected" in info.value.message
