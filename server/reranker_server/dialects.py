"""Every rerank client dialect, parsed into one internal call and formatted back from one result.

Pure functions only: no I/O, no engine, no FastAPI. `http.py` reads the body (`jsonbody.py` decodes it
safely), calls `parse_*`, asks the `Scorer`, and returns `format_*`. Bad input raises `DialectError` with the
HTTP status and a message that names the problem; the same message reaches every client family (see
`error_body`).

Dialects:
- ``cohere``: Jina / Cohere v1 / Cohere v2 / vLLM rerank (`/rerank`, `/v1/rerank`, `/v2/rerank`, `/v1/v1/rerank`).
- ``tei``: Hugging Face Text Embeddings Inference (`texts` instead of `documents`, bare-list reply).
- ``score``: vLLM's `/score` (1:1, 1:N and N:N pairs).
- ``nvidia``: NVIDIA NIM reranking (`query.text`, `passages[].text`, raw logits back).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

COHERE = "cohere"
TEI = "tei"
SCORE = "score"
NVIDIA = "nvidia"

# The paths of each dialect, served alike by the server and the router. Cohere v2 is `/v2/rerank` (its own
# default for `return_documents`); TEI shares the rerank paths and is told apart by its body (`is_tei_body`).
RERANK_PATHS = ("/rerank", "/v1/rerank", "/v1/v1/rerank")
RERANK_V2_PATH = "/v2/rerank"
SCORE_PATHS = ("/score", "/v1/score")
NVIDIA_PATHS = ("/v1/reranking", "/v1/ranking")
MODELS_PATHS = ("/v1/models", "/models")
TEI_INFO_PATH = "/info"

# Empty or whitespace-only queries are refused with 400 (never 422) in every dialect: one status for all
# input mistakes keeps client error handling simple, and it is what vLLM answers for validation errors.
BAD_REQUEST = 400


class DialectError(Exception):
    """A request the server refuses; `status` is the HTTP status, `message` says what is wrong."""

    def __init__(self, status: int, message: str, error_type: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


@dataclass(frozen=True)
class RerankCall:
    """One query against many documents: what every rerank dialect boils down to."""

    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    instruction: str | None
    use_activation: bool
    model: str | None


@dataclass(frozen=True)
class ScoreCall:
    """vLLM `/score`: a list of (query, document) pairs, already expanded from 1:1, 1:N or N:N input."""

    pairs: list[tuple[str, str]]
    instruction: str | None
    use_activation: bool
    model: str | None


def is_tei_body(body: Any) -> bool:
    """True when a `/rerank` body is TEI-shaped (`texts`, no `documents`): TEI and Jina share the path."""
    return isinstance(body, dict) and "texts" in body and "documents" not in body


def parse_rerank(body: Any, *, default_return_documents: bool = True) -> RerankCall:
    """Parse a Jina / Cohere / vLLM rerank body.

    `documents` are strings or `{"text": ...}` objects; `top_n` missing or 0 means all; unknown fields
    (rank_fields, max_chunks_per_doc, return_len, ...) are ignored. `default_return_documents` differs by
    API version: Jina and Cohere v1 echo documents by default, Cohere v2 does not.
    """
    body = _require_object(body)
    if "texts" in body and "documents" in body:
        raise DialectError(BAD_REQUEST, "send either 'documents' (Jina/Cohere) or 'texts' (TEI), not both")
    return RerankCall(
        query=_query(body.get("query"), "query"),
        documents=_documents(body.get("documents"), "documents"),
        top_n=_top_n(body.get("top_n")),
        return_documents=_flag(body, "return_documents", default_return_documents),
        instruction=_instruction(body),
        use_activation=_use_activation(body),
        model=_model(body),
    )


def parse_tei(body: Any) -> RerankCall:
    """Parse a TEI `/rerank` body: `query`, `texts`, `raw_scores`, `return_text` (`truncate` is implied)."""
    body = _require_object(body)
    return RerankCall(
        query=_query(body.get("query"), "query"),
        documents=_documents(body.get("texts"), "texts"),
        top_n=None,
        return_documents=_flag(body, "return_text", False),
        instruction=_instruction(body),
        use_activation=not _flag(body, "raw_scores", False),
        model=_model(body),
    )


def parse_nvidia(body: Any) -> RerankCall:
    """Parse an NVIDIA reranking body: `query: {"text"}`, `passages: [{"text"}]`; replies carry raw logits."""
    body = _require_object(body)
    query = body.get("query")
    if isinstance(query, dict):
        query = query.get("text")
    return RerankCall(
        query=_query(query, "query.text"),
        documents=_documents(body.get("passages"), "passages"),
        top_n=_top_n(body.get("top_n")),
        return_documents=False,
        instruction=_instruction(body),
        use_activation=False,
        model=_model(body),
    )


# vLLM's /score field pairs, in the order vLLM checks them.
_SCORE_FIELDS = (("queries", "documents"), ("queries", "items"), ("data_1", "data_2"), ("text_1", "text_2"))


def parse_score(body: Any) -> ScoreCall:
    """Parse a vLLM `/score` body into explicit pairs (1:1, 1:N or N:N zip; anything else is a 400)."""
    body = _require_object(body)
    for left_key, right_key in _SCORE_FIELDS:
        if left_key in body and right_key in body:
            break
    else:
        raise DialectError(
            BAD_REQUEST,
            "a score request needs 'queries' with 'documents' (or 'items'), 'data_1' with 'data_2', "
            "or 'text_1' with 'text_2'",
        )
    left = _text_list(body[left_key], left_key, allow_empty_strings=False)
    right = _text_list(body[right_key], right_key, allow_empty_strings=True)
    if len(left) == 1:
        pairs = [(left[0], doc) for doc in right]
    elif len(left) == len(right):
        pairs = list(zip(left, right, strict=True))
    else:
        raise DialectError(
            BAD_REQUEST,
            f"input lengths must be 1:1, 1:N or N:N; got {len(left)} '{left_key}' and {len(right)} '{right_key}'",
        )
    return ScoreCall(
        pairs=pairs, instruction=_instruction(body), use_activation=_use_activation(body), model=_model(body)
    )


def group_pairs_by_query(pairs: list[tuple[str, str]]) -> dict[str, list[int]]:
    """Pair indices per distinct query, in first-seen order: each group becomes one scorer call."""
    groups: dict[str, list[int]] = {}
    for index, (query, _) in enumerate(pairs):
        groups.setdefault(query, []).append(index)
    return groups


def resolve_model(requested: str | None, served_name: str, accepted: frozenset[str]) -> str:
    """Return the served name when `requested` is absent or one of its accepted names; otherwise a 404."""
    if requested is None or requested == "" or requested == served_name or requested in accepted:
        return served_name
    others = sorted(accepted - {served_name})
    also = f" (also accepted: {', '.join(repr(name) for name in others)})" if others else ""
    raise DialectError(
        404,
        f"the model {requested!r} does not exist here; this server serves {served_name!r}{also}",
        "NotFoundError",
    )


def check_document_limit(count: int, limit: int) -> None:
    """Refuse requests with more documents (or pairs) than `limits.max_documents` with a 413."""
    if count > limit:
        raise DialectError(
            413, f"too many documents: {count} in one request, the limit is {limit}", "RequestTooLargeError"
        )


def ensure_finite(scores: list[float]) -> None:
    """Refuse to send NaN or infinite scores: JSON cannot carry them and clients would mis-rank silently."""
    bad = [i for i, score in enumerate(scores) if not math.isfinite(score)]
    if bad:
        raise DialectError(
            500, f"the engine returned non-finite scores for documents {bad[:10]}", "InternalServerError"
        )


def ranking(scores: list[float], top_n: int | None) -> list[int]:
    """Document indices by score, highest first (ties keep input order), cut to `top_n` when it is set."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order[:top_n] if top_n else order


