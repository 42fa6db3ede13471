"""`make demo`, the README's main command: local by default, the cluster path opt-in and explicit about itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from demo import cluster, local

ROOT = Path(__file__).resolve().parents[2]


def test_no_cluster_is_detected_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    assert cluster.cluster_reachable() is False


def test_the_default_never_touches_a_cluster(monkeypatch):
    """`python -m demo` runs the local path even when a cluster would answer."""
    import demo.__main__ as entry

    calls = []
    monkeypatch.setattr(cluster, "run_cluster", lambda **kw: calls.append("cluster"))
    monkeypatch.setattr(entry, "run_local", lambda: calls.append("local"))
    entry.main([])
    assert calls == ["local"]


def test_cluster_path_says_what_it_installs_and_where():
    plan = cluster.install_plan("kind-test")
    assert "'kind-test'" in plan
    assert "helm upgrade --install reranker-operator charts/reranker-operator -n reranker-system" in plan
    assert "examples/cpu-minilm.yaml" in plan and "namespace default" in plan
    assert "helm uninstall reranker-operator -n reranker-system" in plan


def test_cluster_path_without_a_cluster_installs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(SystemExit, match="no reachable Kubernetes cluster"):
        cluster.run_cluster(assume_yes=True)


def test_the_server_package_does_not_import_the_demo():
    server = ROOT / "server" / "reranker_server"
    importing = [
        p.name for p in server.rglob("*.py") if re.search(r"^\s*(from|import) demo\b", p.read_text(), re.M)
    ]
    assert importing == []
    assert not (server / "demo.py").exists() and not (server / "demo_cluster.py").exists()


def test_prints_every_child_of_the_cpu_example(capsys):
    local.print_manifests()
    out = capsys.readouterr().out
    for kind in ("ConfigMap", "Deployment", "Service"):
        assert f"kind: {kind}" in out
    assert "reranker-server" in out and "examples/cpu-minilm.yaml" in out


@pytest.mark.vllm
def test_local_demo_ranks_the_relevant_passages_first():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line[:4].strip().isdigit()]
    ranked = [int(row[2]) for row in rows]
    assert sorted(ranked) == list(range(len(local.DOCUMENTS))), done.stdout[-2000:]
    # Documents 1 and 3 answer the query (init containers waiting for a download Job); the rest do not.
    assert set(ranked[:2]) == {1, 3}, done.stdout[-2000:]
    scores = [float(row[1]) for row in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
