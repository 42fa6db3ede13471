"""`make demo`, the README's main command: its cluster probe, its manifest listing and a full local run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from reranker_server import demo
from reranker_server.demo_cluster import cluster_reachable


def test_no_cluster_is_detected_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    assert cluster_reachable() is False


def test_prints_every_child_of_the_cpu_example(capsys):
    demo._print_manifests()
    out = capsys.readouterr().out
    for kind in ("ConfigMap", "Deployment", "Service"):
        assert f"kind: {kind}" in out
    assert "reranker-server" in out and "examples/cpu-minilm.yaml" in out


@pytest.mark.vllm
def test_local_demo_ranks_the_relevant_passages_first():
    env = {**os.environ, "DEMO_CLUSTER": "0", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "reranker_server.demo"], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line[:4].strip().isdigit()]
    ranked = [int(row[2]) for row in rows]
    assert sorted(ranked) == list(range(len(demo.DOCUMENTS))), done.stdout[-2000:]
    # Documents 1 and 3 answer the query (init containers waiting for a download Job); the rest do not.
    assert set(ranked[:2]) == {1, 3}, done.stdout[-2000:]
    scores = [float(row[1]) for row in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
