"""The router as users run it: its own process, its own imports, its signals."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
import tomllib
from reranker_router.config import DEFAULT_CONFIG_PATH

sys.path.insert(0, str(Path(__file__).parent))

from processes import start_router  # noqa: E402

# The only server modules the router may import: the vLLM-free contract its image copies (router/Dockerfile).
CONTRACT_MODULES = {
    "reranker_server",
    "reranker_server.dialects",
    "reranker_server.jsonbody",
    "reranker_server.auth",
}


def test_the_router_imports_without_vllm_or_torch_and_only_the_server_contract() -> None:
    code = (
        "import sys, reranker_router.app, reranker_router.cli;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('vllm', 'torch', 'fastapi')];"
        "server = sorted(m for m in sys.modules if m.startswith('reranker_server'));"
        "print(bad); print(server)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    bad, server = out.splitlines()
    assert bad == "[]"
    assert set(eval(server)) <= CONTRACT_MODULES  # noqa: S307 (our own printed list)


def _slow_backend() -> tuple[str, threading.Event, object]:
    """A backend (stdlib HTTP server in a thread) that holds each /score request until `release` is set."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            release.wait(10)
            reply = json.dumps(
                {"data": [{"index": i, "score": 0.5} for i in range(len(body["text_2"]))], "usage": {}}
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", release, server


def test_sigterm_drains_then_exits_and_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    url, release, backend = _slow_backend()
    router = start_router(tmp_path, [url])
    try:
        results: list[requests.Response] = []
        in_flight = threading.Thread(
            target=lambda: results.append(
                requests.post(
                    router.url + "/rerank", json={"query": "q", "documents": ["a", "b"]}, timeout=30
                )
            )
        )
        in_flight.start()
        idle = socket.create_connection(("127.0.0.1", int(router.url.rsplit(":", 1)[1])))
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: router\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += idle.recv(4096)
        assert b"200 OK" in first  # an open, idle keep-alive connection
        session = requests.Session()
        time.sleep(0.3)
        router.process.send_signal(signal.SIGTERM)
        start = time.monotonic()
        while session.get(router.url + "/ready").status_code != 503:
            assert time.monotonic() - start < 1
        ready_503_after = time.monotonic() - start
        idle.settimeout(max(0.05, 1 - (time.monotonic() - start)))
        assert idle.recv(4096) == b"", "the idle keep-alive connection must be closed within 1 s"
        idle.close()
        late = session.post(router.url + "/rerank", json={"query": "q", "documents": ["c"]}, timeout=30)
        assert router.process.poll() is None, "the router must wait for the request it accepted"
        release.set()
        in_flight.join(10)
        assert [r.status_code for r in results] == [200]
        assert late.status_code == 200 and late.headers["connection"] == "close"
        assert router.process.wait(timeout=5) == 0
        assert ready_503_after < 0.5
    finally:
        release.set()
        router.stop()

    release.clear()
    router = start_router(tmp_path, [url])
    try:
        stuck = threading.Thread(
            target=lambda: requests.post(
                router.url + "/rerank", json={"query": "q", "documents": ["a"]}, timeout=30
            ),
            daemon=True,
        )
        stuck.start()
        time.sleep(0.3)
        router.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        start = time.monotonic()
        router.process.send_signal(signal.SIGTERM)
        router.process.wait(timeout=2)
        assert time.monotonic() - start < 2
    finally:
        release.set()
        router.stop()
        backend.shutdown()


ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "router" / "Dockerfile"


def _dockerfile_lines() -> list[str]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_image_holds_what_the_router_imports_and_nothing_of_vllm(tmp_path: Path) -> None:
    """Lay out /opt/app as the Dockerfile's COPY lines do and import the router from there alone."""
    lines = _dockerfile_lines()
    for line in lines:
        if "pip install" in line:
            assert not re.search(r"vllm|torch|\.\[", line), line
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["router"]
    assert not [dep for dep in extra if re.match(r"(vllm|torch|fastapi|kopf|kubernetes)\b", dep)]
    app = tmp_path / "opt-app"
    for line in lines:
        parts = line.split()
        if parts[0] == "COPY" and not parts[1].startswith("--from") and parts[-1].startswith("/opt/app/"):
            target = app / parts[-1].removeprefix("/opt/app/")
            for source in parts[1:-1]:
                source_path = ROOT / source
                if source_path.is_dir():
                    shutil.copytree(source_path, target, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(source_path, target)
    copied = {p.stem for p in (app / "reranker_server").glob("*.py")}
    assert {
        f"reranker_server.{m}" if m != "__init__" else "reranker_server" for m in copied
    } == CONTRACT_MODULES
    code = "import reranker_router.app, reranker_router.cli, reranker_router.scaler, sys; assert 'vllm' not in sys.modules"
    env = {"PYTHONPATH": str(app), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tmp_path)
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    (user,) = [line.split()[1] for line in final if line.startswith("USER ")]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0
    (entry,) = [line for line in final if line.startswith("ENTRYPOINT ")]
    assert json.loads(entry.removeprefix("ENTRYPOINT ")) == ["reranker-router"]
    (cmd,) = [line for line in final if line.startswith("CMD ")]
    assert json.loads(cmd.removeprefix("CMD ")) == ["serve", "--config", DEFAULT_CONFIG_PATH]


def test_replicas_found_through_dns_serve_requests(tmp_path: Path) -> None:
    """`discovery` resolves a name to the replicas (here `localhost`, in a cluster a headless Service)."""
    url, release, backend = _slow_backend()
    release.set()
    port = int(url.rsplit(":", 1)[1])
    config = tmp_path / "router.yaml"
    config.write_text(f"discovery: {{service: localhost, port: {port}, interval_seconds: 0.2}}\n")
    router = start_router(tmp_path, [], config=str(config))
    try:
        reply = requests.post(
            router.url + "/rerank", json={"query": "q", "documents": ["a", "b"]}, timeout=30
        )
        assert reply.status_code == 200 and len(reply.json()["results"]) == 2
        metrics = requests.get(router.url + "/metrics").text
        assert f'reranker_router_replica_pairs_in_flight{{replica="http://127.0.0.1:{port}"}}' in metrics
    finally:
        router.stop()
        backend.shutdown()
