"""`reranker-server serve`: vLLM's engine and FastAPI app in this process, with our routes, drained on SIGTERM.

The story of a start: load the config, find the model on disk, read its config.json, pick the family and check
the configuration against the model (before vLLM starts, so mistakes get a clear message), tune the CPU, start
vLLM's engine and build vLLM's app (all through `vllm_bridge`, the only module that imports vLLM), strip every
vLLM route that scores or tokenises, mount ours (`http.install`) and `/ready`, then serve. Any failure before
serving is one paragraph on stderr and in the termination log, and exit code 1. A stop signal while the model
loads exits at once; once serving, `lifecycle.Lifecycle` drains the HTTP server first and the engine stops last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .config import SHUTDOWN_MARGIN_SECONDS, TERMINATION_LOG, ServerConfig
from .download import is_complete
from .lifecycle import Drain, DrainMiddleware, Lifecycle, exit_with_descendants, stop_signals_abandon_loading
from .profiles import TEMPLATE_DIR, Family, build_vllm_args, check_compatibility

log = logging.getLogger("reranker_server.engine")

TERMINATION_LOG_ENV = "RERANKER_TERMINATION_LOG"
# vLLM routes that stay: probes, version, load and metrics. Everything else vLLM mounts (its own rerank/score,
# /v1/models, /pooling, /classify, /tokenize, /detokenize, /invocations, ...) is removed: scoring and
# tokenising go only through our routes, behind our API-key middleware.
VLLM_ROUTES_KEPT = frozenset({"/health", "/ping", "/version", "/load", "/metrics"})

GOLDEN_QUERY = "What is the capital of France?"
GOLDEN_DOCUMENTS = (
    "Paris is the capital and largest city of France.",
    "Bananas are a good source of potassium and grow in tropical climates.",
    "The guitar is a string instrument played with the fingers or a pick.",
)
GOLDEN_RELEVANT = 0


class StartupError(Exception):
    """A reason the server cannot start, worded for the person reading the pod's status."""


def termination_log_path() -> str:
    """Where Kubernetes reads the termination message (overridable for tests)."""
    return os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG)


def report_startup_failure(message: str) -> None:
    """Write the one-paragraph reason to stderr and to the termination log."""
    paragraph = " ".join(message.split())
    print(f"reranker-server: cannot start: {paragraph}", file=sys.stderr, flush=True)
    try:
        Path(termination_log_path()).write_text(paragraph + "\n")
    except OSError as exc:  # not in Kubernetes, or a read-only path: stderr already has it
        print(f"reranker-server: could not write the termination log: {exc}", file=sys.stderr, flush=True)


def resolve_model_dir(cfg: ServerConfig) -> Path:
    """The directory holding the model's config.json and weights.

    In order: `model.name` as a local directory; `model.download_dir` once `reranker-server download` finished
    there; the Hugging Face cache (offline); a download into the cache when the hub may be reached.
    """
    name = cfg.model.name
    local = Path(name)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise StartupError(f"model directory {name} has no config.json")
        return local
    if cfg.model.download_dir:
        target = Path(cfg.model.download_dir)
        if is_complete(target, name, cfg.model.revision):
            return target
        raise StartupError(
            f"model {name} is not downloaded into {target} yet (no completed download marker); "
            "the download Job has not finished or failed"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, revision=cfg.model.revision, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise StartupError(
            f"model {name} is not a local directory and is not in the Hugging Face cache, and HF_HUB_OFFLINE "
            "is set; mount the model or use the operator's model cache"
        )
    try:
        return Path(snapshot_download(name, revision=cfg.model.revision, token=os.environ.get("HF_TOKEN")))
    except Exception as exc:
        raise StartupError(f"could not download model {name}: {type(exc).__name__}: {exc}") from exc


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """The model's config.json as a dict."""
    path = model_dir / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StartupError(f"cannot read {path}: {exc}") from exc


@dataclass(frozen=True)
class LaunchPlan:
    """Everything decided before vLLM is imported."""

    cfg: ServerConfig
    model_dir: Path
    family: Family
    vllm_args: list[str]


def plan_launch(
    cfg: ServerConfig,
    model_dir: Path,
    model_config: dict[str, Any],
    *,
    cpuinfo: str,
    bf16_speedup: Callable[[], float] | None = None,
) -> LaunchPlan:
    """Check the configuration against the model and compute vLLM's arguments (raises on a bad fit).

    Pure but for `bf16_speedup`, the CPU probe asked only when dtype "auto" on a bfloat16-capable CPU needs it
    (default: `cpu.measure_bf16_speedup`).
    """
    from .cpu import choose_dtype, measure_bf16_speedup

    family = check_compatibility(cfg, model_config, TEMPLATE_DIR)
    if cfg.engine.device == "cpu":
        dtype = choose_dtype(cfg.engine.dtype, cpuinfo, bf16_speedup or measure_bf16_speedup)
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"dtype": dtype})})
    args = build_vllm_args(cfg, model_config, TEMPLATE_DIR, model_path=str(model_dir))
    return LaunchPlan(cfg=cfg, model_dir=model_dir, family=family, vllm_args=args)


