"""The router's HTTP side: one plain ASGI app served by uvicorn (httptools, uvloop), replicas called with aiohttp.

That pair added the least latency of the stacks measured (bench/router_stack.py, bench/results/router.md).

A scoring request is read (size and content-type checked), parsed by the server's own `dialects` module,
admitted or refused (429), held while no replica exists (the request's deadline starts after the hold; see
docs/router.md), scored through `dispatch` (sharded, balanced, retried) and formatted back in the
client's own shape by the same module, so a client cannot tell the router from a server. The model list and
TEI's `/info` are relayed from a replica.

Drain (SIGTERM): `/ready` turns 503 at once; requests still arriving are served, each answered with
`Connection: close`, and keep-alive connections still open half a second later are closed; once nothing is in
flight (or after `drain_seconds`, when what is left gets 503 with Retry-After) the listener closes and the
process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from reranker_server.auth import ApiKeyMiddleware, KeyFile
from reranker_server.dialects import (
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
    ScoreCall,
    check_document_limit,
    error_body,
    format_nvidia,
    format_rerank,
    format_score,
    format_tei,
    is_tei_body,
    parse_nvidia,
    parse_rerank,
    parse_score,
    parse_tei,
)
from reranker_server.jsonbody import decode_json

from .config import RouterConfig
from .dispatch import BackendReply, DeadlineExceeded, Dispatcher, Unavailable
from .metrics import RouterMetrics
from .replicas import NoBackend, ReplicaSet, discover

log = logging.getLogger("reranker_router")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

# Client credentials are passed on: the replicas check the same key (defence in depth, one Secret).
FORWARDED_HEADERS = (b"authorization", b"x-api-key")
JSON = b"application/json"

# After SIGTERM, how long open keep-alive connections may stay before they are closed (see _Server).
IDLE_CLOSE_SECONDS = 0.5

_SCORING = {path: "v1" for path in RERANK_PATHS}
_SCORING.update(
    {RERANK_V2_PATH: "v2", **{p: SCORE for p in SCORE_PATHS}, **{p: NVIDIA for p in NVIDIA_PATHS}}
)
_RELAYED = frozenset({*MODELS_PATHS, TEI_INFO_PATH})


class Refused(Exception):
    """The router itself refuses the request (admission, no replica, drain): status and Retry-After."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


