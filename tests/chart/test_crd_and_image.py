"""The chart ships the generated CRD unchanged, and the operator image matches what the chart expects."""

from __future__ import annotations

import re

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from .helpers import KUBE_VERSIONS, OPERATOR_CHART, ROOT, one, render

CRD_NAME = "reranker.dev_rerankerdeployments.yaml"
GENERATED = ROOT / "crds" / CRD_NAME
CHART_COPY = OPERATOR_CHART / "crds" / CRD_NAME
DOCKERFILE = ROOT / "operator" / "Dockerfile"

needs_generated_crd = pytest.mark.skipif(
    not GENERATED.exists(), reason=f"{GENERATED.relative_to(ROOT)} not generated yet (make crds)"
)


@needs_generated_crd
def test_chart_crd_is_the_committed_generated_file():
    assert CHART_COPY.exists(), "run `make crds`: the chart has no copy of the generated CRD"
    assert CHART_COPY.read_text() == GENERATED.read_text(), "the chart's CRD drifted: run `make crds`"


@needs_generated_crd
def test_chart_crd_is_what_the_operator_generates_now():
    crd = pytest.importorskip("reranker_operator.crd", reason="reranker_operator.crd not built yet")
    assert CHART_COPY.read_text() == crd.crd_yaml(), (
        "the CRD is stale against the spec model: run `make crds`"
    )


@needs_generated_crd
def test_helm_installs_the_crd_and_it_validates_strictly():
    with helm.Chart.load(str(OPERATOR_CHART)) as chart:
        crds = chart.crds
    assert [c["filename"].rpartition("/")[2] for c in crds] == [CRD_NAME]
    crd = yaml.safe_load(crds[0]["data"])
    assert crd["metadata"]["name"] == "rerankerdeployments.reranker.dev"
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate.validate(crd, kube_version, strict=True)


def _dockerfile_lines() -> list[str]:
    """Dockerfile instructions, one logical line each (continuations joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _dockerfile_final_stage() -> list[str]:
    """Instructions of the last build stage."""
    lines = _dockerfile_lines()
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def _instruction(stage: list[str], name: str) -> str:
    (line,) = [line for line in stage if line.upper().startswith(name + " ")]
    return line[len(name) + 1 :].strip()


def test_operator_image_runs_as_the_user_the_chart_expects():
    stage = _dockerfile_final_stage()
    uid, _, gid = _instruction(stage, "USER").partition(":")
    pod_security = one(render(OPERATOR_CHART), "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert int(uid) == pod_security["runAsUser"] and int(uid) != 0
    assert int(gid) == pod_security["runAsGroup"]


def test_operator_image_entrypoint_is_the_operator_cli_running_run():
    stage = _dockerfile_final_stage()
    assert _instruction(stage, "ENTRYPOINT") == '["reranker-operator"]'
    assert _instruction(stage, "CMD") == '["run"]'
    container = one(render(OPERATOR_CHART), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container, "the chart keeps the image's ENTRYPOINT"
    assert container["args"][0] == "run"


def test_operator_image_installs_no_server_extras():
    installs = [line for line in _dockerfile_lines() if "pip install" in line or "pip wheel" in line]
    assert installs, "the Dockerfile installs nothing"
    for line in installs:
        assert not re.search(r"\.\[|vllm|torch", line), (
            f"the operator image must not pull vLLM or torch: {line}"
        )
