"""Scatter-gather of scoring work over the replicas, with bounded retries inside the request's deadline.

Every dialect's request becomes a list of (query, document) pairs. The pairs are cut into contiguous shards of
at most `shard_documents`; each shard is one vLLM `/score` call on a replica (1:N when the shard has one query,
N:N otherwise), so the replica scores exactly the pairs it would score for the whole request. Scores come back
in input order and are concatenated in shard order, which is the original order; `top_n`, sorting and
`return_documents` are applied by the dialect's formatter after the merge, and `usage` is the sum.

Scoring is idempotent, so a shard whose replica refused the connection, dropped it, answered 5xx or said it is
draining (503) is sent to another replica, at most `retry.max_attempts` times and never past the deadline.
A 4xx is the client's mistake and would be the same anywhere: it is relayed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from reranker_server.dialects import error_body

from .config import RouterConfig
from .metrics import RouterMetrics
from .replicas import Replica, ReplicaSet

log = logging.getLogger(__name__)

SCORE_PATH = "/score"
# A replica that wants no more work says so with one of these; the shard simply goes elsewhere.
GO_ELSEWHERE = frozenset({503, 429})


class BackendReply(Exception):
    """A reply to relay to the client as it is (a 4xx, or the last 5xx when every attempt failed)."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        super().__init__(f"replica answered {status}")
        self.status = status
        self.body = body
        self.content_type = content_type


class Unavailable(Exception):
    """Every attempt failed without a reply worth relaying (connect errors, draining replicas)."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before its shards were scored."""


@dataclass(frozen=True)
class Scored:
    """The merged outcome of all shards: scores in input order, summed prompt tokens, the served model."""

    scores: list[float]
    prompt_tokens: int
    model: str | None


def plan_shards(count: int, shard_documents: int) -> list[range]:
    """Contiguous, nearly equal ranges of at most `shard_documents` items covering `range(count)`."""
    shards = max(1, math.ceil(count / shard_documents))
    base, extra = divmod(count, shards)
    ranges, start = [], 0
    for i in range(shards):
        size = base + (1 if i < extra else 0)
        ranges.append(range(start, start + size))
        start += size
    return ranges


def shard_body(
    pairs: list[tuple[str, str]], instruction: str | None, use_activation: bool, model: str | None
) -> bytes:
    """The vLLM `/score` body for `pairs`: 1:N when they share one query, N:N otherwise."""
    queries = [query for query, _ in pairs]
    body: dict = {
        "text_1": queries[:1] if all(q == queries[0] for q in queries) else queries,
        "text_2": [document for _, document in pairs],
        "use_activation": use_activation,
    }
    if instruction is not None:
        body["instruction"] = instruction
    if model:
        body["model"] = model
    return json.dumps(body).encode()


class Dispatcher:
    """Sends shards to replicas and gathers the results."""

    def __init__(
        self,
        config: RouterConfig,
        replicas: ReplicaSet,
        session: aiohttp.ClientSession,
        metrics: RouterMetrics,
    ) -> None:
        self.config = config
        self.replicas = replicas
        self.session = session
        self.metrics = metrics

    async def score(
        self,
        pairs: list[tuple[str, str]],
        *,
        instruction: str | None,
        use_activation: bool,
        model: str | None,
        headers: Mapping[str, str],
        deadline: float,
    ) -> Scored:
        """Score every pair (sharded, in parallel, retried) and merge the shards in input order."""
        shards = plan_shards(len(pairs), self.config.shard_documents)
        self.metrics.shards.observe(len(shards))
        bodies = [shard_body(pairs[s.start : s.stop], instruction, use_activation, model) for s in shards]
        if len(shards) == 1:
            return await self._shard(bodies[0], len(pairs), headers, deadline)
        tasks = [
            asyncio.ensure_future(self._shard(body, len(s), headers, deadline))
            for body, s in zip(bodies, shards, strict=True)
        ]
        try:
            parts = await asyncio.gather(*tasks)
        finally:
            # One shard's refusal ends the request: the others' work is wasted, stop waiting for it.
            for task in tasks:
                task.cancel()
        scores = [score for part in parts for score in part.scores]
        return Scored(scores, sum(part.prompt_tokens for part in parts), parts[0].model)

    async def _shard(self, body: bytes, pairs: int, headers: Mapping[str, str], deadline: float) -> Scored:
        status, payload, _ = await self._call("POST", SCORE_PATH, pairs, headers, deadline, body)
        reply = json.loads(payload)
        scores = [item["score"] for item in reply["data"]]
        if len(scores) != pairs:
            raise BackendReply(502, _error(502, f"a replica returned {len(scores)} scores for {pairs} pairs"))
        return Scored(scores, int(reply.get("usage", {}).get("prompt_tokens", 0)), reply.get("model"))

    async def forward(self, path: str, headers: Mapping[str, str], deadline: float) -> tuple[int, bytes, str]:
        """A GET (model list, TEI info) answered by any replica, with the same retries as scoring."""
        return await self._call("GET", path, 0, headers, deadline, None)

    async def _call(
        self,
        method: str,
        path: str,
        pairs: int,
        headers: Mapping[str, str],
        deadline: float,
        body: bytes | None,
    ) -> tuple[int, bytes, str]:
        """One request to some replica, tried on others after a failure; returns (status, body, type)."""
        tried: list[Replica] = []
        last: BackendReply | None = None
        for attempt in range(self.config.retry.max_attempts):
            replica = await self.replicas.acquire(pairs, deadline, exclude=tried)
            tried.append(replica)
            reason = None
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded()
                timeout = aiohttp.ClientTimeout(
                    total=remaining, sock_connect=self.config.retry.connect_timeout_seconds
                )
                async with self.session.request(
                    method, replica.url + path, data=body, headers=headers, timeout=timeout
                ) as response:
                    payload = await response.read()
                    status = response.status
                    content_type = response.headers.get("Content-Type", "application/json")
                    closing = response.headers.get("Connection", "").lower() == "close"
            except (asyncio.TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded() from None
                # Refused, reset, dropped mid-reply, or no connection within connect_timeout_seconds (a pod
                # that vanished without a RST): all mean "this replica, not this request".
                reason = "connect"
                log.info("replica %s: %s: %s", replica.url, type(exc).__name__, exc)
                self.replicas.failed(replica, reason)
            finally:
                self.replicas.release(replica, pairs)
            if reason is None:
                if status < 500 and status not in GO_ELSEWHERE:
                    self.replicas.succeeded(replica)
                    if closing:
                        self.replicas.draining(replica)
                    if status == 200:
                        return status, payload, content_type
                    raise BackendReply(status, payload, content_type)
                if status in GO_ELSEWHERE:
                    reason = "draining"
                    self.replicas.draining(replica)
                else:
                    reason = "5xx"
                    self.replicas.failed(replica, reason)
                    last = BackendReply(status, payload, content_type)
            if attempt + 1 < self.config.retry.max_attempts:
                self.metrics.retries.labels(reason=reason).inc()
        if last is not None:
            raise last
        raise Unavailable(f"no replica answered after {self.config.retry.max_attempts} attempts")


def _error(status: int, message: str) -> bytes:
    return json.dumps(error_body(status, message, "BadGatewayError")).encode()
