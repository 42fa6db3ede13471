"""The `reranker-operator` CLI: crd, render (offline, exit 2 on a bad spec) and run (delegates to runner)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import yaml
from reranker_operator.cli import main
from reranker_operator.crd import crd_yaml, reference_markdown
from rrd_helpers import EXAMPLES_DIR


def test_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crd_yaml()
    assert main(["crd", "--reference"]) == 0
    assert capsys.readouterr().out == reference_markdown()


def test_render_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(EXAMPLES_DIR / "cpu-minilm.yaml"), "-n", "search"]) == 0
    manifests = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [m["kind"] for m in manifests] == [
        *["ConfigMap"] * 3,  # server, clients, router
        *["Deployment"] * 2,  # server, router
        *["Service"] * 2,  # <name> (the router), <name>-pods (headless)
        "PodDisruptionBudget",  # router
    ]
    assert {m["metadata"]["namespace"] for m in manifests} == {"search"}
    assert all("ownerReferences" not in m["metadata"] for m in manifests)


def test_render_uses_the_object_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(EXAMPLES_DIR / "qwen3-reranker-gpu.yaml")]) == 0
    assert {m["metadata"]["namespace"] for m in yaml.safe_load_all(capsys.readouterr().out)} == {"ragflow"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: reranker.dev/v1alpha1\nkind: RerankerDeployment\nmetadata: {name: x}\n"
            "spec: {model: {name: m}, autoscaling: {minReplicas: 4, maxReplicas: 2}}\n",
            "minReplicas (4) is greater than maxReplicas (2)",
        ),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "expected exactly one RerankerDeployment"),
        (
            "apiVersion: reranker.dev/v1\nkind: RerankerDeployment\nmetadata: {name: x}\nspec: {}\n",
            "apiVersion must be reranker.dev/v1alpha1",
        ),
        (
            "apiVersion: reranker.dev/v1alpha1\nkind: RerankerDeployment\nspec: {model: {name: m}}\n",
            "metadata.name",
        ),
    ],
    ids=["bad-spec", "wrong-kind", "wrong-version", "no-name"],
)
def test_render_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["render", "-f", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_render_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_run_delegates_to_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = types.ModuleType("reranker_operator.runner")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "reranker_operator.runner", fake)
    assert main(["run", "--standalone", "-n", "ai"]) == 0
    assert calls == [["--standalone", "-n", "ai"]]


def test_render_prints_no_yaml_anchors(capsys: pytest.CaptureFixture[str]) -> None:
    """Shared sub-objects (the NetworkPolicy's ports) are written out in full: users copy from this output."""
    assert main(["render", "-f", str(EXAMPLES_DIR / "qwen3-reranker-production.yaml")]) == 0
    out = capsys.readouterr().out
    assert "&id0" not in out and "*id0" not in out
    assert any(m["kind"] == "NetworkPolicy" for m in yaml.safe_load_all(out))


def test_run_starts_kopf_on_uvloop_with_capped_malloc_arenas(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop and the arena cap measured in bench/results/reconcile.md are what `run` really uses."""
    import logging

    import kopf
    import uvloop
    from reranker_operator import runner

    seen: dict = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **_: None)  # no logging set-up inside the test process
    monkeypatch.setattr(runner, "limit_malloc_arenas", lambda: seen.setdefault("arenas_capped", True))
    assert runner.main(["--metrics-port", "0"]) == 0
    try:
        assert isinstance(seen["loop"], uvloop.Loop)
        assert seen["arenas_capped"] is True
    finally:
        seen["loop"].close()
        logging.getLogger("kopf.objects").removeFilter(runner.quiet_routine_successes)


def test_malloc_arena_cap_is_accepted_by_glibc() -> None:
    import platform

    from reranker_operator.runner import limit_malloc_arenas

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt(M_ARENA_MAX) is glibc's; other C libraries are left alone")
    assert limit_malloc_arenas() is True