class RouterApp:
    """The ASGI application: probes, metrics, every client dialect, and the drain state."""

    def __init__(
        self,
        config: RouterConfig,
        replicas: ReplicaSet,
        dispatcher: Dispatcher,
        metrics: RouterMetrics,
    ) -> None:
        self.config = config
        self.replicas = replicas
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.pending_pairs = 0
        self.active = 0
        self.started = 0  # requests ever started: the scaler's sign of this router's own traffic
        self.draining = False
        self.drain_expired = False
        self._work: set[asyncio.Future] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path in ("/healthz", "/health"):
            await self._reply(send, 200, b'{"status":"ok"}')
        elif path == "/ready":
            if self.draining:
                await self._reply(send, 503, b'{"status":"draining"}')
            else:
                await self._reply(send, 200, b'{"status":"ready"}')
        elif path in ("/metrics", "/metrics/"):
            await self._reply(send, 200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST.encode())
        elif path in _SCORING:
            await self._guarded(scope, receive, send, method == "POST", self._score)
        elif path in _RELAYED:
            await self._guarded(scope, receive, send, method == "GET", self._relay)
        else:
            await self._error(
                send, 404, f"no route {path}; see docs/api.md for the served paths", "NotFoundError"
            )

    async def _guarded(
        self,
        scope: dict[str, Any],
        receive: Receive,
        send: Send,
        method_ok: bool,
        handler: Callable[[dict[str, Any], Receive, Send], Awaitable[None]],
    ) -> None:
        """Method check, then the handler, counted as active work for the drain."""
        if not method_ok:
            await self._error(
                send, 405, f"{scope['method']} is not allowed on {scope['path']}", "MethodNotAllowed"
            )
            return
        self.active += 1
        self.started += 1
        self._idle.clear()
        try:
            await handler(scope, receive, send)
        finally:
            self.active -= 1
            if self.active == 0:
                self._idle.set()

    async def _score(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        kind = _SCORING[scope["path"]]
        dialect = SCORE if kind == SCORE else NVIDIA if kind == NVIDIA else COHERE
        status = 200
        try:
            body = decode_json(await self._read_body(scope, receive))
            if kind in ("v1", "v2") and is_tei_body(body):
                dialect = TEI
            call = _parse(kind, dialect, body)
            pairs = _pairs(call)
            check_document_limit(len(pairs), self.config.limits.max_documents)
            reply = await self._admitted(len(pairs), self._run(call, pairs, kind, dialect, scope))
            await self._reply(send, 200, json.dumps(reply).encode())
        except DialectError as exc:
            status = exc.status
            await self._error(send, exc.status, exc.message, exc.error_type)
        except Exception as exc:
            status = await self._failure(send, exc, scope["path"])
        finally:
            self.metrics.observe_request(dialect, status, time.perf_counter() - start)

    async def _run(
        self, call: Any, pairs: list[tuple[str, str]], kind: str, dialect: str, scope: dict
    ) -> Any:
        """Hold until a replica exists, then score the pairs through the replicas (the request's deadline starts
        once one is there) and format the reply in the client's dialect."""
        await self.replicas.hold()
        deadline = time.monotonic() + self.config.request_timeout_seconds
        scored = await self.dispatcher.score(
            pairs,
            instruction=call.instruction,
            use_activation=call.use_activation,
            model=call.model,
            headers=_forwarded(scope),
            deadline=deadline,
        )
        model = scored.model or call.model or ""
        if dialect == SCORE:
            return format_score(scored.scores, scored.prompt_tokens, model=model)
        if dialect == TEI:
            return format_tei(call, scored.scores)
        if dialect == NVIDIA:
            return format_nvidia(call, scored.scores, scored.prompt_tokens)
        return format_rerank(
            call, scored.scores, scored.prompt_tokens, model=model, api_version="2" if kind == "v2" else "1"
        )

    async def _relay(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 200
        try:
            status, body, content_type = await self._admitted(0, self._forward(scope["path"], scope))
            await self._reply(send, status, body, content_type.encode())
        except Exception as exc:
            status = await self._failure(send, exc, scope["path"])
        finally:
            self.metrics.observe_request("discovery", status, time.perf_counter() - start)

    async def _forward(self, path: str, scope: dict[str, Any]) -> tuple[int, bytes, str]:
        """Hold until a replica exists, then relay the GET within the request's deadline."""
        await self.replicas.hold()
        deadline = time.monotonic() + self.config.request_timeout_seconds
        return await self.dispatcher.forward(path, _forwarded(scope), deadline)

    async def _admitted(self, pairs: int, work: Awaitable[Any]) -> Any:
        """Run `work` if the pending pairs allow it (else 429); cut short with 503 if the drain deadline hits."""
        limit = self.config.admission.max_pending_pairs_per_replica * max(1, len(self.replicas.available()))
        if self.pending_pairs and self.pending_pairs + pairs > limit:
            work.close()
            raise Refused(
                429,
                f"the router is at capacity ({self.pending_pairs} pairs pending, limit {limit}); retry shortly",
                "admission",
            )
        self.pending_pairs += pairs
        task = asyncio.ensure_future(work)
        self._work.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if self.drain_expired and task.cancelled():
                message = "the router is shutting down; retry (another router will answer)"
                raise Refused(503, message, "draining") from None
            raise
        finally:
            self._work.discard(task)
            self.pending_pairs -= pairs

    async def _failure(self, send: Send, exc: Exception, path: str) -> int:
        """Answer anything but a dialect error; returns the status sent."""
        retry_after = str(self.config.admission.retry_after_seconds).encode()
        if isinstance(exc, BackendReply):
            await self._reply(send, exc.status, exc.body, exc.content_type.encode())
            return exc.status
        if isinstance(exc, Refused):
            self.metrics.rejections.labels(reason=exc.reason).inc()
            error_type = "TooManyRequestsError" if exc.status == 429 else "ServiceUnavailableError"
            await self._error(send, exc.status, exc.message, error_type, retry_after)
            return exc.status
        if isinstance(exc, NoBackend):
            self.metrics.rejections.labels(reason="no_backend").inc()
            await self._error(
                send, 503, f"no reranker replica is ready: {exc}", "ServiceUnavailableError", retry_after
            )
            return 503
        if isinstance(exc, Unavailable):
            await self._error(
                send, 502, f"no replica could score the request: {exc}", "BadGatewayError", retry_after
            )
            return 502
        if isinstance(exc, DeadlineExceeded):
            message = f"no answer within the router's {self.config.request_timeout_seconds:g} s deadline"
            await self._error(send, 504, message, "GatewayTimeoutError")
            return 504
        log.exception("routing %s failed", path)
        await self._error(send, 500, f"the router failed: {type(exc).__name__}: {exc}", "InternalServerError")
        return 500

    async def _read_body(self, scope: dict[str, Any], receive: Receive) -> bytes:
        """The body; 415 for a non-JSON content type, 413 beyond `limits.max_request_bytes`."""
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type")
        if content_type:
            media_type = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
            if media_type != "application/json" and not media_type.endswith("+json"):
                raise DialectError(
                    415,
                    f"unsupported content type {media_type!r}: send JSON with 'Content-Type: application/json'",
                    "UnsupportedMediaTypeError",
                )
        limit = self.config.limits.max_request_bytes
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            raise DialectError(413, _too_large(int(declared), limit), "RequestTooLargeError")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise DialectError(400, "the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise DialectError(413, _too_large(size, limit), "RequestTooLargeError")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _error(
        self, send: Send, status: int, message: str, error_type: str, retry_after: bytes | None = None
    ) -> None:
        extra = [(b"retry-after", retry_after)] if retry_after else []
        await self._reply(
            send, status, json.dumps(error_body(status, message, error_type)).encode(), JSON, extra
        )

    async def _reply(
        self,
        send: Send,
        status: int,
        body: bytes,
        content_type: bytes = JSON,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            *(extra or []),
        ]
        if self.draining:
            # Clients reconnect, and the Service sends them to a router that is not going away.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def drain(self) -> None:
        """Stop being ready, let accepted work finish (up to `drain_seconds`), then answer the rest with 503."""
        self.draining = True
        log.info("draining: /ready is 503; %d requests in flight", self.active)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.config.drain_seconds)
        except asyncio.TimeoutError:
            self.drain_expired = True
            log.warning("drain deadline passed: %d requests get 503", len(self._work))
            for task in list(self._work):
                task.cancel()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=2)
            except asyncio.TimeoutError:
                log.error("%d requests did not end after the drain deadline", self.active)
        log.info("drained")


