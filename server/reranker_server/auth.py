"""API-key authentication for every route except the probes.

vLLM's own `--api-key` guards only paths under /v1, /v2, /inference and /cohere, leaving /rerank, /score,
/pooling, /tokenize and /invocations open. This middleware is deny-by-default instead: with a key file
configured, every path needs a key except the few that probes and Prometheus scrape (`OPEN_PATHS`).

Keys come from a file with one key per line (a mounted Secret). Kubernetes replaces mounted Secret files in
place, so the file is re-read when it changes (checked at most once a second).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from pathlib import Path

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .dialects import error_body

log = logging.getLogger(__name__)

# Probes and scrapes carry no credentials (`/healthz` is the router's liveness path). /info (TEI) is guarded like /v1/models: it names the model.
OPEN_PATHS = frozenset({"/health", "/healthz", "/ready", "/metrics", "/metrics/", "/ping", "/version"})
RECHECK_SECONDS = 1.0
# The signature of a key file that could not be read (logged once, not on every check).
_UNREADABLE = (-1, -1, -1)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyFile:
    """The accepted keys, re-read when the file's identity, size or mtime changes."""

    def __init__(self, path: str | Path, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.path = Path(path)
        self._recheck = recheck_seconds
        self._next_check = 0.0
        self._signature: tuple[int, int, int] | None = None
        self._digests: list[bytes] = []

    def digests(self) -> list[bytes]:
        """SHA-256 digests of the current keys; empty (nobody gets in) when the file is missing or empty."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._recheck
            self._reload_if_changed()
        return self._digests

    def _reload_if_changed(self) -> None:
        try:
            stat = os.stat(self.path)
            signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if signature == self._signature:
                return
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            if self._signature != _UNREADABLE:
                log.error(
                    "API key file %s is unreadable (%s): refusing every guarded request", self.path, exc
                )
            self._signature, self._digests = _UNREADABLE, []
            return
        self._digests = [_digest(line.strip()) for line in text.splitlines() if line.strip()]
        self._signature = signature
        if not self._digests:
            log.error("API key file %s holds no key: refusing every guarded request", self.path)

    def accepts(self, presented: str | None) -> bool:
        """Constant-time check of `presented` against every key (the loop never stops early)."""
        if not presented:
            return False
        candidate = _digest(presented)
        matched = False
        for digest in self.digests():
            matched |= hmac.compare_digest(candidate, digest)
        return matched


def presented_key(headers: Headers) -> str | None:
    """The key a client sent: `Authorization: Bearer KEY` or `X-API-Key: KEY`."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = headers.get("x-api-key")
    return api_key.strip() if api_key else None


class ApiKeyMiddleware:
    """Pure ASGI middleware: 401 for any non-open path without a valid key (OPTIONS passes for CORS)."""

    def __init__(self, app: ASGIApp, keys: KeyFile) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        if path in OPEN_PATHS or self.keys.accepts(presented_key(Headers(scope=scope))):
            await self.app(scope, receive, send)
            return
        message = "missing or invalid API key: send 'Authorization: Bearer <key>' (or 'X-API-Key: <key>')"
        payload = json.dumps(error_body(401, message, "AuthenticationError")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
