"""The reranker chart: values -> one RerankerDeployment the operator accepts."""

from __future__ import annotations

import helm_python as helm
import jsonschema
import pytest
import reranker_operator
import yaml

from .helpers import LINT_WARNING, RERANKER_CHART, ROOT, load_values, one, render, render_notes, values_files

VALUES_FILES = values_files(RERANKER_CHART)
VALUES_IDS = ["default" if p is None else p.name for p in VALUES_FILES]
CRD_FILE = ROOT / "crds" / "reranker.dev_rerankerdeployments.yaml"


def load_spec(spec: dict):
    """The operator's own validation (pydantic model + semantic checks); skipped until it exists."""
    validation = pytest.importorskip(
        "reranker_operator.render.validation", reason="operator validation not built"
    )
    return validation.load_spec(spec)


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_lint_strict_is_clean(values_file):
    result = helm.lint(str(RERANKER_CHART), load_values(values_file), strict=True, kube_version="v1.30.0")
    problems = [m for m in result["messages"] if m["severity"] >= LINT_WARNING]
    assert result["errors"] == [] and problems == [], problems or result["errors"]


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_renders_one_reranker_deployment_the_operator_accepts(values_file):
    values = load_values(values_file)
    rrd = one(render(RERANKER_CHART, values, name="search", namespace="ragflow"), "RerankerDeployment")
    assert rrd["apiVersion"] == reranker_operator.API_VERSION
    assert rrd["kind"] == reranker_operator.KIND
    assert rrd["metadata"]["namespace"] == "ragflow"
    assert rrd["metadata"]["name"] == (values.get("fullnameOverride") or "search")
    assert rrd["spec"]["model"]["name"] == (
        values.get("spec", {}).get("model", {}).get("name") or "Qwen/Qwen3-Reranker-0.6B"
    )
    load_spec(rrd["spec"])


@pytest.mark.skipif(
    not CRD_FILE.exists(), reason="crds/reranker.dev_rerankerdeployments.yaml not generated yet"
)
@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_rendered_spec_matches_the_crd_schema(values_file):
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == reranker_operator.VERSION]
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rrd = one(render(RERANKER_CHART, load_values(values_file)), "RerankerDeployment")
    jsonschema.Draft7Validator(spec_schema).validate(rrd["spec"])


def test_values_files_do_not_inherit_each_others_spec():
    """Helm deep-merges maps: the defaults must not leak a GPU-only block into a CPU values file."""
    cpu = load_values(RERANKER_CHART / "ci" / "cpu-minilm-values.yaml")
    rrd = one(render(RERANKER_CHART, cpu), "RerankerDeployment")
    assert rrd["spec"] == cpu["spec"]


def test_user_labels_and_annotations_are_applied():
    values = {"labels": {"team": "search"}, "annotations": {"argocd.argoproj.io/sync-wave": "1"}}
    rrd = one(render(RERANKER_CHART, values), "RerankerDeployment")
    assert rrd["metadata"]["labels"]["team"] == "search"
    assert rrd["metadata"]["annotations"] == {"argocd.argoproj.io/sync-wave": "1"}
    assert "app.kubernetes.io/managed-by" not in rrd["metadata"]["labels"]


@pytest.mark.parametrize(
    ("values", "release", "message"),
    [
        (
            {},
            "Search_1",
            'the reranker name "Search_1" (release name or fullnameOverride) must be a DNS label',
        ),
        ({}, "r" * 53, "is longer than 52 characters"),
    ],
    ids=["not-dns", "too-long"],
)
def test_bad_names_fail_with_a_reason(values, release, message):
    with pytest.raises(helm.HelmError) as excinfo:
        render(RERANKER_CHART, values, name=release)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"spec": {"model": "Qwen/Qwen3-Reranker-0.6B"}}, "'/spec/model': got string, want object"),
        ({"spec": {"model": {"name": ""}}}, "'/spec/model/name': minLength: got 0, want 1"),
        ({"fullnameOverride": "Qwen"}, "'/fullnameOverride': 'Qwen' does not match pattern"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
    ],
    ids=["model-not-object", "empty-model", "bad-name", "spec-key-at-top"],
)
def test_schema_rejects_bad_values_with_a_clear_message(values, message):
    with helm.Chart.load(str(RERANKER_CHART)) as chart:
        with pytest.raises(helm.HelmValuesError) as excinfo:
            chart.validate_schema(chart.merge_values(values))
    assert message in str(excinfo.value)


def test_notes_give_the_ragflow_settings():
    notes = render_notes(
        RERANKER_CHART, load_values(RERANKER_CHART / "ci" / "gpu-qwen3-values.yaml"), name="qwen"
    )
    assert "base URL http://qwen.rr-system.svc:8000, model name qwen3-reranker" in notes
    assert "get configmap qwen-clients" in notes
