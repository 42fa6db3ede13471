"""Reading a client's JSON body safely: content type, size, nesting depth and Unicode, each a clear 4xx.

Python's JSON parser recurses once per nesting level, so a body nested thousands of levels deep would end in a
`RecursionError` (a 500); a string holding a lone UTF-16 surrogate (`"\\ud800"` is valid JSON) parses into a
`str` that no tokenizer can encode (a 500 again). Both are the client's mistake, so both are refused here, before
anything reaches a dialect or the engine. Invalid Unicode is refused rather than replaced: a replaced character
would be scored as text the client never sent, and the client would never learn why its ranking is off.

Pure but for `read_json`, which reads a Starlette request; no vLLM and no web framework at import, so the router
(which has no Starlette) shares `decode_json`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from .dialects import BAD_REQUEST, DialectError

if TYPE_CHECKING:
    from starlette.requests import Request

# No rerank dialect needs more than a few levels (body -> documents -> {"text"}); 64 leaves room for clients that
# attach nested metadata to documents and is far below where the parser would recurse too deep.
MAX_JSON_DEPTH = 64

# A \\u escape of a UTF-16 surrogate: the only way a surrogate can reach a parsed string (UTF-8 cannot carry one).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's body decoded by `decode_json`, after the content type (415) and size (413) checks."""
    from starlette.requests import (
        ClientDisconnect,  # the server's web stack; the router needs only decode_json
    )

    content_type = request.headers.get("content-type")
    if content_type:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise DialectError(
                415,
                f"unsupported content type {media_type!r}: send JSON with 'Content-Type: application/json'",
                "UnsupportedMediaTypeError",
            )
    declared = request.headers.get("content-length", "")
    # More than 15 digits is over any limit, and int() refuses thousands of digits: compare the text's length first.
    if declared.isdecimal() and (len(declared) > 15 or int(declared) > max_bytes):
        raise DialectError(413, _too_large(declared, max_bytes), "RequestTooLargeError")
    # Chunked bodies carry no length: count while reading and stop at the limit.
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise DialectError(413, _too_large(size, max_bytes), "RequestTooLargeError")
            chunks.append(chunk)
    except ClientDisconnect:
        raise DialectError(BAD_REQUEST, "the client disconnected before the body was complete") from None
    return decode_json(b"".join(chunks))


def decode_json(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a request body, or raise a 400 that says why it cannot be used.

    Refused: an empty body, bytes that are not UTF-8, malformed JSON, numbers Python will not convert (integers
    of thousands of digits), arrays/objects nested deeper than `max_depth`, and strings holding a lone UTF-16
    surrogate (the message names the field).

    Depth: CPython's JSON parser guards its own recursion and raises `RecursionError` (cleanly, in microseconds)
    a few hundred levels down, which is refused here; anything it did parse is then held to `max_depth`. A scan
    of the raw bytes before parsing would cost more than the parse itself (strings must be skipped).
    """
    if not body.strip():
        raise DialectError(BAD_REQUEST, "request body is empty; send a JSON object")
    try:
        # JSON between systems is UTF-8 (RFC 8259); a leading byte-order mark is tolerated.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DialectError(
            BAD_REQUEST,
            f"request body is not valid UTF-8: byte 0x{body[exc.start]:02x} at offset {exc.start} ({exc.reason})",
        ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DialectError(
            BAD_REQUEST, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise DialectError(BAD_REQUEST, _too_deep(max_depth)) from None
    except ValueError as exc:
        # e.g. "Exceeds the limit (4300 digits) for integer string conversion".
        raise DialectError(BAD_REQUEST, f"unusable JSON: {exc}") from None
    if nesting_exceeds(value, max_depth):
        raise DialectError(BAD_REQUEST, _too_deep(max_depth))
    if _SURROGATE_ESCAPE.search(body):
        # Escaped pairs (emoji written as \ud83d\ude00) are fine: only look closer when an escape is there.
        where = find_invalid_unicode(value)
        if where is not None:
            field, position = where
            raise DialectError(
                BAD_REQUEST,
                f"{field} holds invalid Unicode at character {position}: a lone UTF-16 surrogate "
                "(an unpaired \\ud800-\\udfff escape); send valid Unicode text",
            )
    return value


def nesting_exceeds(value: Any, max_depth: int) -> bool:
    """True when a decoded value nests arrays/objects deeper than `max_depth` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, list | dict))
    return False


def find_invalid_unicode(value: Any, path: str = "") -> tuple[str, int] | None:
    """The first string (or key) in a decoded body holding a lone surrogate, as (field, character index)."""
    if isinstance(value, str):
        index = _surrogate_index(value)
        return None if index is None else (f"'{path}'" if path else "the body", index)
    if isinstance(value, list):
        for position, item in enumerate(value):
            found = find_invalid_unicode(item, f"{path}[{position}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            index = _surrogate_index(key)
            if index is not None:
                return (f"a field name in '{path}'" if path else "a field name", index)
            found = find_invalid_unicode(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    return None


def _surrogate_index(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _too_deep(max_depth: int) -> str:
    return f"JSON nested too deeply: more than {max_depth} levels of arrays or objects (a rerank request needs three)"


def _too_large(size: int | str, limit: int) -> str:
    return f"request body too large: {size} bytes, the limit is {limit} bytes"
