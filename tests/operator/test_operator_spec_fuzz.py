"""Generated specs never crash `load_spec`/`render_all`: either every manifest is valid for the newest Kubernetes
schema, or `InvalidSpecError` says what is wrong.

Valid specs are drawn from the CRD's spec schema, which `crd.py` generates from the pydantic model (bounds,
patterns, enums, required fields); the free-form Kubernetes objects in it (env, tolerations, affinity, ...) are
drawn from real examples. Invalid specs are those with fields replaced by random JSON, removed or added, and
free-form objects of random shape. `HYPOTHESIS_PROFILE=fuzz` (`make fuzz`) runs FUZZ_FACTOR times as many.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from reranker_operator.errors import InvalidSpecError
from reranker_operator.render import load_spec, render_all
from reranker_server.profiles import family_names
from rrd_helpers import _close, crd_schema

FUZZ_FACTOR = 20
LONG_RUN = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
NEWEST = max(
    (v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()),
    key=lambda v: tuple(map(int, v.split("."))),
)


def fuzz_settings(ci_examples: int) -> settings:
    return settings(
        max_examples=ci_examples * FUZZ_FACTOR if LONG_RUN else ci_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# Real Kubernetes objects for the spec's free-form fields, keyed by their place in the schema.
FREE_FORM_EXAMPLES: dict[str, list[Any]] = {
    "spec.engine.env[]": [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ],
    "spec.scheduling.tolerations[]": [
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        {"operator": "Exists"},
    ],
    "spec.scheduling.affinity": [
        {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100", "h100"]}]}
                    ]
                }
            }
        },
        {},
    ],
    "spec.scheduling.topologySpreadConstraints[]": [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"},
    ],
    "spec.autoscaling.behavior": [
        {"scaleDown": {"stabilizationWindowSeconds": 60}},
        {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]}},
    ],
    "spec.networkPolicy.allowFrom[]": [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"a": "b"}}},
    ],
    "spec.networkPolicy.metricsFrom[]": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    max_size = min(node.get("maxLength", 40), 80)
    if "pattern" in node:
        return st.from_regex(node["pattern"], fullmatch=True).filter(
            lambda s: len(s) <= node.get("maxLength", 10**9)
        )
    return st.text(min_size=node.get("minLength", 0), max_size=max_size)


def from_schema(node: dict[str, Any], path: str) -> st.SearchStrategy[Any]:
    """Values valid for one node of the CRD's (OpenAPI v3, structural) schema."""
    if path in FREE_FORM_EXAMPLES:
        return st.sampled_from(FREE_FORM_EXAMPLES[path])
    if path == "spec.model.family":  # any string passes the schema; mostly draw names that render
        return st.one_of(st.sampled_from(["auto", *family_names()]), _string(node))
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if node.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(0, 64), _string({**node, "type": "string"}))
    kind = node.get("type")
    if kind == "object":
        if "properties" not in node:
            values = node.get("additionalProperties")
            value = from_schema(values, path + "{}") if isinstance(values, dict) else json_values
            return st.dictionaries(st.from_regex(r"[a-z][a-z0-9.-]{0,15}", fullmatch=True), value, max_size=3)
        required = set(node.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, f"{path}.{k}") for k, v in node["properties"].items() if k in required},
            optional={
                k: from_schema(v, f"{path}.{k}") for k, v in node["properties"].items() if k not in required
            },
        )
    if kind == "array":
        return st.lists(from_schema(node["items"], path + "[]"), max_size=3)
    if kind == "string":
        return _string(node)
    if kind == "integer":
        return st.integers(node.get("minimum", -(2**31)), node.get("maximum", 2**31))
    if kind == "number":
        low, high = node.get("minimum", node.get("exclusiveMinimum", -1e6)), node.get("maximum", 1e6)
        return st.floats(low, high, exclude_min="exclusiveMinimum" in node, allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    raise AssertionError(f"{path}: schema node the generator does not know: {node}")


SPEC_SCHEMA = copy.deepcopy(crd_schema())
_close(SPEC_SCHEMA)
valid_specs = from_schema(SPEC_SCHEMA["properties"]["spec"], "spec")


@st.composite
def broken_specs(draw: st.DrawFn) -> Any:
    """A schema-valid spec with one to three places replaced by random JSON, removed, or given an unknown key."""
    spec = copy.deepcopy(draw(valid_specs))
    for _ in range(draw(st.integers(1, 3))):
        parents = list(_containers(spec))
        parent = draw(st.sampled_from(parents))
        keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
        action = draw(st.sampled_from(["replace", "remove", "add"] if keys else ["add"]))
        if action == "add":
            if isinstance(parent, dict):
                parent[draw(st.text(max_size=12))] = draw(json_values)
            else:
                parent.append(draw(json_values))
        else:
            key = draw(st.sampled_from(keys))
            if action == "remove":
                del parent[key]
            else:
                parent[key] = draw(json_values)
    return spec


@st.composite
def junk_free_form_specs(draw: st.DrawFn) -> Any:
    """A schema-valid spec whose free-form Kubernetes objects are random JSON (the schema lets them through)."""
    spec = copy.deepcopy(draw(valid_specs))
    section, field = draw(st.sampled_from(sorted({tuple(p.split(".")[1:3]) for p in FREE_FORM_EXAMPLES})))
    field = field.removesuffix("[]")
    junk_object = st.dictionaries(
        st.sampled_from(["name", "value", "key", "operator", "x", "podSelector"]), json_values
    )
    value = (
        st.lists(junk_object, min_size=1, max_size=2)
        if field not in ("affinity", "behavior")
        else junk_object
    )
    spec.setdefault(section, {})[field] = draw(value)
    return spec


def _containers(value: Any):
    if isinstance(value, dict | list):
        yield value
        for child in value.values() if isinstance(value, dict) else value:
            yield from _containers(child)


def check_spec(spec: Any) -> list[dict]:
    """The property: InvalidSpecError with a message, or manifests that validate strictly; returns them."""
    try:
        parsed = load_spec(spec)
    except InvalidSpecError as error:
        assert error.problems and all(p.startswith("spec") and len(p) > len("spec: ") for p in error.problems)
        event("refused with InvalidSpec")
        return []
    event("rendered")
    manifests = render_all("rr", "ns", parsed, uid="3b1f7c52-0000-4000-8000-000000000001", generation=1)
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, NEWEST, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{manifest['kind']} invalid for Kubernetes {NEWEST}: {error.message} at {list(error.path)}"
            )
    return manifests


