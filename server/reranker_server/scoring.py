"""The scoring interface the HTTP layer calls, and its in-process vLLM implementation.

`VllmScorer` calls vLLM's `ServingScores` (the object behind vLLM's own /rerank) in process, never over HTTP,
through `vllm_bridge.RerankBackend`; this module itself never imports vLLM.
Long input never fails a request: before calling vLLM we plan truncation so vLLM cuts the text instead of
answering 400, and we count what was cut. The planning functions are pure and take a token counter, which they
call only for texts whose UTF-8 length could exceed the budget (a token covers at least one byte, so a short
text cannot be over budget and is never tokenised twice).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .dialects import DialectError
from .profiles import Family

# Tokens kept free in template prompts: tokenising a text inside the template can merge a token or two
# differently than tokenising it alone.
TEMPLATE_MARGIN = 8
# Templates whose content budget falls below this cannot score meaningfully (max_model_len too small).
MIN_CONTENT_TOKENS = 16
# Template models must plan before calling vLLM: below this many bytes of text the plan runs inline, above it in a
# thread so tokenising never blocks the event loop. Encoders never wait for the plan (see `rerank`).
INLINE_PLAN_BYTES = 16 * 1024
_OVERHEAD_CACHE_SIZE = 64

TokenCounter = Callable[[Sequence[str]], list[int]]

log = logging.getLogger(__name__)
_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    # A slower fallback must show in the log, once, not on every request.
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


@dataclass
class ScoreResult:
    """Scores for one query against its documents."""

    scores: list[float]  # one per document, in INPUT order
    prompt_tokens: int
    truncated_documents: int  # how many documents were cut to fit
    truncated_query: bool


class Scorer(Protocol):
    """What the HTTP layer needs from an engine."""

    served_name: str
    model_names: frozenset[str]  # accepted `model` values: served name, model id, model path
    max_model_len: int
    family: str

    async def rerank(
        self, query: str, documents: list[str], *, instruction: str | None = None, use_activation: bool = True
    ) -> ScoreResult: ...


@dataclass(frozen=True)
class TruncationPlan:
    """The truncation options to send to vLLM for one request, and what they will cut."""

    truncate_prompt_tokens: int | None = None  # -1: cut to max_model_len
    max_tokens_per_query: int = 0  # 0: off
    max_tokens_per_doc: int = 0  # 0: off
    truncated_documents: int = 0
    truncated_query: bool = False


# What every encoder request sends: vLLM itself cuts each pair (or text) to max_model_len.
ENCODER_PLAN = TruncationPlan(truncate_prompt_tokens=-1)


def cosine_to_unit(cosine: float) -> float:
    """Map a cosine similarity from [-1, 1] onto [0, 1] (order-preserving; 0 stays at 0.5)."""
    return min(1.0, max(0.0, (1.0 + cosine) / 2.0))


def byte_bound(text: str) -> int:
    """An upper bound on a text's token count without tokenising: its UTF-8 length plus a possible prefix token.

    Every token of the tokenizers served here (WordPiece, byte-level BPE, SentencePiece) covers at least one byte.
    """
    return len(text.encode("utf-8")) + 1


def plan_pair(
    query: str, documents: Sequence[str], *, max_len: int, special: int, count: TokenCounter
) -> TruncationPlan:
    """Cross-encoders: the tokenizer cuts each (query, document) pair to max_len, longest part first.

    With the tokenizer's longest-first rule, the query is cut only when it is longer than both the room the
    document leaves and half the budget; likewise for the document.
    """
    budget = max_len - special
    q_bound = byte_bound(query)
    suspects = [i for i, d in enumerate(documents) if q_bound + byte_bound(d) > budget]
    if not suspects:
        return TruncationPlan(truncate_prompt_tokens=-1)
    q = count([query])[0]
    d_counts = dict(zip(suspects, count([documents[i] for i in suspects]), strict=True))
    truncated_docs = 0
    truncated_query = False
    for d in d_counts.values():
        if q + d <= budget:
            continue
        if d > max(budget - q, budget // 2):
            truncated_docs += 1
        if q > max(budget - d, math.ceil(budget / 2)):
            truncated_query = True
    return TruncationPlan(
        truncate_prompt_tokens=-1, truncated_documents=truncated_docs, truncated_query=truncated_query
    )


def plan_each(
    query: str, documents: Sequence[str], *, max_len: int, special: int, count: TokenCounter
) -> TruncationPlan:
    """Bi-encoders: query and each document are embedded separately, each cut to max_len."""
    budget = max_len - special
    texts = [query, *documents]
    suspects = [i for i, t in enumerate(texts) if byte_bound(t) > budget]
    counts = dict(zip(suspects, count([texts[i] for i in suspects]), strict=True)) if suspects else {}
    over = {i for i, n in counts.items() if n > budget}
    return TruncationPlan(
        truncate_prompt_tokens=-1,
        truncated_documents=len(over - {0}),
        truncated_query=0 in over,
    )


def truncations_from_lengths(
    kind: str,
    lengths: Sequence[int],
    query: str,
    documents: Sequence[str],
    *,
    max_len: int,
    special: int,
    count: TokenCounter,
) -> tuple[int, bool]:
    """(truncated documents, truncated query) for encoders, from the prompt lengths vLLM itself tokenised.

    vLLM cuts every encoder input to max_len, so an input whose prompt is max_len long was cut (one that fits
    exactly counts as cut too: rare, and only the metric sees it). Cross-encoders (`pair`): one length per
    document; the tokenizer cuts the longer part first, so while the query is at most half the budget only
    documents are cut; a longer query is tokenised (one text) and the few cut pairs are re-planned exactly.
    Bi-encoders (`each`): the query's length first, then each document's.
    """
    if kind == "each":
        if len(lengths) != len(documents) + 1:
            raise ValueError(f"expected {len(documents) + 1} prompt lengths, got {len(lengths)}")
        return sum(1 for n in lengths[1:] if n >= max_len), lengths[0] >= max_len
    if len(lengths) != len(documents):
        raise ValueError(f"expected {len(documents)} prompt lengths, got {len(lengths)}")
    cut = [i for i, n in enumerate(lengths) if n >= max_len]
    if not cut:
        return 0, False
    if byte_bound(query) <= (max_len - special) // 2:
        return len(cut), False
    plan = plan_pair(query, [documents[i] for i in cut], max_len=max_len, special=special, count=count)
    return plan.truncated_documents, plan.truncated_query


def plan_budget(
    query: str, documents: Sequence[str], *, max_len: int, overhead: int, count: TokenCounter
) -> TruncationPlan:
    """Template models: cut query and documents BEFORE the template is applied, so its suffix always survives.

    `overhead` is the token count of the rendered template with an empty query and document. The query may take
    at most half of what is left; each document gets the rest.
    """
    available = max_len - overhead - TEMPLATE_MARGIN
    if available < MIN_CONTENT_TOKENS:
        raise DialectError(
            400,
            f"the prompt template and instruction take {overhead} of the model's {max_len} tokens, leaving no room "
            "for the query and documents; use a shorter instruction or a larger model.max_model_len",
        )
    q_bound = byte_bound(query)
    if all(q_bound + byte_bound(d) <= available for d in documents):
        return TruncationPlan()
    q = count([query])[0]
    query_cap = available // 2
    truncated_query = q > query_cap
    q_eff = min(q, query_cap)
    doc_budget = available - q_eff
    suspects = [i for i, d in enumerate(documents) if byte_bound(d) > doc_budget]
    d_counts = count([documents[i] for i in suspects]) if suspects else []
    truncated_docs = sum(1 for n in d_counts if n > doc_budget)
    return TruncationPlan(
        max_tokens_per_query=query_cap if truncated_query else 0,
        max_tokens_per_doc=doc_budget if truncated_docs else 0,
        truncated_documents=truncated_docs,
        truncated_query=truncated_query,
    )


def scores_in_input_order(body: dict[str, Any], n: int) -> list[float]:
    """vLLM's rerank reply sorts results by score; put them back in document order."""
    scores: list[float | None] = [None] * n
    for item in body["results"]:
        scores[item["index"]] = float(item["relevance_score"])
    if any(s is None for s in scores):
        raise RuntimeError(f"vLLM returned {len(body['results'])} results for {n} documents")
    return [s for s in scores if s is not None]


