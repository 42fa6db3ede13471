"""`reranker-operator run`: start kopf with this operator's handlers."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Sequence

import kopf

from reranker_operator.handlers import OperatorOptions, build_registry


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options of `reranker-operator run`."""
    parser = argparse.ArgumentParser(prog="reranker-operator run", description=__doc__)
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable, globs allowed); default: all namespaces",
    )
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL")
    parser.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics port (0: off)")
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=30.0,
        help="re-check children of idle objects this often (drift repair, status refresh)",
    )
    parser.add_argument(
        "--peering",
        default=None,
        help="kopf peering object for hot standby; default: standalone (run one replica)",
    )
    parser.add_argument("--priority", type=int, default=0, help="peering priority (distinct per replica)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if args.resync_seconds <= 0:
        parser.error("--resync-seconds must be positive")
    return args


def quiet_routine_successes(record: logging.LogRecord) -> bool:
    """Drop kopf's success line of every resync tick and child event (thousands a minute at scale)."""
    message = record.getMessage()
    return message != "Timer 'resync' succeeded."


# glibc's mallopt parameter number for the arena limit (malloc.h).
M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before any thread starts; False where the C library is not glibc.

    glibc gives threads their own arenas (up to 8 per core): kopf's handler threads each filled one with the
    JSON of the children they applied, and memory freed in one arena is never reused by another, so the
    operator's RSS kept the high-water mark of every thread (bench/results/reconcile.md)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def event_loop() -> asyncio.AbstractEventLoop | None:
    """uvloop's event loop where it is installed (kopf's own CLI does the same); None: asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the operator until SIGTERM/SIGINT."""
    args = parse_args(argv)
    # log_prefix: every line about an object starts with [namespace/name], as kopf's own CLI does.
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.FULL, log_prefix=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(quiet_routine_successes)
    options = OperatorOptions(
        resync_seconds=args.resync_seconds,
        metrics_port=args.metrics_port or None,
        namespaces=tuple(args.namespace),
    )
    limit_malloc_arenas()
    kopf.run(
        loop=event_loop(),
        registry=build_registry(options),
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0
