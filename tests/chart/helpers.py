"""Rendering and validation helpers shared by the chart tests (real Helm via helm-python-sdk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
OPERATOR_CHART = CHARTS / "reranker-operator"
RERANKER_CHART = CHARTS / "reranker"

# Every Kubernetes minor from the oldest we support to the newest kubernetes-validate ships.
KUBE_VERSIONS = sorted(
    {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()} - {f"1.{m}" for m in range(30)},
    key=lambda v: int(v.split(".")[1]),
)

# helm's support.Severity: 1 info, 2 warning, 3 error. Strict lint treats warnings as failures too.
LINT_WARNING = 2


def values_files(chart: Path) -> list[Path | None]:
    """The default values (None) plus every example values file in the chart's ci/ folder."""
    return [None, *sorted((chart / "ci").glob("*.yaml"))]


def load_values(path: Path | None) -> dict[str, Any]:
    """Values from a file, or {} for the chart defaults."""
    return {} if path is None else (yaml.safe_load(path.read_text()) or {})


def render(
    chart: Path, values: dict[str, Any] | None = None, *, name: str = "rr", namespace: str = "rr-system"
):
    """Render a chart offline and return its objects (NOTES.txt and empty documents dropped)."""
    with helm.Chart.load(str(chart)) as loaded:
        files = loaded.render(values or {}, name=name, namespace=namespace, is_install=True)
    objects = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def render_notes(
    chart: Path, values: dict[str, Any] | None = None, *, name: str = "rr", namespace: str = "rr-system"
):
    """The rendered NOTES.txt text."""
    with helm.Chart.load(str(chart)) as loaded:
        files = loaded.render(values or {}, name=name, namespace=namespace, is_install=True)
    return next(text for path, text in files.items() if path.endswith("NOTES.txt"))


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    """Objects of one kind."""
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    """The single object of a kind (fails when there are zero or several)."""
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


# Hand-written schemas for the Prometheus Operator kinds we render (kubernetes-validate has none): only the fields
# the chart uses, and no unknown keys, so a typo fails here instead of being dropped by the apiserver.
_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string", "pattern": "^/"},
        "interval": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
    },
}
_NAMESPACE_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels and matchExpressions) selects `labels`."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def _monitor_schema(kind: str, endpoints_key: str) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name", "namespace"],
                "properties": {"labels": {"type": "object", "additionalProperties": {"type": "string"}}},
            },
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", endpoints_key],
                "properties": {
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": _NAMESPACE_SELECTOR,
                    endpoints_key: {"type": "array", "minItems": 1, "items": _ENDPOINT},
                },
            },
        },
    }


MONITORING_SCHEMAS = {
    "ServiceMonitor": _monitor_schema("ServiceMonitor", "endpoints"),
    "PodMonitor": _monitor_schema("PodMonitor", "podMetricsEndpoints"),
}


def validate_object(obj: dict, kube_version: str, crd_schemas: dict[str, dict] | None = None) -> None:
    """Validate one rendered object strictly: Kubernetes schemas, our monitoring schemas, or a CRD's schema."""
    kind = obj["kind"]
    if kind in MONITORING_SCHEMAS:
        jsonschema.validate(obj, MONITORING_SCHEMAS[kind])
    elif crd_schemas and kind in crd_schemas:
        jsonschema.validate(obj.get("spec", {}), crd_schemas[kind])
    else:
        kubernetes_validate.validate(obj, kube_version, strict=True)
