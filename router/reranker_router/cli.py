"""`reranker-router serve`: the router's main process (see docs/router.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import DEFAULT_CONFIG_PATH, RouterConfig


def build_config(args: argparse.Namespace) -> RouterConfig:
    """The config file (when given, or present at the default path) with the command line's flags on top."""
    path = args.config or (DEFAULT_CONFIG_PATH if Path(DEFAULT_CONFIG_PATH).is_file() else None)
    base = RouterConfig.load(path) if path else RouterConfig()
    return base.with_overrides(
        host=args.host,
        port=args.port,
        backends=args.backend,
        shard_documents=args.shard_documents,
        api_key_file=args.api_key_file,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the router; returns the exit code."""
    parser = argparse.ArgumentParser(prog="reranker-router", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the router")
    serve.add_argument("--config", help=f"router config YAML (default {DEFAULT_CONFIG_PATH} when it exists)")
    serve.add_argument(
        "--backend", action="append", help="a server URL; repeat for several (overrides the file)"
    )
    serve.add_argument("--host", help="address to listen on")
    serve.add_argument("--port", type=int, help="port to listen on")
    serve.add_argument("--shard-documents", type=int, help="split requests with more documents than this")
    serve.add_argument("--api-key-file", help="file with one accepted API key per line")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(asctime)s %(name)s: %(message)s")
    try:
        config = build_config(args)
    except Exception as exc:
        print(f"reranker-router: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if not config.backends and config.discovery is None:
        print(
            "reranker-router: no backends: pass --backend URL or set 'backends' or 'discovery' in the config",
            file=sys.stderr,
        )
        return 2
    if config.scale_from_zero is not None and config.discovery is None:
        print(
            "reranker-router: scale_from_zero needs 'discovery': static backends do not follow the "
            "Deployment's replicas",
            file=sys.stderr,
        )
        return 2
    from .app import serve as run

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