@fuzz_settings(ci_examples=150)
@given(spec=valid_specs)
def test_schema_valid_specs_render_valid_manifests_or_say_why_not(spec):
    check_spec(spec)


@fuzz_settings(ci_examples=150)
@given(spec=broken_specs())
def test_broken_specs_are_refused_with_a_message_never_a_crash(spec):
    check_spec(spec)


@fuzz_settings(ci_examples=100)
@given(spec=junk_free_form_specs())
def test_free_form_kubernetes_objects_of_any_shape(spec):
    check_spec(spec)


@fuzz_settings(ci_examples=60)
@given(spec=json_values)
def test_any_json_as_a_spec(spec):
    check_spec(spec)


def test_free_form_mistakes_name_the_field_and_the_kubernetes_type():
    spec = {
        "model": {"name": "a/b"},
        "engine": {
            "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"secretKeyRef": {"nam": "s"}}}]
        },
        "scheduling": {
            "affinity": {"nodeAffinity": 3},
            "tolerations": [{"operator": "Exists", "tolerationSeconds": "x"}],
        },
        "autoscaling": {"behavior": {"scaleUp": {"policies": [{"type": "Pods"}]}}},
    }
    with pytest.raises(InvalidSpecError) as info:
        load_spec(spec)
    problems = "\n".join(info.value.problems)
    assert (
        "spec.engine.env[1].valueFrom.secretKeyRef: Additional properties are not allowed ('nam' was unexpected) (not a valid Kubernetes EnvVar)"
        in problems
    )
    assert "spec.scheduling.affinity.nodeAffinity: 3 is not of type 'object'" in problems
    assert "spec.scheduling.tolerations[0].tolerationSeconds: 'x' is not of type 'integer'" in problems
    assert "spec.autoscaling.behavior.scaleUp.policies[0]: 'periodSeconds' is a required property" in problems


def test_vendored_kubernetes_schemas_are_current():
    from reranker_operator.render.free_form import SCHEMA_FILE, vendored_schema

    assert json.loads(SCHEMA_FILE.read_text()) == vendored_schema(), (
        "regenerate: python -m reranker_operator.render.free_form > operator/reranker_operator/render/k8s_objects.json"
    )
