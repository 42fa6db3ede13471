"""The one module that imports vLLM or reaches into its internals.

Everything vLLM-specific the server does goes through the names imported here: parsing vLLM's arguments,
binding the socket, starting the engine (`build_async_engine_client`), building vLLM's FastAPI app and its
state (`build_app`, `init_app_state`), the uvicorn server class vLLM itself serves with (`NoSignalServer`),
vLLM's engine watchdog, and one in-process call to vLLM's `ServingScores` per rerank. A new vLLM version is a
change in this file; `tests/server/test_vllm_bridge.py` lists every vLLM name used here and fails naming the
one the installed vLLM lacks.

What is not reused: vLLM's `serve_http`. Its SIGTERM handler stops the engine client before the HTTP server,
so requests already accepted fail (issue 13); `lifecycle.py` owns the server's shutdown instead, and this
module only builds the uvicorn server the way `serve_http` does.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from argparse import Namespace
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import uvicorn
from vllm import envs
from vllm.entrypoints.launchers.api_server.app_state import init_app_state
from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
from vllm.entrypoints.launchers.app import build_app
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.entrypoints.launchers.launcher import NoSignalServer, setup_server, watchdog_loop
from vllm.entrypoints.launchers.utils.constants import (
    H11_MAX_HEADER_COUNT_DEFAULT,
    H11_MAX_INCOMPLETE_EVENT_SIZE_DEFAULT,
)
from vllm.entrypoints.launchers.utils.server_utils import get_uvicorn_log_config
from vllm.entrypoints.pooling.scoring.protocol import RerankRequest
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.version import __version__ as VLLM_VERSION

log = logging.getLogger("reranker_server.vllm_bridge")

# vLLM internals (private, not imported by name) this module reaches into, as "module:Class.attribute".
# The bridge test checks each exists; when one goes, the code below falls back and warns once.
INTERNALS = (
    "vllm.entrypoints.pooling.scoring.serving:ServingScores._build_response",
    "vllm.entrypoints.pooling.scoring.serving:ServingScores._extract_prompt_len",
    "vllm.v1.engine.async_llm:AsyncLLM.errored",
    "vllm.v1.engine.async_llm:AsyncLLM.get_supported_tasks",
)


def _enable_our_loggers() -> None:
    # vLLM's logging setup (on import, and again while the engine starts) disables every logger that existed
    # before it, ours included.
    for name, logger in logging.Logger.manager.loggerDict.items():
        if name.startswith("reranker_server") and isinstance(logger, logging.Logger):
            logger.disabled = False


_enable_our_loggers()
_warned: set[str] = set()


def warn_once(key: str, message: str, *args: Any) -> None:
    """Log a warning the first time `key` is seen (a degraded path must not go unnoticed, nor flood)."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def vllm_version() -> str:
    """The installed vLLM's version string."""
    return VLLM_VERSION


def parse_args(vllm_args: Sequence[str]) -> Namespace:
    """vLLM's own `serve` argument parsing and validation, on the arguments `profiles.build_vllm_args` made."""
    args = make_arg_parser(FlexibleArgumentParser(prog="reranker-server")).parse_args(list(vllm_args))
    validate_parsed_serve_args(args)
    return args


def bind_socket(args: Namespace) -> socket.socket:
    """Bind the listening socket before the engine starts, as vLLM does (logs vLLM's version and arguments)."""
    _, sock = setup_server(args, reuse_port=False)
    return sock


@dataclass
class Engine:
    """The running engine, as the rest of the server sees it."""

    client: Any  # vLLM's EngineClient (AsyncLLM)
    max_model_len: int
    tokenizer: Any
    supported_tasks: tuple[str, ...]

    def alive(self) -> bool:
        """Whether the engine still runs (a dead engine makes the pod unready)."""
        return not self.client.errored


@asynccontextmanager
async def run_engine(args: Namespace) -> AsyncIterator[Engine]:
    """Start vLLM's engine (EngineCore in its own process); leaving the block runs vLLM's own shutdown.

    Leave it only after the HTTP server has drained: vLLM then stops the engine processes in its default abort
    mode (nothing is left to abort; waiting for a graceful exit only delays it, the CPU worker rarely exits
    by itself) and its IPC.
    """
    engine_pids: list[int] = []
    try:
        async with build_async_engine_client(args) as client:
            _enable_our_loggers()
            engine_pids = [child.pid for child in psutil.Process().children(recursive=True)]
            yield Engine(
                client=client,
                max_model_len=client.model_config.max_model_len,
                tokenizer=client.renderer.get_tokenizer(),
                supported_tasks=tuple(await client.get_supported_tasks()),
            )
    finally:
        remove_openmp_registrations(engine_pids)


def remove_openmp_registrations(pids: list[int], wait_seconds: float = 2.0) -> None:
    """Delete the /dev/shm registration files Intel OpenMP leaves behind for engine processes vLLM killed.

    vLLM's shutdown ends EngineCore and its CPU worker with SIGKILL when they do not exit at once (on CPU the
    worker rarely does), and a killed process never removes its `__KMP_REGISTERED_LIB_<pid>_*` file. The kill
    lands a moment after vLLM returns, so wait briefly for each such process to be gone.
    """
    files = {pid: list(Path("/dev/shm").glob(f"__KMP_REGISTERED_LIB_{pid}_*")) for pid in pids}
    waiting = {pid for pid, found in files.items() if found}
    deadline = time.monotonic() + wait_seconds
    while waiting and time.monotonic() < deadline:
        waiting = {pid for pid in waiting if _running(pid)}
        if waiting:
            time.sleep(0.02)
    removed = 0
    for pid, found in files.items():
        if found and pid not in waiting:
            for path in found:
                path.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("removed %d OpenMP registration file(s) of stopped engine processes", removed)