def _parse(kind: str, dialect: str, body: Any) -> RerankCall | ScoreCall:
    if dialect == TEI:
        return parse_tei(body)
    if dialect == NVIDIA:
        return parse_nvidia(body)
    if dialect == SCORE:
        return parse_score(body)
    return parse_rerank(body, default_return_documents=kind == "v1")


def _pairs(call: RerankCall | ScoreCall) -> list[tuple[str, str]]:
    if isinstance(call, ScoreCall):
        return call.pairs
    return [(call.query, document) for document in call.documents]


def _forwarded(scope: dict[str, Any]) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    for name, value in scope["headers"]:
        if name in FORWARDED_HEADERS:
            headers[name.decode()] = value.decode("latin-1")
    return headers


def _too_large(size: int, limit: int) -> str:
    return f"request body too large: {size} bytes, the limit is {limit} bytes"


class _Server(uvicorn.Server):
    """uvicorn, with the first SIGTERM/SIGINT starting the drain and the second forcing the exit."""

    def __init__(self, config: uvicorn.Config, router: RouterApp) -> None:
        super().__init__(config)
        self.router = router
        self._drain_task: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._drain_task is None:
            log.info("%s: draining", signal.Signals(sig).name)
            loop = asyncio.get_event_loop()
            self._drain_task = loop.create_task(self._drain_then_exit())
        else:
            log.warning("%s again: exiting now", signal.Signals(sig).name)
            self.force_exit = True
            self.should_exit = True

    async def _drain_then_exit(self) -> None:
        drain = asyncio.ensure_future(self.router.drain())
        # Clients in a loop hear `Connection: close` on their next reply. Connections still open after a
        # moment are idle ones (or mid-request, which then close after their reply): close them so those
        # clients reconnect through the Service. Closing every idle connection at once would race clients
        # that are sending their next request on it right now, and lose that request.
        await asyncio.wait([drain], timeout=IDLE_CLOSE_SECONDS)
        for connection in list(self.server_state.connections):
            connection.shutdown()
        await drain
        self.should_exit = True


