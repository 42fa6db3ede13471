"""Lightweight stand-ins for reranker servers, and an in-process router, for the router's logic tests.

`FakeBackend` is a small ASGI app speaking the part of the server's API the router uses (`/score`,
`/v1/models`, `/info`, `/ready`) with scores that are a pure function of (query, document), so any sharding
must reproduce them exactly. Its `mode` makes it misbehave on purpose: answer 503 (draining), 500, or close.
Everything runs on the test's event loop over real loopback sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvicorn
from prometheus_client import CollectorRegistry
from reranker_router.app import RouterApp, build
from reranker_router.config import RouterConfig


def fake_score(query: str, document: str) -> float:
    """A deterministic score in [0, 1) for a pair."""
    digest = hashlib.sha256(f"{query}\x00{document}".encode()).digest()
    return int.from_bytes(digest[:6], "big") / 2**48


def bound_socket() -> socket.socket:
    """A listening loopback socket on a free port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class FakeBackend:
    """A fake replica: records the pairs it scored; `mode` is "ok", "draining" (503), "error" (500) or "close"."""

    name: str
    delay: float = 0.0
    mode: str = "ok"
    seen: list[int] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        extra: list[tuple[bytes, bytes]] = []
        if self.mode == "draining":
            status, reply, extra = 503, {"error": "draining"}, [(b"connection", b"close")]
        elif self.mode == "error":
            status, reply = 500, {"error": "boom"}
        elif path == "/score" and json.loads(body).get("model") not in (None, "fake"):
            status, reply = 404, {"error": {"message": "the model does not exist here"}}
        elif path == "/score":
            status, reply = 200, await self._score(json.loads(body), scope)
            if self.mode == "close":
                extra = [(b"connection", b"close")]
        elif path == "/v1/models":
            status, reply = 200, {"object": "list", "data": [{"id": "fake", "owner": self.name}]}
        elif path == "/info":
            status, reply = 200, {"model_id": "fake", "owner": self.name}
        else:
            status, reply = 404, {"error": "no route"}
        payload = json.dumps(reply).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + extra})
        await send({"type": "http.response.body", "body": payload})

    async def _score(self, body: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
        left, right = body["text_1"], body["text_2"]
        pairs = [(left[0], d) for d in right] if len(left) == 1 else list(zip(left, right, strict=True))
        self.seen.append(len(pairs))
        self.headers_seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        self.in_flight += len(pairs)
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay * len(pairs))
        finally:
            self.in_flight -= len(pairs)
        scores = [
            fake_score(q, d) if body.get("use_activation", True) else -fake_score(q, d) for q, d in pairs
        ]
        return {
            "model": "fake",
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
            "usage": {"prompt_tokens": 3 * len(pairs)},
        }


class Served:
    """An ASGI app served by uvicorn on a free loopback port, on the running event loop."""

    def __init__(self, app: Any) -> None:
        self.sock = bound_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, http="httptools")
        )
        self.server.capture_signals = _no_signals  # type: ignore[method-assign]
        self.task: asyncio.Task | None = None

    async def start(self) -> Served:
        self.task = asyncio.ensure_future(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


def _no_signals() -> Any:
    import contextlib

    return contextlib.nullcontext()


class RouterUnderTest:
    """The real router app in front of the given backends, served in-process."""

    def __init__(self, backends: list[str], **overrides: Any) -> None:
        self.config = RouterConfig(backends=backends, **overrides)
        self.session: aiohttp.ClientSession | None = None
        self.router: RouterApp | None = None
        self.served: Served | None = None
        self.no_backend_calls = 0

    async def __aenter__(self) -> RouterUnderTest:
        self.session = aiohttp.ClientSession()
        app, self.router = build(
            self.config, self.session, registry=CollectorRegistry(), on_no_backend=self._on_no_backend
        )
        self.served = await Served(app).start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.served.stop()
        await self.session.close()

    def _on_no_backend(self) -> None:
        self.no_backend_calls += 1

    @property
    def url(self) -> str:
        return self.served.url
