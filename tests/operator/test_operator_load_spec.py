"""load_spec: every bad spec gets its own actionable message; the CRD (schema + CEL) agrees where it can."""

from __future__ import annotations

from typing import Any

import pytest
from reranker_operator.api import RerankerDeploymentSpec
from reranker_operator.errors import InvalidSpecError
from reranker_operator.render import load_spec
from rrd_helpers import EXAMPLES, closed_validator, load_example, spec_cel_violations

MODEL = {"name": "Qwen/Qwen3-Reranker-0.6B"}


def spec(**fields: Any) -> dict[str, Any]:
    return {"model": dict(MODEL), **fields}


# (id, spec, message fragment from load_spec, who else refuses it: "schema", a CEL message, or None)
BAD_SPECS = [
    ("missing-model", {}, "spec.model: required field is missing", "schema"),
    ("typo-field", spec(gpuPerPod=1), "spec.gpuPerPod: unknown field", "schema"),
    (
        "negative-replicas",
        spec(replicas=-1),
        "spec.replicas: Input should be greater than or equal to 0",
        "schema",
    ),
    (
        "bad-quantity",
        spec(resources={"memory": "24 GB"}),
        "spec.resources.memory: '24 GB' is not a Kubernetes quantity",
        "schema",
    ),
    ("bad-metric", spec(autoscaling={"metric": "qps"}), "spec.autoscaling.metric", "schema"),
    (
        "unknown-family",
        {"model": {**MODEL, "family": "qwen9"}},
        "spec.model.family: unknown family 'qwen9'; use one of: auto",
        None,
    ),
    (
        "min-above-max",
        spec(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "minReplicas (5) is greater than maxReplicas (2)",
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    ),
    (
        "gpus-on-cpu-engine",
        spec(gpusPerPod=2, engine={"device": "cpu"}),
        "a cpu engine takes no GPUs (got 2)",
        "a cpu engine takes no GPUs: set gpusPerPod to 0 or leave it out",
    ),
    (
        "gpu-engine-without-gpus",
        spec(gpusPerPod=0, engine={"device": "gpu"}),
        "a gpu engine needs at least 1 GPU",
        "a gpu engine needs gpusPerPod >= 1",
    ),
    (
        "two-sources",
        {"model": {**MODEL, "source": {"huggingface": {}, "pvc": {"claimName": "models"}}}},
        "spec.model.source: set exactly one of huggingface or pvc",
        "set exactly one of model.source.huggingface or model.source.pvc",
    ),
    (
        "empty-source",
        {"model": {**MODEL, "source": {}}},
        "spec.model.source: set exactly one of huggingface or pvc",
        "set exactly one of model.source.huggingface or model.source.pvc",
    ),
    (
        "pvc-without-claim",
        {"model": {**MODEL, "source": {"pvc": {"path": "qwen"}}}},
        "spec.model.source.pvc.claimName: required field is missing",
        "schema",
    ),
    (
        "cache-with-pvc",
        {"model": {**MODEL, "source": {"pvc": {"claimName": "models"}}, "cache": {"size": "10Gi"}}},
        "spec.model.cache: a pvc source is already local",
        "model.cache only applies to a huggingface source; a pvc source is already local",
    ),
    (
        "pvc-path-escapes",
        {"model": {**MODEL, "source": {"pvc": {"claimName": "models", "path": "../etc"}}}},
        "must be relative to the claim's root",
        None,
    ),
    (
        "cpu-field-on-gpu",
        spec(gpusPerPod=1, engine={"cpuKvcacheSpaceGib": 2}),
        "spec.engine.cpuKvcacheSpaceGib: only applies to a cpu engine",
        None,
    ),
    (
        "reserved-env",
        spec(engine={"env": [{"name": "HF_HOME", "value": "/x"}]}),
        "spec.engine.env[0]: HF_HOME is set by the operator",
        None,
    ),
    (
        "duplicate-env",
        spec(engine={"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}),
        "spec.engine.env[1]: A is listed twice",
        None,
    ),
    (
        "env-without-name",
        spec(engine={"env": [{"value": "1"}]}),
        "spec.engine.env[0]: every entry needs a name",
        None,
    ),
    (
        "closed-network-policy",
        spec(networkPolicy={"enabled": True, "allowFrom": [], "metricsFrom": []}),
        "would block all traffic",
        "an enabled networkPolicy needs allowFrom or metricsFrom peers",
    ),
]


@pytest.mark.parametrize(("case", "bad", "message", "also"), BAD_SPECS, ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_is_refused_with_its_message(case: str, bad: dict, message: str, also: str | None) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        load_spec(bad)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems
    assert message in str(caught.value)


@pytest.mark.parametrize(("case", "bad", "message", "also"), BAD_SPECS, ids=[case[0] for case in BAD_SPECS])
def test_crd_refuses_what_it_can_express(case: str, bad: dict, message: str, also: str | None) -> None:
    obj = {
        "apiVersion": "reranker.dev/v1alpha1",
        "kind": "RerankerDeployment",
        "metadata": {"name": "x"},
        "spec": bad,
    }
    schema_errors = list(closed_validator().iter_errors(obj))
    cel = spec_cel_violations(bad) if not schema_errors else []
    if also == "schema":
        assert schema_errors, "the CRD schema should refuse this spec"
    elif also is None:
        # Needs outside knowledge (families) or is a softer rule: only the operator refuses it.
        assert not schema_errors and not cel
    else:
        assert not schema_errors, [error.message for error in schema_errors]
        assert cel == [also]


def test_every_problem_is_listed_at_once() -> None:
    bad = {
        "model": {**MODEL, "family": "nope", "source": {"pvc": {"claimName": "m"}}, "cache": {}},
        "autoscaling": {"minReplicas": 3, "maxReplicas": 1},
    }
    with pytest.raises(InvalidSpecError) as caught:
        load_spec(bad)
    assert len(caught.value.problems) == 3, caught.value.problems


def test_schema_errors_are_all_listed() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        load_spec({"model": {"name": ""}, "replicas": "many", "gpuPerPod": 1})
    fields = sorted(problem.split(":")[0] for problem in caught.value.problems)
    assert fields == ["spec.gpuPerPod", "spec.model.name", "spec.replicas"]


@pytest.mark.parametrize("not_a_spec", [None, [], "model: x"])
def test_non_object_spec_is_refused(not_a_spec: Any) -> None:
    with pytest.raises(InvalidSpecError, match="must be an object"):
        load_spec(not_a_spec)


def test_families_come_from_the_server_profile_table(monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = pytest.importorskip("reranker_server.profiles")
    bad = {"model": {**MODEL, "family": "brand-new-family"}}
    with pytest.raises(InvalidSpecError):
        load_spec(bad)
    monkeypatch.setattr(profiles, "family_names", lambda: ["auto", "brand-new-family"])
    assert load_spec(bad).model.family == "brand-new-family"


@pytest.mark.parametrize("stem", EXAMPLES)
def test_examples_load(stem: str) -> None:
    assert isinstance(load_spec(load_example(stem)["spec"]), RerankerDeploymentSpec)


@pytest.mark.parametrize(
    ("fields", "device", "gpus"),
    [
        ({}, "gpu", 1),
        ({"gpusPerPod": 2}, "gpu", 2),
        ({"gpusPerPod": 0}, "cpu", 0),
        ({"engine": {"device": "cpu"}}, "cpu", 0),
        ({"engine": {"device": "gpu"}, "gpusPerPod": 4}, "gpu", 4),
    ],
)
def test_device_and_gpu_defaults(fields: dict, device: str, gpus: int) -> None:
    loaded = load_spec(spec(**fields))
    assert (loaded.device, loaded.gpus) == (device, gpus)


def test_quantities_accept_numbers() -> None:
    loaded = load_spec(spec(resources={"cpu": 4, "memory": "24Gi"}))
    assert loaded.resources is not None and loaded.resources.cpu == "4"
