"""Start and stop real `reranker-server serve` processes (importable by other test folders, e.g. tests/router).

`start_server` waits until `/ready` answers 200 and fails the test with the log's tail otherwise; `stop_server`
SIGTERMs the whole process group (vLLM's engine core included).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

READY_TIMEOUT_S = 480
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


def start_server(
    tmp: Path,
    config: dict[str, Any],
    api_key: str | None = None,
    prefix: tuple[str, ...] = (),
    port: int | None = None,
) -> RunningServer:
    """Start `reranker-server serve` and wait until /ready answers 200 (fails with the log tail otherwise).

    `prefix` goes before the command, e.g. ("taskset", "-c", "0") to pin the server (children included);
    `port` restarts a server where a client already expects it (default: a free port).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = {**config, "host": "127.0.0.1", "port": port}
    if api_key:
        key_file = tmp / "api-keys"
        key_file.write_text(api_key + "\n")
        config["auth"] = {"api_key_file": str(key_file)}
    path = write_config(tmp, config)
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "reranker_server", "serve", "--config", str(path)],
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


def tiny_ce_config(model_path: Path, served_name: str = "tiny-ce") -> dict[str, Any]:
    """The tiny BERT cross-encoder on vLLM-CPU, eager, small KV cache, random weights ("finite" readiness)."""
    return {
        "model": {
            "name": str(model_path),
            "served_name": served_name,
            "max_model_len": CE_MAX_MODEL_LEN,
            "readiness_check": "finite",
        },
        "engine": {"device": "cpu", "enforce_eager": True, "cpu_kvcache_space_gib": 1},
    }