def engine_error_message(body: Any) -> str:
    """The message of a vLLM error reply (`{"error": {"message": ...}}` or older flat shapes)."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(body.get("message"), str):
            return body["message"]
    return str(body)


class BackendReply(Protocol):
    """What the backend answers: HTTP status, JSON body, prompt length per input (None when unknown)."""

    status: int
    body: bytes
    prompt_lengths: list[int] | None


class RerankBackend(Protocol):
    """vLLM's rerank as the scorer calls it (`vllm_bridge.RerankBackend`; tests use stand-ins)."""

    async def rerank(
        self,
        query: str,
        documents: list[str],
        *,
        instruction: str | None,
        use_activation: bool,
        truncate_prompt_tokens: int | None,
        max_tokens_per_query: int,
        max_tokens_per_doc: int,
    ) -> BackendReply: ...


class VllmScorer:
    """`Scorer` on vLLM's in-process rerank: plans truncation, calls the backend once, counts what was cut."""

    def __init__(
        self,
        backend: RerankBackend | None,
        tokenizer: Any,
        *,
        family: Family,
        served_name: str,
        model_names: frozenset[str],
        max_model_len: int,
        default_instruction: str | None = None,
        chat_template: str | None = None,
    ) -> None:
        self._backend = backend
        self._tokenizer = tokenizer
        # Counting runs in worker threads while vLLM's renderer uses its own tokenizer: a private copy behind a
        # lock keeps the two from borrowing the same Rust tokenizer at once ("Already borrowed").
        self._count_tokenizer = copy.deepcopy(tokenizer)
        self._count_lock = threading.Lock()
        self._family = family
        self.family = family.name
        self.served_name = served_name
        self.model_names = model_names
        self.max_model_len = max_model_len
        self._default_instruction = default_instruction
        self._chat_template = chat_template
        self._overheads: dict[str | None, int] = {}
        self._special_pair = self._special_tokens(pair=True)
        self._special_single = self._special_tokens(pair=False)
        if family.truncation == "budget":
            # Fail at startup, not on the first request, when the template leaves no room for content.
            plan_budget(
                "",
                [""],
                max_len=max_model_len,
                overhead=self.template_overhead(self._instruction(None)),
                count=self.count_tokens,
            )

    def _special_tokens(self, *, pair: bool) -> int:
        method = getattr(self._tokenizer, "num_special_tokens_to_add", None)
        return int(method(pair=pair)) if method is not None else 0

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Content tokens (no special tokens) of each text."""
        if not texts:
            return []
        with self._count_lock:
            encoded = self._count_tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def render_prompt(self, query: str, document: str, instruction: str | None) -> str:
        """The prompt text vLLM builds for one pair of a template model (the same template and variables)."""
        kwargs = {"instruction": instruction} if instruction is not None else {}
        return self._tokenizer.apply_chat_template(
            [{"role": "query", "content": query}, {"role": "document", "content": document}],
            chat_template=self._chat_template,
            tokenize=False,
            **kwargs,
        )

    def template_overhead(self, instruction: str | None) -> int:
        """Tokens the template (with this instruction) adds around query and document."""
        if instruction not in self._overheads:
            if len(self._overheads) >= _OVERHEAD_CACHE_SIZE:
                self._overheads.clear()
            prompt = self.render_prompt("", "", instruction)
            self._overheads[instruction] = len(self._tokenizer(prompt, add_special_tokens=True)["input_ids"])
        return self._overheads[instruction]

    def _instruction(self, instruction: str | None) -> str | None:
        # Families without an instruction slot ignore it (Cohere-style clients never send one anyway).
        if not self._family.supports_instruction:
            return None
        return instruction or self._default_instruction

    def plan(self, query: str, documents: Sequence[str], instruction: str | None) -> TruncationPlan:
        """The truncation options for this request (tokenises only texts that may be over budget)."""
        kind = self._family.truncation
        if kind == "pair":
            return plan_pair(
                query,
                documents,
                max_len=self.max_model_len,
                special=self._special_pair,
                count=self.count_tokens,
            )
        if kind == "each":
            return plan_each(
                query,
                documents,
                max_len=self.max_model_len,
                special=self._special_single,
                count=self.count_tokens,
            )
        return plan_budget(
            query,
            documents,
            max_len=self.max_model_len,
            overhead=self.template_overhead(instruction),
            count=self.count_tokens,
        )

    async def _call_vllm(
        self,
        query: str,
        documents: list[str],
        instruction: str | None,
        use_activation: bool,
        plan: TruncationPlan,
    ) -> BackendReply:
        if self._backend is None:
            raise RuntimeError("this scorer has no engine behind it")
        return await self._backend.rerank(
            query,
            documents,
            instruction=instruction,
            use_activation=use_activation,
            truncate_prompt_tokens=plan.truncate_prompt_tokens,
            max_tokens_per_query=plan.max_tokens_per_query,
            max_tokens_per_doc=plan.max_tokens_per_doc,
        )

    async def rerank(
        self, query: str, documents: list[str], *, instruction: str | None = None, use_activation: bool = True
    ) -> ScoreResult:
        """Score `documents` against `query`; scores come back in input order."""
        if not documents:
            return ScoreResult(scores=[], prompt_tokens=0, truncated_documents=0, truncated_query=False)
        instruction = self._instruction(instruction)
        if self._family.truncation == "budget":
            # Template models: the cut must be known before the template is applied, so the plan comes first.
            size = len(query) + sum(len(d) for d in documents)
            if size * 4 <= INLINE_PLAN_BYTES:  # at most 4 UTF-8 bytes per character
                plan = self.plan(query, documents, instruction)
            else:
                plan = await asyncio.to_thread(self.plan, query, documents, instruction)
            reply = await self._call_vllm(query, documents, instruction, use_activation, plan)
            truncated = (plan.truncated_documents, plan.truncated_query)
        else:
            # Encoders: vLLM cuts every input to max_model_len itself; what it cut is read from the prompt lengths
            # it computed, so nothing is tokenised twice.
            reply = await self._call_vllm(query, documents, instruction, use_activation, ENCODER_PLAN)
            truncated = await self._encoder_truncations(reply.prompt_lengths, query, documents, instruction)
        body = json.loads(reply.body)
        if 400 <= reply.status < 500:
            # vLLM's own validation refused what the client sent: the client's mistake, so a 4xx for the client.
            raise DialectError(reply.status, f"the engine refused the request: {engine_error_message(body)}")
        if reply.status != 200:
            raise RuntimeError(f"vLLM refused the request: {body}")
        scores = scores_in_input_order(body, len(documents))
        if self._family.cosine_scores and use_activation:
            scores = [cosine_to_unit(s) for s in scores]
        return ScoreResult(
            scores=scores,
            prompt_tokens=int(body["usage"]["prompt_tokens"]),
            truncated_documents=truncated[0],
            truncated_query=truncated[1],
        )

    async def _encoder_truncations(
        self, lengths: list[int] | None, query: str, documents: list[str], instruction: str | None
    ) -> tuple[int, bool]:
        """What vLLM cut for an encoder request: from its prompt lengths, else by tokenising in a thread."""
        if lengths is not None:
            special = self._special_single if self._family.truncation == "each" else self._special_pair
            derive = functools.partial(
                truncations_from_lengths,
                self._family.truncation,
                lengths,
                query,
                documents,
                max_len=self.max_model_len,
                special=special,
                count=self.count_tokens,
            )
            try:
                # Only a long query can make it tokenise (the few cut pairs): then keep it off the event loop.
                if byte_bound(query) > (self.max_model_len - special) // 2:
                    return await asyncio.to_thread(derive)
                return derive()
            except ValueError as exc:
                _warn_once(
                    "lengths",
                    "vLLM's prompt lengths do not match the inputs (%s); counting by tokenising",
                    exc,
                )
        plan = await asyncio.to_thread(self.plan, query, documents, instruction)
        return plan.truncated_documents, plan.truncated_query
