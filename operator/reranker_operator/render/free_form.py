"""The spec's free-form Kubernetes objects (env, tolerations, affinity, ...) checked against Kubernetes' own schema.

The CRD keeps these fields open (`x-kubernetes-preserve-unknown-fields`), so the API server admits any shape and
only refuses the rendered Deployment, HPA or NetworkPolicy later, on every reconcile. Checking them in
`load_spec` instead turns a typo into an InvalidSpec condition that names the field.

The schemas are the official ones bundled with kubernetes-validate (newest version), reduced to the definitions
these fields need and vendored as `k8s_objects.json`, so the operator does not carry all of Kubernetes' schemas.
Regenerate with `python -m reranker_operator.render.free_form > operator/reranker_operator/render/k8s_objects.json`
(`make crds` does); a test fails when the file is stale.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema

from reranker_operator.api import RerankerDeploymentSpec

SCHEMA_FILE = Path(__file__).with_name("k8s_objects.json")
# Where each free-form field lives in the spec, and the Kubernetes type it holds.
FIELDS = {
    "spec.engine.env": "io.k8s.api.core.v1.EnvVar",
    "spec.scheduling.tolerations": "io.k8s.api.core.v1.Toleration",
    "spec.scheduling.affinity": "io.k8s.api.core.v1.Affinity",
    "spec.scheduling.topologySpreadConstraints": "io.k8s.api.core.v1.TopologySpreadConstraint",
    "spec.autoscaling.behavior": "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior",
    "spec.networkPolicy.allowFrom": "io.k8s.api.networking.v1.NetworkPolicyPeer",
    "spec.networkPolicy.metricsFrom": "io.k8s.api.networking.v1.NetworkPolicyPeer",
}


def free_form_values(spec: RerankerDeploymentSpec) -> Iterator[tuple[str, Any]]:
    """(location, value) of every free-form object the spec sets; list fields yield one entry per item."""
    scheduling, scaling, policy = spec.scheduling, spec.autoscaling, spec.network_policy
    lists = {
        "spec.engine.env": spec.engine.env if spec.engine else [],
        "spec.scheduling.tolerations": scheduling.tolerations if scheduling else [],
        "spec.scheduling.topologySpreadConstraints": scheduling.topology_spread_constraints
        if scheduling
        else [],
        "spec.networkPolicy.allowFrom": policy.allow_from if policy else [],
        "spec.networkPolicy.metricsFrom": policy.metrics_from if policy else [],
    }
    for field, items in lists.items():
        for index, item in enumerate(items):
            yield f"{field}[{index}]", item
    if scheduling is not None and scheduling.affinity is not None:
        yield "spec.scheduling.affinity", scheduling.affinity
    if scaling is not None and scaling.behavior is not None:
        yield "spec.autoscaling.behavior", scaling.behavior


def free_form_problems(spec: RerankerDeploymentSpec) -> list[str]:
    """Every place where a free-form object breaks its Kubernetes schema, as `location: what is wrong`."""
    problems = []
    for location, value in free_form_values(spec):
        definition = FIELDS[location.split("[", 1)[0]]
        for error in sorted(_validator(definition).iter_errors(value), key=lambda e: list(e.absolute_path)):
            where = location + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
            )
            kind = definition.rsplit(".", 1)[-1]
            problems.append(f"{where}: {_short(error.message)} (not a valid Kubernetes {kind})")
    return problems


@functools.cache
def _validator(definition: str) -> jsonschema.Draft202012Validator:
    defs = json.loads(SCHEMA_FILE.read_text())["$defs"]
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": defs})


def _short(message: str) -> str:
    # jsonschema quotes the whole offending value; a long one would drown the field's name.
    return message if len(message) <= 200 else message[:200] + "…"


def vendored_schema() -> dict[str, Any]:
    """The definitions FIELDS need (and those they refer to), from kubernetes-validate's newest strict schemas."""
    import kubernetes_validate.utils as kv  # development only: the operator reads the vendored file

    version = kv.latest_version()
    defs = kv.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)[
        "$defs"
    ]
    needed: dict[str, Any] = {}
    pending = sorted(set(FIELDS.values()))
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed[name] = _without_descriptions(defs[name])
        pending.extend(sorted(_refs(needed[name])))
    return {
        "$comment": f"Kubernetes {version}, from kubernetes-validate",
        "$defs": dict(sorted(needed.items())),
    }


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].removeprefix("#/$defs/")} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


if __name__ == "__main__":
    json.dump(vendored_schema(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