def check_golden(scores: list[float], *, ranking: bool) -> str | None:
    """Why the golden rerank fails, or None when it passes.

    Always: finite scores that are not all equal (a broken head or a missing template gives constants).
    With `ranking` (real models): the relevant document scores above every irrelevant one.
    """
    if len(scores) != len(GOLDEN_DOCUMENTS):
        return f"expected {len(GOLDEN_DOCUMENTS)} scores, got {len(scores)}"
    if not all(math.isfinite(s) for s in scores):
        return f"non-finite scores {scores}"
    if max(scores) == min(scores):
        return f"all scores are equal ({scores[0]})"
    if ranking:
        relevant = scores[GOLDEN_RELEVANT]
        if any(s >= relevant for i, s in enumerate(scores) if i != GOLDEN_RELEVANT):
            return f"the relevant document does not rank first: scores {scores}"
    return None


@dataclass
class Readiness:
    """Ready once the model is loaded and the golden rerank passed; `/ready` reports it."""

    ranking: bool
    ready: bool = False
    reason: str = "the golden rerank has not run yet"
    details: dict[str, Any] = field(default_factory=dict)
    # Whether the engine still runs; a dead engine makes a ready pod unready (and /health fails too).
    engine_alive: Callable[[], bool] = lambda: True
    # Whether the server is draining after SIGTERM: unready at once, so the pod leaves every endpoint list.
    draining: Callable[[], bool] = lambda: False

    async def run(self, scorer: Any, attempts: int = 3) -> None:
        """Run the golden rerank through the scorer (retrying errors a few times) and record the outcome."""
        for attempt in range(1, attempts + 1):
            try:
                result = await scorer.rerank(GOLDEN_QUERY, list(GOLDEN_DOCUMENTS))
            except Exception as exc:
                self.reason = f"golden rerank failed (attempt {attempt}): {type(exc).__name__}: {exc}"
                log.warning(self.reason)
                await asyncio.sleep(attempt)
                continue
            problem = check_golden(result.scores, ranking=self.ranking)
            self.details = {
                "model": scorer.served_name,
                "family": scorer.family,
                "max_model_len": scorer.max_model_len,
                "golden_scores": result.scores,
                "golden_check": "ranking" if self.ranking else "finite",
            }
            if problem is None:
                self.ready, self.reason = True, "ready"
                log.info("ready: golden rerank passed with scores %s", result.scores)
            else:
                self.reason = f"golden rerank check failed: {problem}"
                log.error(self.reason)
            return

    def response(self) -> tuple[int, dict[str, Any]]:
        """HTTP status and body for `/ready`."""
        if self.draining():
            return 503, {"status": "not ready", "reason": "shutting down", **self.details}
        if self.ready and not self.engine_alive():
            return 503, {"status": "not ready", "reason": "the vLLM engine has died", **self.details}
        if self.ready:
            return 200, {"status": "ready", **self.details}
        return 503, {"status": "not ready", "reason": self.reason, **self.details}


