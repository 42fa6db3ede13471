"""`reranker-server download`: fetch the model into the shared cache once (the operator's download Job).

The pods' init container waits for the marker file `.reranker-complete`, written only after every file arrived.
The marker records model and revision, so a changed model is fetched again; an already complete directory is
used as is, with no network call at all.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .config import ServerConfig

MARKER = ".reranker-complete"


def is_complete(directory: Path, model: str, revision: str | None) -> bool:
    """Whether `directory` holds a finished download of exactly this model and revision."""
    marker = Path(directory) / MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("model") == model and recorded.get("revision") == revision


def write_marker(directory: Path, model: str, revision: str | None) -> Path:
    """Record a finished download (written last, atomically, so a reader never sees a half-written marker)."""
    marker = Path(directory) / MARKER
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"model": model, "revision": revision, "completed_at": int(time.time())}) + "\n"
    )
    os.replace(tmp, marker)
    return marker


def download(cfg: ServerConfig) -> Path:
    """Make `model.download_dir` hold the model; returns the directory. Offline when it is already complete."""
    if not cfg.model.download_dir:
        raise ValueError("model.download_dir is not set: nowhere to download the model to")
    target = Path(cfg.model.download_dir)
    name, revision = cfg.model.name, cfg.model.revision
    if is_complete(target, name, revision):
        return target
    if Path(name).is_dir():
        raise ValueError(f"model.name {name} is a local directory: there is nothing to download")
    from huggingface_hub import snapshot_download

    target.mkdir(parents=True, exist_ok=True)
    (target / MARKER).unlink(missing_ok=True)
    snapshot_download(
        repo_id=name,
        revision=revision,
        local_dir=str(target),
        token=os.environ.get("HF_TOKEN") or None,
        # Weights for other frameworks are never served; skipping them saves most of the download.
        ignore_patterns=["*.onnx", "onnx/*", "*.msgpack", "*.h5", "*.ot", "openvino/*", "*.tflite"],
    )
    if not (target / "config.json").is_file():
        raise RuntimeError(f"download of {name} finished but {target}/config.json is missing")
    write_marker(target, name, revision)
    return target


def run(config_path: str) -> int:
    """CLI entry: download, print where, exit 0; or print a one-line reason and exit 1."""
    try:
        cfg = ServerConfig.load(config_path)
        target = download(cfg)
    except Exception as exc:
        print(f"reranker-server download: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"reranker-server download: {cfg.model.name} is complete in {target}", flush=True)
    return 0
