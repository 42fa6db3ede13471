"""The real `python -m reranker_router serve` as a child process (what the router's image runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

SERVER_TESTS = Path(__file__).parent.parent / "server"
sys.path.insert(0, str(SERVER_TESTS))

from servers import free_port  # noqa: E402


@dataclass
class RouterProcess:
    """A running router: its URL, process and log."""

    url: str
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_router(
    tmp: Path,
    backends: list[str],
    *args: str,
    config: str | None = None,
    launcher: tuple[str, ...] = ("-m", "reranker_router"),
    env: dict[str, str] | None = None,
) -> RouterProcess:
    """Start the router on a free port in front of `backends` and wait for `/ready`.

    `launcher` is what follows the Python executable (a test's wrapper script); `env` replaces the environment.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, *launcher, "serve", "--host", "127.0.0.1", "--port", str(port)]
    for url in backends:
        command += ["--backend", url]
    if config:
        command += ["--config", config]
    log = tmp / f"router-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, *args], stdout=out, stderr=subprocess.STDOUT, env=env or dict(os.environ)
        )
    router = RouterProcess(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"router exited with {process.returncode}:\n{router.log_text()}")
        try:
            if requests.get(router.url + "/ready", timeout=1).status_code == 200:
                return router
        except requests.RequestException:
            pass
        time.sleep(0.1)
    router.stop()
    raise AssertionError(f"router not ready in 60 s:\n{router.log_text()}")
