"""The client-facing HTTP layer: every rerank dialect at one port, limits, auth and metrics.

`engine.py` builds vLLM's FastAPI app, removes vLLM's own score/rerank/models routes and calls `install`
before the server starts. Each handler is thin: read the body (within the size limit), parse it with
`dialects`, call the `Scorer` once per query, format the reply. Client mistakes are 4xx with a message that
names the problem; nothing a client sends can produce a 500 or disturb other requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount

from . import __version__
from .auth import ApiKeyMiddleware, KeyFile
from .config import ServerConfig
from .dialects import (
    COHERE,
    MODELS_PATHS,
    NVIDIA,
    NVIDIA_PATHS,
    RERANK_PATHS,
    RERANK_V2_PATH,
    SCORE,
    SCORE_PATHS,
    TEI,
    TEI_INFO_PATH,
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
    format_tei_info,
    group_pairs_by_query,
    is_tei_body,
    parse_nvidia,
    parse_rerank,
    parse_score,
    parse_tei,
    resolve_model,
)
from .jsonbody import read_json
from .metrics import ServerMetrics, estimate_tokens, metrics_for

if TYPE_CHECKING:
    from .scoring import Scorer, ScoreResult

log = logging.getLogger(__name__)


def install(
    app: FastAPI, scorer: Scorer, config: ServerConfig, *, registry: CollectorRegistry | None = None
) -> None:
    """Add the rerank/score/models/info routes, the API-key middleware and the reranker metrics to `app`.

    Must run before the server starts serving. Our routes go first in the routing table, so they win over
    any vLLM route left on the same path. `registry` defaults to the process registry that vLLM's `/metrics`
    serves; tests pass their own.
    """
    registry = registry if registry is not None else REGISTRY
    service = RerankService(scorer, config, metrics_for(registry))
    app.router.routes[0:0] = service.router().routes
    if not any(getattr(route, "path", None) == "/metrics" for route in app.router.routes):
        app.router.routes.append(Mount("/metrics", make_asgi_app(registry=registry)))
    if config.auth.api_key_file:
        # Outermost, so no other middleware or route sees an unauthenticated request. vLLM's build_app has
        # already built the middleware stack (add_middleware would refuse): insert directly and let Starlette
        # rebuild the stack on the next request (below).
        app.user_middleware.insert(0, Middleware(ApiKeyMiddleware, keys=KeyFile(config.auth.api_key_file)))
    # Unknown paths (404) and wrong methods (405) answer in the one documented error shape too.
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.middleware_stack = None


class RerankService:
    """The handlers, bound to one scorer, one configuration and one set of metrics."""

    def __init__(self, scorer: Scorer, config: ServerConfig, metrics: ServerMetrics) -> None:
        self.scorer = scorer
        self.config = config
        self.metrics = metrics
        self.created = int(time.time())

    def router(self) -> APIRouter:
        """All routes this layer serves."""
        router = APIRouter()
        for path in RERANK_PATHS:
            router.add_api_route(path, self.rerank_v1, methods=["POST"], include_in_schema=path == "/rerank")
        router.add_api_route(RERANK_V2_PATH, self.rerank_v2, methods=["POST"])
        for path in SCORE_PATHS:
            router.add_api_route(path, self.score, methods=["POST"], include_in_schema=path == "/score")
        for path in NVIDIA_PATHS:
            router.add_api_route(path, self.nvidia, methods=["POST"], include_in_schema=False)
        for path in MODELS_PATHS:
            router.add_api_route(path, self.models, methods=["GET"], include_in_schema=path == "/v1/models")
        router.add_api_route(TEI_INFO_PATH, self.info, methods=["GET"])
        return router

    async def rerank_v1(self, request: Request) -> JSONResponse:
        """Jina / Cohere v1 / vLLM rerank, or TEI when the body has `texts` (TEI uses `/rerank` too)."""
        return await self._handle(request, COHERE, lambda body: self._rerank(body, api_version="1"))

    async def rerank_v2(self, request: Request) -> JSONResponse:
        """Cohere v2 (`ClientV2`, LangChain, LlamaIndex): documents are not echoed unless asked for."""
        return await self._handle(request, COHERE, lambda body: self._rerank(body, api_version="2"))

    async def score(self, request: Request) -> JSONResponse:
        """vLLM `/score`: pairs grouped by query, one scorer call per distinct query, run together."""
        return await self._handle(request, SCORE, self._score)

    async def nvidia(self, request: Request) -> JSONResponse:
        """NVIDIA reranking shape (RAGFlow's NVIDIA provider): raw logits in `rankings`."""
        return await self._handle(request, NVIDIA, self._nvidia)

    async def models(self) -> JSONResponse:
        """OpenAI-style model list; RAGFlow discovery types the model as rerank from its id."""
        return JSONResponse(
            format_models(
                self.scorer.served_name, self.config.model.name, self.scorer.max_model_len, self.created
            )
        )

    async def info(self) -> JSONResponse:
        """TEI's `/info`, so TEI clients (Dify) recognise a reranker."""
        return JSONResponse(
            format_tei_info(
                self.scorer.served_name,
                self.scorer.max_model_len,
                self.config.limits.max_documents,
                __version__,
                self.scorer.family,
            )
        )

    async def _handle(
        self,
        request: Request,
        dialect: str,
        work: Callable[[Any], Awaitable[Any]],
    ) -> JSONResponse:
        """Read and decode the body, run `work`, turn refusals into error replies, record metrics."""
        start = time.perf_counter()
        status = 200
        try:
            body = await read_json(request, self.config.limits.max_request_bytes)
            if dialect == COHERE and is_tei_body(body):
                dialect = TEI
            return JSONResponse(await work(body))
        except DialectError as exc:
            status = exc.status
            return _error_response(exc.status, exc.message, exc.error_type)
        except Exception as exc:
            status = 500
            log.exception("scoring failed on %s", request.url.path)
            return _error_response(500, f"scoring failed: {type(exc).__name__}: {exc}", "InternalServerError")
        finally:
            self.metrics.observe_request(dialect, status, time.perf_counter() - start)

    async def _rerank(self, body: Any, *, api_version: str) -> Any:
        if is_tei_body(body):
            call = parse_tei(body)
            result = await self._run(call)
            return format_tei(call, result.scores)
        call = parse_rerank(body, default_return_documents=api_version == "1")
        model = resolve_model(call.model, self.scorer.served_name, self.scorer.model_names)
        result = await self._run(call)
        return format_rerank(call, result.scores, result.prompt_tokens, model=model, api_version=api_version)

    async def _nvidia(self, body: Any) -> dict[str, Any]:
        call = parse_nvidia(body)
        resolve_model(call.model, self.scorer.served_name, self.scorer.model_names)
        result = await self._run(call)
        return format_nvidia(call, result.scores, result.prompt_tokens)

    async def _score(self, body: Any) -> dict[str, Any]:
        call = parse_score(body)
        model = resolve_model(call.model, self.scorer.served_name, self.scorer.model_names)
        check_document_limit(len(call.pairs), self.config.limits.max_documents)
        self.metrics.documents.observe(len(call.pairs))
        groups = group_pairs_by_query(call.pairs)
        results = await asyncio.gather(
            *(
                self._call_scorer(
                    query, [call.pairs[i][1] for i in indices], call.instruction, call.use_activation
                )
                for query, indices in groups.items()
            )
        )
        scores = [0.0] * len(call.pairs)
        for indices, result in zip(groups.values(), results, strict=True):
            for index, score in zip(indices, result.scores, strict=True):
                scores[index] = score
        ensure_finite(scores)
        return format_score(scores, sum(r.prompt_tokens for r in results), model=model)

    async def _run(self, call: RerankCall) -> ScoreResult:
        check_document_limit(len(call.documents), self.config.limits.max_documents)
        self.metrics.documents.observe(len(call.documents))
        result = await self._call_scorer(call.query, call.documents, call.instruction, call.use_activation)
        ensure_finite(result.scores)
        return result

    async def _call_scorer(
        self, query: str, documents: list[str], instruction: str | None, use_activation: bool
    ) -> ScoreResult:
        """One scorer call, counted in the in-flight pairs and tokens for exactly as long as it runs."""
        pairs = len(documents)
        tokens = estimate_tokens(query, documents)
        self.metrics.pairs_in_flight.inc(pairs)
        self.metrics.tokens_in_flight.inc(tokens)
        try:
            result = await self.scorer.rerank(
                query, documents, instruction=instruction, use_activation=use_activation
            )
        finally:
            self.metrics.pairs_in_flight.dec(pairs)
            self.metrics.tokens_in_flight.dec(tokens)
        if len(result.scores) != pairs:
            raise DialectError(
                500,
                f"the engine returned {len(result.scores)} scores for {pairs} documents",
                "InternalServerError",
            )
        self.metrics.observe_truncations(result.truncated_documents, result.truncated_query)
        return result


def _error_response(
    status: int, message: str, error_type: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, error_type), status_code=status, headers=headers)


_HTTP_ERROR_TYPES = {404: "NotFoundError", 405: "MethodNotAllowedError"}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own refusals (no such route, wrong method) in the documented error shape."""
    message = f"{exc.detail}: {request.method} {request.url.path}"
    if exc.status_code == 404:
        message += "; see docs/api.md for the routes (e.g. POST /v1/rerank)"
    error_type = _HTTP_ERROR_TYPES.get(exc.status_code, "HTTPError")
    return _error_response(exc.status_code, message, error_type, headers=exc.headers)