def mount_ready(app: Any, readiness: Readiness) -> None:
    """Add `GET /ready` (open to probes, like `/health`)."""
    from fastapi.responses import JSONResponse

    async def ready() -> JSONResponse:
        status, body = readiness.response()
        return JSONResponse(body, status_code=status)

    app.add_api_route("/ready", ready, methods=["GET"], include_in_schema=False)


def strip_vllm_routes(app: Any) -> list[str]:
    """Remove every vLLM route except the probes, version, load and metrics; returns the removed paths."""
    kept, removed = [], []
    docs = {
        app.openapi_url,
        app.docs_url,
        app.redoc_url,
        getattr(app, "swagger_ui_oauth2_redirect_url", None),
    }
    for route in app.router.routes:
        path = getattr(route, "path", None)
        if path in VLLM_ROUTES_KEPT or path in docs:
            kept.append(route)
        else:
            removed.append(str(path))
    app.router.routes[:] = kept
    return removed


def serve(cfg: ServerConfig, argv: list[str]) -> int:
    """Run the server until it is stopped; returns the exit code (1 with a reported reason on startup failure).

    `cfg` comes from the config file and the command line (`cli.serve_config`). `argv` are this program's own
    arguments, used to re-exec once with Intel OpenMP preloaded on CPU.

    After a served run that drained and stopped vLLM's engine, the process exits here (`_exit_now`).
    """
    try:
        model_dir = resolve_model_dir(cfg)
        plan = plan_launch(cfg, model_dir, read_model_config(model_dir), cpuinfo=_read("/proc/cpuinfo"))
    except Exception as exc:
        report_startup_failure(str(exc))
        return 1
    from . import cpu

    cpu.apply(plan.cfg.engine, decoder=plan.family.uses_template, argv=argv)
    log.info("family %s; vLLM arguments: %s", plan.family.name, " ".join(plan.vllm_args))
    started = {"serving": False}
    try:
        import uvloop

        uvloop.run(_serve(plan, started))
    except KeyboardInterrupt as exc:
        if not started["serving"]:
            log.warning("stopped by %s while loading the model; exiting before serving", exc or "a signal")
        return 0
    except Exception as exc:
        if started["serving"]:
            raise
        if _ABANDONING.is_set():
            # A stop signal abandons the start from the relay thread, which kills the engine processes: the
            # engine's start then fails here. That is the requested stop, not a startup failure; the relay
            # thread exits the process once the engine processes are gone.
            _ABANDONING_DONE.wait(timeout=30)
            _exit_now(0)
        report_startup_failure(
            f"vLLM could not start {cfg.model.name} (family {plan.family.name}): {type(exc).__name__}: {exc}. "
            "The engine's own error is in the container log just above."
        )
        return 1
    _exit_now(0)


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown, once the drain and vLLM's engine shutdown have both run.

    Tearing down torch and vLLM's modules takes seconds on a busy CPU and runs nothing that still matters
    (the engine processes are stopped and their files removed); the pod should be gone by then.
    """
    bridge = sys.modules.get(f"{__package__}.vllm_bridge")
    if bridge is not None:
        bridge.forget_own_openmp_registration()  # what the OpenMP runtime's exit hook would have done
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# Set by the signal relay thread while it abandons a start, and once it has stopped the engine processes.
_ABANDONING = threading.Event()
_ABANDONING_DONE = threading.Event()


def _abandon_loading(signal_name: str) -> None:
    """Stop a start that a signal cut short: end the engine processes, then exit (runs in the relay thread).

    Nothing is loaded that needs a graceful stop, and EngineCore may be spawning its worker right now: freeze
    every descendant first (a stopped process cannot start another), until no new one appears, then kill them.
    """
    _ABANDONING.set()
    log.warning("stopped by %s while loading the model; exiting before serving", signal_name)
    frozen: dict[int, psutil.Process] = {}
    while new := [p for p in psutil.Process().children(recursive=True) if p.pid not in frozen]:
        for process in new:
            # Python's resource tracker cleans up our shared memory once we are gone: leave it running.
            if "resource_tracker" not in " ".join(_cmdline(process)):
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.suspend()
            frozen[process.pid] = process
    engine = [p for p in frozen.values() if "resource_tracker" not in " ".join(_cmdline(p))]
    for process in engine:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(engine, timeout=2)
    bridge = sys.modules.get(f"{__package__}.vllm_bridge")
    if bridge is not None:
        bridge.remove_openmp_registrations([p.pid for p in engine], wait_seconds=0.5)
    _ABANDONING_DONE.set()
    _exit_now(0)


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


async def _serve(plan: LaunchPlan, started: dict[str, bool]) -> None:
    """Start vLLM's engine and app through the bridge, add our routes, serve until stopped, drain, stop."""
    # Until the server serves, a stop signal abandons the start at once.
    loading = contextlib.ExitStack()
    loading.enter_context(stop_signals_abandon_loading(_abandon_loading))
    try:
        await _load_and_serve(plan, started, loading)
    finally:
        loading.close()