def format_rerank(
    call: RerankCall,
    scores: list[float],
    prompt_tokens: int,
    *,
    model: str,
    api_version: str = "1",
) -> dict[str, Any]:
    """The Jina / Cohere reply: results sorted by score, `index` into the input, usage and Cohere `meta`."""
    results = []
    for index in ranking(scores, call.top_n):
        item: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
        if call.return_documents:
            item["document"] = {"text": call.documents[index]}
        results.append(item)
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "model": model,
        "results": results,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        # Cohere SDKs parse `meta` strictly (ApiMeta): api_version must be an object, units numbers.
        "meta": {
            "api_version": {"version": api_version},
            "billed_units": {"search_units": 1, "input_tokens": prompt_tokens},
        },
    }


def format_tei(call: RerankCall, scores: list[float]) -> list[dict[str, Any]]:
    """TEI's reply: a bare JSON list of `{"index", "score"(, "text")}` sorted by score."""
    reply = []
    for index in ranking(scores, None):
        item: dict[str, Any] = {"index": index, "score": scores[index]}
        if call.return_documents:
            item["text"] = call.documents[index]
        reply.append(item)
    return reply


def format_nvidia(call: RerankCall, scores: list[float], prompt_tokens: int) -> dict[str, Any]:
    """NVIDIA's reply: `rankings[].index/.logit`, sorted by logit."""
    return {
        "rankings": [{"index": index, "logit": scores[index]} for index in ranking(scores, call.top_n)],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def format_score(scores: list[float], prompt_tokens: int, *, model: str) -> dict[str, Any]:
    """vLLM's `/score` reply: one `data` entry per pair, in input order."""
    return {
        "id": f"score-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": [{"index": i, "object": "score", "score": score} for i, score in enumerate(scores)],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0},
    }