def forget_own_openmp_registration() -> None:
    """Delete this process's own OpenMP registration file, before an exit that skips the runtime's hooks."""
    for path in Path("/dev/shm").glob(f"__KMP_REGISTERED_LIB_{os.getpid()}_*"):
        path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    # A killed worker whose parent (EngineCore) died first is re-parented and may stay a zombie: not running.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def build_scoring_app(engine: Engine, args: Namespace) -> tuple[Any, RerankBackend | None]:
    """vLLM's FastAPI app with its state initialised, and a backend on its scorer (None: model cannot score)."""
    root = logging.getLogger()
    level = root.level
    app = build_app(args, engine.supported_tasks, engine.client.model_config)
    # build_app imports SageMaker's model_hosting_container_standards, which sets the root logger to ERROR and
    # so silences every INFO line of ours (drain progress included).
    root.setLevel(level)
    await init_app_state(engine.client, app.state, args, engine.supported_tasks)
    serving = getattr(app.state, "serving_scores", None)
    return app, RerankBackend(serving) if serving is not None else None


def make_server(
    app: Any, args: Namespace, *, asgi: Any = None, graceful_timeout: float | None = None
) -> uvicorn.Server:
    """The uvicorn server `serve_http` would build for vLLM's `app`, without installing signal handlers.

    `asgi` is what uvicorn calls (default `app`; e.g. `app` inside a middleware). `graceful_timeout` bounds
    uvicorn's own wait for connections and tasks once it is told to exit.
    """
    log_config = get_uvicorn_log_config(args)
    config = uvicorn.Config(
        asgi if asgi is not None else app,
        host=args.host,
        port=args.port,
        log_level=args.uvicorn_log_level,
        access_log=not args.disable_uvicorn_access_log,
        timeout_keep_alive=envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE,
        timeout_graceful_shutdown=graceful_timeout,
        ssl_keyfile=args.ssl_keyfile,
        ssl_certfile=args.ssl_certfile,
        ssl_ca_certs=args.ssl_ca_certs,
        ssl_cert_reqs=args.ssl_cert_reqs,
        ssl_ciphers=args.ssl_ciphers,
        **({"log_config": log_config} if log_config is not None else {}),
    )
    config.h11_max_incomplete_event_size = (
        args.h11_max_incomplete_event_size or H11_MAX_INCOMPLETE_EVENT_SIZE_DEFAULT
    )
    config.h11_max_header_count = args.h11_max_header_count or H11_MAX_HEADER_COUNT_DEFAULT
    config.load()
    server = NoSignalServer(config)
    app.state.server = server  # vLLM's engine-error handler stops the server through it
    return server


def watch_engine(server: uvicorn.Server, engine: Engine) -> Awaitable[None]:
    """vLLM's watchdog: tells the server to exit when the engine has died."""
    return watchdog_loop(server, engine.client)


@dataclass
class BackendReply:
    """vLLM's rerank answer: HTTP status, JSON body, and the prompt length of each input (None: unknown)."""

    status: int
    body: bytes
    prompt_lengths: list[int] | None


class RerankBackend:
    """One call into vLLM's in-process `ServingScores` per rerank (never over HTTP)."""

    def __init__(self, serving: Any) -> None:
        self._serving = serving
        self._prompt_lengths: dict[int, list[int]] = {}
        self.records_prompt_lengths = self._record_prompt_lengths()

    def _record_prompt_lengths(self) -> bool:
        """Keep the prompt length of every input vLLM tokenised for our requests, keyed by request object.

        vLLM computes these lengths anyway (it sums them into `usage.prompt_tokens`); reading them spares the
        truncation metric a second tokenisation. Returns False (after one warning) when this vLLM lacks the
        internals: callers then count truncations by tokenising themselves.
        """
        build = getattr(self._serving, "_build_response", None)
        extract = getattr(self._serving, "_extract_prompt_len", None)
        if build is None or extract is None:
            warn_once(
                "prompt-lengths",
                "vLLM %s: ServingScores has no _build_response/_extract_prompt_len; truncation counts will "
                "tokenise inputs a second time (slower)",
                VLLM_VERSION,
            )
            return False

        def build_response(ctx: Any) -> Any:
            try:
                self._prompt_lengths[id(ctx.request)] = [extract(e["prompts"]) for e in ctx.engine_inputs]
            except (AttributeError, KeyError, TypeError) as exc:
                warn_once(
                    "prompt-lengths-shape",
                    "vLLM %s: cannot read prompt lengths from ServingScores (%s: %s); truncation counts will "
                    "tokenise inputs a second time (slower)",
                    VLLM_VERSION,
                    type(exc).__name__,
                    exc,
                )
            return build(ctx)

        self._serving._build_response = build_response
        return True

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
    ) -> BackendReply:
        """Score documents against the query with vLLM's rerank; results come sorted by score, as vLLM sends."""
        request = RerankRequest(
            query=query,
            documents=documents,
            use_activation=use_activation,
            instruction=instruction,
            truncate_prompt_tokens=truncate_prompt_tokens,
            max_tokens_per_query=max_tokens_per_query,
            max_tokens_per_doc=max_tokens_per_doc,
        )
        try:
            response = await self._serving(request, None)
        finally:
            lengths = self._prompt_lengths.pop(id(request), None)
        return BackendReply(
            status=getattr(response, "status_code", 200), body=response.body, prompt_lengths=lengths
        )