async def _load_and_serve(plan: LaunchPlan, started: dict[str, bool], loading: contextlib.ExitStack) -> None:
    from . import http
    from . import vllm_bridge as vllm
    from .scoring import VllmScorer

    cfg = plan.cfg
    args = vllm.parse_args(plan.vllm_args)
    sock = vllm.bind_socket(args)
    try:
        async with vllm.run_engine(args) as engine:
            app, backend = await vllm.build_scoring_app(engine, args)
            if backend is None:
                raise StartupError(
                    f"vLLM loaded {cfg.model.name} but offers no scoring for it (tasks "
                    f"{list(engine.supported_tasks)}); it is not a one-logit reranker or an embedding model "
                    "under this family's settings"
                )
            removed = strip_vllm_routes(app)
            log.info("removed vLLM routes: %s", ", ".join(removed))
            chat_template = (
                (TEMPLATE_DIR / plan.family.template).read_text() if plan.family.template else None
            )
            scorer = VllmScorer(
                backend,
                engine.tokenizer,
                family=plan.family,
                served_name=cfg.model.served_name,
                model_names=frozenset({cfg.model.served_name, cfg.model.name, str(plan.model_dir)}),
                max_model_len=engine.max_model_len,
                default_instruction=cfg.model.instruction,
                chat_template=chat_template,
            )
            drain = Drain(cfg.shutdown.drain_seconds)
            readiness = Readiness(
                ranking=cfg.model.readiness_check == "ranking",
                engine_alive=engine.alive,
                draining=lambda: drain.draining,
            )
            mount_ready(app, readiness)
            http.install(app, scorer, cfg)
            app.state.reranker_scorer = scorer
            app.state.reranker_readiness = readiness
            server = vllm.make_server(
                app, args, asgi=DrainMiddleware(app, drain), graceful_timeout=SHUTDOWN_MARGIN_SECONDS
            )
            lifecycle = Lifecycle(server, drain, on_forced=exit_with_descendants)
            golden = asyncio.get_running_loop().create_task(readiness.run(scorer))
            loading.close()  # from here on, stop signals drain (Lifecycle)
            started["serving"] = True
            try:
                await lifecycle.run([sock], watchdog=vllm.watch_engine(server, engine))
            finally:
                golden.cancel()
            log.info("HTTP server stopped; stopping the vLLM engine")
        log.info("vLLM engine stopped")
    finally:
        sock.close()
