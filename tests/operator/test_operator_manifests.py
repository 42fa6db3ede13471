"""Every rendered manifest validates strictly against Kubernetes 1.30 up to the newest bundled schema, and the
examples' rendered output matches the reviewed golden files (UPDATE_GOLDEN=1 rewrites them)."""

from __future__ import annotations

import os

import kubernetes_validate
import pytest
import yaml
from reranker_operator.crd import PlainDumper
from reranker_operator.render import load_spec, render_all
from rrd_helpers import EXAMPLES, GOLDEN_DIR, load_example

UID = "3b1f7c52-0000-4000-8000-000000000001"
KUBE_VERSIONS = sorted(
    {
        v.rsplit(".", 1)[0]
        for v in kubernetes_validate.utils.all_versions()
        if tuple(map(int, v.split(".")[:2])) >= (1, 30)
    },
    key=lambda v: tuple(map(int, v.split("."))),
)
# Spec variants beyond the examples, so every optional child and branch is validated too.
VARIANTS = {
    "everything": {
        "model": {
            "name": "Qwen/Qwen3-Reranker-4B",
            "cache": {"accessMode": "ReadWriteOnce"},
            "source": {"huggingface": {"tokenSecretRef": {"name": "hf", "key": "token"}}},
        },
        "gpusPerPod": 4,
        "autoscaling": {
            "metric": "pairsWaiting",
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
        },
        "auth": {"apiKeySecretRef": {"name": "k", "key": "key"}},
        "networkPolicy": {"enabled": True},
        "scheduling": {
            "tolerations": [{"key": "a", "operator": "Exists"}],
            "priorityClassName": "p",
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
            ],
        },
        "engine": {
            "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "imagePullSecrets": ["regcred"],
        },
        "service": {"type": "LoadBalancer", "annotations": {"a": "b"}},
        "rollout": {"strategy": "Replace", "drainSeconds": 0},
        "podAnnotations": {"team": "search"},
        "router": {"replicas": 3, "shardDocuments": 64, "resources": {"cpu": "1", "memory": "512Mi"}},
    },
    "minimal": {"model": {"name": "BAAI/bge-reranker-base"}},
    "direct": {
        "model": {"name": "BAAI/bge-reranker-base"},
        "router": {"enabled": False},
        "networkPolicy": {"enabled": True},
    },
}


def _objects() -> list[tuple[str, dict]]:
    specs = {stem: load_example(stem)["spec"] for stem in EXAMPLES} | VARIANTS
    return [
        (f"{label}:{manifest['kind']}/{manifest['metadata']['name']}", manifest)
        for label, spec in specs.items()
        for manifest in render_all("rr", "ns", load_spec(spec), uid=UID, generation=1)
    ]


OBJECTS = _objects()


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("manifest", [obj for _, obj in OBJECTS], ids=[label for label, _ in OBJECTS])
def test_manifest_validates_strictly(manifest: dict, version: str) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


def test_validation_would_catch_a_misspelled_field() -> None:
    deployment = next(obj for label, obj in OBJECTS if label.startswith("minimal:Deployment"))
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)


@pytest.mark.parametrize("stem", EXAMPLES)
def test_golden(stem: str) -> None:
    resource = load_example(stem)
    meta = resource["metadata"]
    manifests = render_all(
        meta["name"], meta.get("namespace", "default"), load_spec(resource["spec"]), uid=UID, generation=1
    )
    rendered = yaml.dump_all(manifests, Dumper=PlainDumper, sort_keys=False)  # as `reranker-operator render`
    golden = GOLDEN_DIR / f"{stem}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert golden.exists(), f"no golden file for {stem}: run UPDATE_GOLDEN=1 pytest tests/operator"
    assert rendered == golden.read_text(), (
        f"render_all output for examples/{stem}.yaml changed: review, then UPDATE_GOLDEN=1 pytest tests/operator"
    )