def format_models(served_name: str, root: str, max_model_len: int, created: int) -> dict[str, Any]:
    """vLLM's OpenAI-style `/v1/models` list (RAGFlow discovery reads `data[].id`)."""
    return {
        "object": "list",
        "data": [
            {
                "id": served_name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": root,
                "parent": None,
                "max_model_len": max_model_len,
                "permission": [],
            }
        ],
    }


def format_tei_info(
    served_name: str, max_model_len: int, max_documents: int, version: str, family: str
) -> dict[str, Any]:
    """TEI's `GET /info`: Dify's TEI plugin reads `model_type` to decide this is a reranker."""
    return {
        "model_id": served_name,
        "model_sha": None,
        "model_dtype": "auto",
        "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
        "max_concurrent_requests": 512,
        "max_input_length": max_model_len,
        "max_batch_tokens": max_model_len,
        "max_batch_requests": None,
        "max_client_batch_size": max_documents,
        "auto_truncate": True,
        "tokenization_workers": 1,
        "version": version,
        "sha": None,
        "docker_label": None,
        "family": family,
    }


def error_body(status: int, message: str, error_type: str) -> dict[str, Any]:
    """One error shape for all clients: OpenAI/vLLM read `error`, Jina/LangChain `detail`, others `message`."""
    return {
        "error": {"message": message, "type": error_type, "code": status},
        "detail": message,
        "message": message,
    }


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise DialectError(BAD_REQUEST, f"the request body must be a JSON object, not {_json_type(body)}")
    return body


def _query(value: Any, field: str) -> str:
    if value is None:
        raise DialectError(BAD_REQUEST, f"'{field}' is required: the text to rank the documents against")
    if not isinstance(value, str):
        raise DialectError(BAD_REQUEST, f"'{field}' must be a string, not {_json_type(value)}")
    if not value.strip():
        raise DialectError(BAD_REQUEST, f"'{field}' is empty; send the text to rank the documents against")
    return value


def _documents(value: Any, field: str) -> list[str]:
    if value is None:
        raise DialectError(
            BAD_REQUEST, f"'{field}' is required: a list of strings or {{\"text\": ...}} objects"
        )
    # vLLM accepts a single string as one document; so does _text_list.
    return _text_list(value, field, allow_empty_strings=True)


def _text_list(value: Any, field: str, *, allow_empty_strings: bool) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise DialectError(BAD_REQUEST, f"'{field}' must be a list of strings, not {_json_type(value)}")
    texts = []
    for position, item in enumerate(items):
        if isinstance(item, dict):
            if "text" not in item:
                raise DialectError(BAD_REQUEST, f"'{field}[{position}]' is an object without a 'text' field")
            item = item["text"]
        if not isinstance(item, str):
            raise DialectError(
                BAD_REQUEST,
                f"'{field}[{position}]' must be a string or {{\"text\": string}}, not {_json_type(item)}",
            )
        if not allow_empty_strings and not item.strip():
            raise DialectError(BAD_REQUEST, f"'{field}[{position}]' is empty")
        texts.append(item)
    if not texts:
        raise DialectError(BAD_REQUEST, f"'{field}' is empty; send at least one")
    return texts


def _top_n(value: Any) -> int | None:
    if value is None:
        return None
    # Only ASCII digits, and few of them: "²".isdigit() is true but int() refuses it, as it does 5000 digits.
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value) <= 18:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DialectError(BAD_REQUEST, f"'top_n' must be a non-negative integer, not {_json_type(value)}")
    if value < 0:
        raise DialectError(BAD_REQUEST, f"'top_n' must be a non-negative integer (0 means all), got {value}")
    return value or None


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    """A boolean field that some clients (Xinference) send as the strings "true"/"false"."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise DialectError(BAD_REQUEST, f"'{key}' must be true or false, not {json.dumps(value)}")


def _use_activation(body: dict[str, Any]) -> bool:
    # `raw_scores: true` (TEI spelling) and `use_activation: false` (vLLM spelling) both ask for logits.
    return _flag(body, "use_activation", True) and not _flag(body, "raw_scores", False)


def _instruction(body: dict[str, Any]) -> str | None:
    # vLLM semantics: an explicit chat_template_kwargs key wins over the top-level field.
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise DialectError(BAD_REQUEST, f"'chat_template_kwargs' must be an object, not {_json_type(kwargs)}")
    kwargs = kwargs or {}
    for field, value in (
        ("chat_template_kwargs.instruction", kwargs.get("instruction")),
        ("chat_template_kwargs.instruct", kwargs.get("instruct")),
        ("instruction", body.get("instruction")),
    ):
        if value is None:
            continue
        if not isinstance(value, str):
            raise DialectError(BAD_REQUEST, f"'{field}' must be a string, not {_json_type(value)}")
        return value
    return None


def _model(body: dict[str, Any]) -> str | None:
    value = body.get("model")
    if value is not None and not isinstance(value, str):
        raise DialectError(BAD_REQUEST, f"'model' must be a string, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
