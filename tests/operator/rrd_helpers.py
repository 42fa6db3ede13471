"""Shared helpers for the operator's pure-layer tests: examples, the CRD schema as a closed JSON schema, CEL."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from reranker_operator.crd import build_crd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "examples"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
EXAMPLES = sorted(path.stem for path in EXAMPLES_DIR.glob("*.yaml"))


def load_example(stem: str) -> dict[str, Any]:
    """The RerankerDeployment object of examples/<stem>.yaml."""
    return yaml.safe_load((EXAMPLES_DIR / f"{stem}.yaml").read_text())


def crd_schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _close(node: dict[str, Any]) -> None:
    # The API server prunes unknown fields; offline, a closed schema turns a typo into an error instead.
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
    # OpenAPI v3.0's boolean exclusiveMinimum/Maximum, spelled as draft 7 spells them.
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if node.get(exclusive) is True:
            node[exclusive] = node.pop(bound)
    for sub in node.get("properties", {}).values():
        _close(sub)
    if isinstance(node.get("items"), dict):
        _close(node["items"])


def closed_validator() -> jsonschema.Draft7Validator:
    """A jsonschema validator for whole RerankerDeployment objects, closed where the CRD schema is closed."""
    schema = copy.deepcopy(crd_schema())
    _close(schema)
    schema["properties"]["metadata"]["additionalProperties"] = True
    return jsonschema.Draft7Validator(schema)


_CEL = celpy.Environment()


def cel_violations(schema: dict[str, Any], value: Any) -> list[str]:
    """Messages of every x-kubernetes-validations rule under `schema` that `value` breaks (no oldSelf rules)."""
    broken = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = _CEL.program(_CEL.compile(rule["rule"]))
        if not bool(program.evaluate({"self": celpy.json_to_cel(value)})):
            broken.append(rule["message"])
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                broken.extend(cel_violations(sub, value[key]))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            broken.extend(cel_violations(schema["items"], item))
    return broken


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """A copy of `value` with the schema's defaults filled in, as the API server does before CEL runs."""
    if isinstance(value, dict) and "properties" in schema:
        filled = dict(value)
        for key, sub in schema["properties"].items():
            if key not in filled and "default" in sub:
                filled[key] = copy.deepcopy(sub["default"])
            if key in filled:
                filled[key] = apply_defaults(sub, filled[key])
        return filled
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def spec_cel_violations(spec: dict[str, Any]) -> list[str]:
    """CEL messages the API server would return for this spec (after defaulting)."""
    schema = crd_schema()["properties"]["spec"]
    return cel_violations(schema, apply_defaults(schema, spec))
