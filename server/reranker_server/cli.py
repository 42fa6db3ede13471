"""`reranker-server`: `serve` (the pod's main process) and `download` (the model cache Job)."""

from __future__ import annotations

import argparse
import logging
import sys

from .config import DEFAULT_CONFIG_PATH


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="reranker-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the reranker server"),
        ("download", "fetch the model into model.download_dir"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--config",
            default=DEFAULT_CONFIG_PATH,
            help=f"server config YAML (default {DEFAULT_CONFIG_PATH})",
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(asctime)s %(name)s: %(message)s")
    if args.command == "download":
        from .download import run

        return run(args.config)
    from .engine import serve

    return serve(args.config, argv)


if __name__ == "__main__":
    sys.exit(main())
