"""Generate the RerankerDeployment CRD from the pydantic models in `api.py` (nothing hand-writes the schema).

pydantic's JSON schema is turned into a Kubernetes *structural* schema: `$ref`s inlined, `Optional` unwrapped,
titles dropped, `exclusiveMinimum` in the OpenAPI v3.0 boolean form, free-form objects marked with
`x-kubernetes-preserve-unknown-fields`. CEL rules come from the models' `x-kubernetes-validations`.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from reranker_operator import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from reranker_operator.api import RerankerDeploymentSpec, RerankerDeploymentStatus

# Keys a structural schema node may carry through unchanged.
_PASSTHROUGH = {
    "type",
    "description",
    "default",
    "enum",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "required",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        # Keys beside a $ref (description, default) refine the referenced schema.
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON-schema node (and its children) into a structural CRD schema node."""
    node = _resolve(node, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [branch for branch in node["anyOf"] if branch.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {node['anyOf']}")
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        node = {**_resolve(branches[0], defs), **outer}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _PASSTHROUGH:
            out[key] = value
        elif key == "anyOf":
            out[key] = value
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out["properties"] = {prop: _structural(sub, defs) for prop, sub in value.items()}
        elif key == "items":
            out["items"] = _structural(value, defs)
        elif key == "additionalProperties":
            # extra="forbid" gives False; a closed object is the default of a structural schema.
            if isinstance(value, dict):
                if value:
                    out["additionalProperties"] = _structural(value, defs)
                else:
                    out["x-kubernetes-preserve-unknown-fields"] = True
        elif key not in {"title", "$defs"}:
            raise ValueError(f"unsupported JSON-schema keyword {key!r} in {node}")
    if out.get("default", 0) is None:
        del out["default"]
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return {key: out[key] for key in sorted(out, key=_key_rank)}


# Readable node layout: what it is first, nested properties last.
_FIRST = ("type", "description", "default")
_LAST = ("required", "properties", "items", "additionalProperties", "x-kubernetes-validations")


def _key_rank(key: str) -> tuple[int, int, str]:
    if key in _FIRST:
        return (0, _FIRST.index(key), key)
    if key in _LAST:
        return (2, _LAST.index(key), key)
    return (1, 0, key)


def _schema_of(model: type) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(schema, schema.get("$defs", {}))


def open_api_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the RerankerDeployment resource."""
    return {
        "type": "object",
        "description": "A reranker model served by vLLM behind a Cohere/Jina/TEI-compatible API.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _schema_of(RerankerDeploymentSpec),
            "status": _schema_of(RerankerDeploymentStatus),
        },
        "required": ["spec"],
    }


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest for RerankerDeployment."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "reranker-operator",
                "app.kubernetes.io/part-of": "reranker-operator",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": open_api_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
                        {"name": "GPUs/pod", "type": "integer", "jsonPath": ".spec.gpusPerPod"},
                        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
                        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
                        # Why it is (not) Ready at a glance: Unschedulable, ImagePullBackOff, FailedMount...
                        {
                            "name": "Reason",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
                        },
                        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


class PlainDumper(yaml.SafeDumper):
    """No YAML anchors/aliases: shared sub-schemas are written out in full, as kubectl users expect."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def crd_yaml() -> str:
    """The CRD as YAML, exactly as committed in crds/ (`make crds`)."""
    header = "# Generated by `reranker-operator crd` from operator/reranker_operator/api.py; do not edit.\n"
    return header + yaml.dump(build_crd(), Dumper=PlainDumper, sort_keys=False, width=110)


def _type_name(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity"
    kind = node.get("type", "object")
    if kind == "array":
        return f"[]{_type_name(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node:
        return f"map[string]{_type_name(node['additionalProperties'])}"
    if "enum" in node:
        return " \\| ".join(str(value) for value in node["enum"])
    return kind


def _reference_rows(node: dict[str, Any], prefix: str) -> list[str]:
    rows = []
    required = set(node.get("required", []))
    for prop, sub in node.get("properties", {}).items():
        path = f"{prefix}.{prop}" if prefix else prop
        default = f"`{json.dumps(sub['default'])}`" if "default" in sub else ""
        if prop in required:
            default = "required"
        description = sub.get("description", "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{path}` | {_type_name(sub)} | {default} | {description} |")
        rows.extend(_reference_rows(sub, path))
        if sub.get("type") == "array":
            rows.extend(_reference_rows(sub.get("items", {}), f"{path}[]"))
    return rows


def _rules(node: dict[str, Any], prefix: str) -> list[str]:
    found = [
        f"- `{prefix or 'spec'}`: {rule['message']}" for rule in node.get("x-kubernetes-validations", [])
    ]
    for prop, sub in node.get("properties", {}).items():
        found.extend(_rules(sub, f"{prefix}.{prop}" if prefix else f"spec.{prop}"))
    return found


def reference_markdown() -> str:
    """docs/crd-reference.md: the spec's fields, defaults and rules, generated from the same schema."""
    spec = open_api_schema()["properties"]["spec"]
    lines = [
        "# RerankerDeployment reference",
        "",
        "<!-- Generated by `reranker-operator crd --reference` from operator/reranker_operator/api.py; "
        "do not edit. -->",
        "",
        f"`apiVersion: {GROUP}/{VERSION}`, `kind: {KIND}` (short name `{SHORT_NAMES[0]}`). Examples: `examples/`.",
        "Render an example offline with `reranker-operator render -f examples/cpu-minilm.yaml`.",
        "",
        "## Spec fields",
        "",
        "| Field | Type | Default | Description |",
        "|---|---|---|---|",
        *_reference_rows(spec, ""),
        "",
        "## Cross-field rules (CEL, enforced by the API server and again by the operator)",
        "",
        *_rules(spec, ""),
        "",
        "The operator also refuses an unknown `model.family` (the server's profile table is the list), "
        "cpu-only engine fields on a GPU engine, a pvc `path` that leaves the claim, and `engine.env` entries "
        "that repeat or override the variables it sets.",
        "",
        "## Children",
        "",
        "- Always: ConfigMap `<name>-config` (`server.yaml`), ConfigMap `<name>-clients` (RAGFlow, Dify, "
        "LangChain settings; usable with `envFrom`), Deployment and Service `<name>`.",
        "- HorizontalPodAutoscaler `<name>` only while `autoscaling.enabled`; the Deployment then has no "
        "`replicas` (the HPA owns it; the operator hands the field over at the current count and takes it back "
        "at the HPA's count when autoscaling is turned off, so replicas never drop to 1 on the way).",
        "- PodDisruptionBudget `<name>` (maxUnavailable 1, unhealthy pods always evictable) unless the "
        "deployment is a fixed single replica, where a budget could only get in the way of node drains.",
        "- With `model.cache`: PVC `<name>-model-cache` (kept when the cache is switched off, deleted with the "
        "RerankerDeployment) and Job `<name>-download` running `reranker-server download` into "
        "`/models/<snapshot>`; server pods mount the PVC read-only and wait in an init container for the "
        "download's completion marker.",
        "- NetworkPolicy `<name>` only when `networkPolicy.enabled`.",
        "",
        "Pods run as uid 1000 with a read-only root filesystem, no capabilities and RuntimeDefault seccomp; "
        "HOME and /tmp are emptyDirs. A server.yaml change rolls the pods (config-hash annotation).",
        "",
        "## Status fields",
        "",
        "| Field | Type | Default | Description |",
        "|---|---|---|---|",
        *_reference_rows(open_api_schema()["properties"]["status"], "status"),
        "",
        *STATUS_CONVENTIONS,
        "",
    ]
    return "\n".join(lines)


# The kstatus conventions (sigs.k8s.io/cli-utils/pkg/kstatus) the status follows; docs/operator.md has details.
STATUS_CONVENTIONS = [
    "### Conditions and observedGeneration (kstatus)",
    "",
    "`status.observedGeneration` (and each condition's) is the generation the conditions describe. The "
    "conditions follow the kstatus conventions read by `kubectl wait`, Flux and Argo CD:",
    "",
    "- `Ready` True: the current generation is valid and rolled out (updated = ready = desired replicas). While "
    "the spec is invalid or refused, Ready is False (reason `InvalidSpec` or `RejectedByAPIServer`) even though "
    "the pods of the last good spec keep serving, so `kubectl wait --for=condition=Ready` never reports a broken "
    "spec as applied.",
    "- `Reconciling` True: the children are still converging on the current generation (abnormal-true: False "
    "once Ready, scaled to zero or stalled).",
    "- `Stalled` True: no progress without a person's change: `InvalidSpec`, `RejectedByAPIServer` (the API "
    "server's message and field path), `ProgressDeadlineExceeded`, `DownloadFailed`, `CacheResizeRefused` (the "
    "cache claim keeps its size: a claim cannot shrink or change class; growing needs an expandable StorageClass).",
    "- `Progressing`, `Degraded`, `ModelCached`, `InvalidSpec`: details for people (see docs/operator.md).",
    "",
    "kstatus reads this as: observedGeneration behind `metadata.generation` or Reconciling True → InProgress; "
    "Stalled True → Failed; otherwise → Current. Wait for a rollout with "
    "`kubectl wait rrd/NAME --for=condition=Ready --timeout=30m`.",
]
