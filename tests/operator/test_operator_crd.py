"""The generated CRD: committed file in sync, strictly valid, structural, and agreeing with the examples."""

from __future__ import annotations

import os
from typing import Any

import kubernetes_validate
import pytest
from reranker_operator import GROUP, PLURAL
from reranker_operator.crd import build_crd, crd_yaml, reference_markdown
from rrd_helpers import EXAMPLES, ROOT, closed_validator, crd_schema, load_example, spec_cel_violations

CRD_FILE = ROOT / "crds" / f"{GROUP}_{PLURAL}.yaml"
REFERENCE_FILE = ROOT / "docs" / "crd-reference.md"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
KUBE_VERSIONS = sorted(
    {
        v.rsplit(".", 1)[0]
        for v in kubernetes_validate.utils.all_versions()
        if tuple(map(int, v.split(".")[:2])) >= (1, 30)
    },
    key=lambda v: tuple(map(int, v.split("."))),
)


@pytest.mark.parametrize(
    ("path", "generate"),
    [(CRD_FILE, crd_yaml), (REFERENCE_FILE, reference_markdown)],
    ids=["crd", "reference"],
)
def test_committed_file_matches_the_model(path, generate) -> None:
    if UPDATE:
        path.write_text(generate())
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `make crds` (or UPDATE_GOLDEN=1 pytest)"
    assert path.read_text() == generate(), (
        f"{path.relative_to(ROOT)} is stale against operator/reranker_operator/api.py: run `make crds` "
        "(or UPDATE_GOLDEN=1 pytest tests/operator) and commit the result"
    )


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_crd_validates_strictly(version: str) -> None:
    kubernetes_validate.validate(build_crd(), version, strict=True)


def _walk(node: dict[str, Any], path: str):
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural() -> None:
    for path, node in _walk(crd_schema(), ""):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert "$ref" not in node and "title" not in node and "nullable" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only for int-or-string"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert "properties" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path


def test_free_form_only_where_intended() -> None:
    free = sorted(
        path for path, node in _walk(crd_schema(), "") if node.get("x-kubernetes-preserve-unknown-fields")
    )
    assert free == [
        ".spec.autoscaling.behavior",
        ".spec.engine.env[]",
        ".spec.networkPolicy.allowFrom[]",
        ".spec.networkPolicy.metricsFrom[]",
        ".spec.scheduling.affinity",
        ".spec.scheduling.tolerations[]",
        ".spec.scheduling.topologySpreadConstraints[]",
        ".status.kopf",
    ]


def test_crd_resource_shape() -> None:
    version = build_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == ["Model", "GPUs/pod", "Replicas", "Ready", "Reason", "Endpoint", "Age"]
    assert build_crd()["spec"]["names"]["shortNames"] == ["rrd"]
    status = crd_schema()["properties"]["status"]["properties"]
    assert {
        "observedGeneration",
        "replicas",
        "readyReplicas",
        "updatedReplicas",
        "selector",
        "endpoint",
        "clients",
        "conditions",
    } <= set(status)
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_defaults_match_the_model() -> None:
    spec = crd_schema()["properties"]["spec"]["properties"]
    # No default: unset replicas keep a running Deployment's count (e.g. after autoscaling is turned off).
    assert "default" not in spec["replicas"]
    assert spec["model"]["properties"]["family"]["default"] == "auto"
    assert spec["rollout"]["properties"]["strategy"]["default"] == "Surge"
    assert spec["autoscaling"]["properties"]["metric"]["enum"] == [
        "pairsInFlight",
        "pairsWaiting",
        "tokensInFlight",
    ]
    assert spec["engine"]["properties"]["gpuMemoryUtilization"]["exclusiveMinimum"] is True


@pytest.mark.parametrize("stem", EXAMPLES)
def test_example_validates_against_the_crd_schema(stem: str) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in closed_validator().iter_errors(load_example(stem))]
    assert not errors
    assert spec_cel_violations(load_example(stem)["spec"]) == []


def test_closed_schema_catches_typos() -> None:
    obj = load_example("cpu-minilm")
    obj["spec"]["engine"]["enforceEagr"] = True
    errors = list(closed_validator().iter_errors(obj))
    assert errors and "enforceEagr" in errors[0].message


@pytest.mark.parametrize(
    ("spec", "broken"),
    [
        ({"model": {"name": "m", "source": {"huggingface": {}}, "cache": {}}}, []),
        ({"model": {"name": "m", "source": {"pvc": {"claimName": "c"}}}}, []),
        ({"model": {"name": "m"}, "autoscaling": {"minReplicas": 2, "maxReplicas": 2}}, []),
        ({"model": {"name": "m"}, "gpusPerPod": 0, "engine": {"device": "cpu"}}, []),
        (
            {"model": {"name": "m"}, "networkPolicy": {"enabled": False, "allowFrom": [], "metricsFrom": []}},
            [],
        ),
        ({"model": {"name": "m"}, "networkPolicy": {"enabled": True}}, []),
        (
            {
                "model": {"name": "m", "source": {"pvc": {"claimName": "c"}}, "cache": {}},
                "autoscaling": {"minReplicas": 3, "maxReplicas": 2},
            },
            [
                "model.cache only applies to a huggingface source; a pvc source is already local",
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            ],
        ),
    ],
)
def test_cel_rules(spec: dict, broken: list[str]) -> None:
    assert spec_cel_violations(spec) == broken


@pytest.mark.parametrize("stem", EXAMPLES)
def test_api_server_defaulting_does_not_change_the_meaning(stem: str) -> None:
    from reranker_operator.render import load_spec
    from rrd_helpers import apply_defaults

    spec = load_example(stem)["spec"]
    defaulted = apply_defaults(crd_schema()["properties"]["spec"], spec)
    assert defaulted != spec, "the example should exercise some defaults"
    assert load_spec(defaulted) == load_spec(spec)