def build(
    config: RouterConfig,
    session: aiohttp.ClientSession,
    *,
    registry: CollectorRegistry | None = None,
    on_no_backend: Callable[[], None] | None = None,
) -> tuple[Any, RouterApp]:
    """The ASGI app (wrapped in the API-key check when configured) and the router behind it."""
    metrics = RouterMetrics(registry or CollectorRegistry())
    replicas = ReplicaSet(
        config.ejection,
        balancing=config.balancing,
        max_waiting=config.no_backend.max_waiting_requests,
        wait_seconds=config.no_backend.wait_seconds,
        on_no_backend=on_no_backend,
        on_eject=lambda _replica, reason: metrics.ejections.labels(reason=reason).inc(),
    )
    replicas.set_urls(config.backends)
    router = RouterApp(config, replicas, Dispatcher(config, replicas, session, metrics), metrics)
    metrics.watch(replicas, lambda: router.pending_pairs)
    app: Any = router
    if config.auth.api_key_file:
        app = ApiKeyMiddleware(router, KeyFile(config.auth.api_key_file))
    return app, router


async def run(config: RouterConfig, on_no_backend: Callable[[], None] | None = None) -> None:
    """Serve until drained after a signal; with `scale_from_zero` the scaler's hook is `on_no_backend`."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector) as session:
        app, router = build(config, session, on_no_backend=on_no_backend)
        background = []
        if config.discovery is not None:
            background.append(
                asyncio.ensure_future(discover(router.replicas, config.discovery, config.backends))
            )
        scaler = None
        if config.scale_from_zero is not None:
            # Imported here: kubernetes_asyncio is needed only by routers that scale from zero.
            from .scaler import Scaler

            scaler = Scaler(
                config.scale_from_zero,
                router.replicas,
                session,
                router.metrics,
                busy=lambda: (router.started, router.active),
            )
            router.replicas.on_no_backend = _both(on_no_backend, scaler.request_scale_up)
            background.append(asyncio.ensure_future(scaler.run()))
        server = _Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                http="httptools",
                loop="none",
                lifespan="off",
                access_log=False,
                log_level="warning",
                # Timeouts of idle keep-alive connections longer than clients' pools' (RAGFlow, SDKs) avoid
                # races where the router closes a connection the client is about to reuse.
                timeout_keep_alive=75,
            ),
            router,
        )
        log.info(
            "router on %s:%d, replicas %s", config.host, config.port, config.backends or config.discovery
        )
        try:
            await server.serve()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if scaler is not None:
                await scaler.close()


def _both(first: Callable[[], None] | None, second: Callable[[], None]) -> Callable[[], None]:
    if first is None:
        return second

    def hook() -> None:
        first()
        second()

    return hook


def serve(config: RouterConfig) -> int:
    """`reranker-router serve`: run on uvloop until drained; returns the exit code."""
    import uvloop

    uvloop.run(run(config))
    return 0
