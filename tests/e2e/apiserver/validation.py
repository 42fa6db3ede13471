"""Validation of built-in kinds: the official OpenAPI schemas (kubernetes-validate) plus the server-side rules
those schemas cannot express, answered as kube-apiserver answers them.

- Decoding: a wrong JSON type is a 400 BadRequest ("cannot be handled as a Deployment"), before validation.
- Validation: 422 Invalid with `details.causes[].{reason, message, field}` (apimachinery errors.go `NewInvalid`,
  key ERR), field paths without a leading dot. The rules beyond the schemas follow
  `pkg/apis/core/validation/validation.go` (VAL), `pkg/apis/batch/validation/validation.go` (BV),
  apimachinery `pkg/util/validation/validation.go` and `pkg/api/validate/content/kube.go` (UV),
  `pkg/api/validation/objectmeta.go` (OM); only those listed in kube-apiserver-semantics.md §4.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import jsonschema
import kubernetes_validate.utils
import referencing
from kubernetes.utils import parse_quantity

KUBE_VERSION = "1.34"  # the cluster version the emulator plays (relaxed env names are GA here)
_SCHEMA_DIR = "kubernetes-json-schema/v1.34.0-local"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_PORT_NAME = re.compile(r"^[-a-z0-9]+$")
_ANNOTATIONS_MAX_BYTES = 256 * 1024
_POD_TEMPLATE_KINDS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job")


@dataclass(frozen=True)
class Cause:
    """One StatusCause of a 422."""

    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueForbidden, ...
    field: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.detail, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"


def invalid(field: str, value: Any, why: str) -> Cause:
    return Cause("FieldValueInvalid", field, f"Invalid value: {json.dumps(value)}: {why}")


def not_supported(field: str, value: Any, supported: tuple[str, ...]) -> Cause:
    listed = ", ".join(json.dumps(s) for s in supported)
    return Cause(
        "FieldValueNotSupported", field, f"Unsupported value: {json.dumps(value)}: supported values: {listed}"
    )


def required(field: str) -> Cause:
    return Cause("FieldValueRequired", field, "Required value")


class DecodeError(Exception):
    """The body does not decode into the kind's Go type (a 400, not a 422)."""


# ---- the official schemas ----------------------------------------------------------------------------


@functools.cache
def _definitions() -> referencing.Registry:
    defs = kubernetes_validate.utils.schema_contents(f"{_SCHEMA_DIR}/_definitions.json", KUBE_VERSION)
    return referencing.Resource.from_contents(defs) @ referencing.Registry()


@functools.cache
def _validator(kind: str, api_version: str) -> jsonschema.Validator | None:
    # Loading and resolving the schema is the expensive part (kubernetes_validate.validate redoes it per call).
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kubernetes_validate.utils.schema_contents(
            f"{_SCHEMA_DIR}/{kind.lower()}-{group_version}.json", KUBE_VERSION
        )
    except FileNotFoundError:
        return None
    registry = referencing.Resource.from_contents(schema) @ _definitions()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _shape(value: Any) -> Any:
    """`value` with every scalar replaced by a token of its JSON type.

    The published schemas constrain strings only by type (besides the top-level apiVersion/kind enums) and
    jsonschema does not assert `format`, so two objects of the same shape validate alike: the shape is a sound
    cache key, and the thousand near-identical children of the benchmark validate once.
    """
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return 0
    if isinstance(value, float):
        return 0.5
    return ""


@functools.lru_cache(maxsize=4096)
def _shape_is_valid(kind: str, api_version: str, shape: str) -> bool:
    validator = _validator(kind, api_version)
    return validator is None or validator.is_valid(json.loads(shape))


def _field(path: Any) -> str:
    text = ""
    for element in path:
        text += f"[{element}]" if isinstance(element, int) else (f".{element}" if text else str(element))
    return text


def schema_causes(obj: dict[str, Any]) -> list[Cause]:
    """Causes from the official schema (missing required fields); raises DecodeError on a wrong type."""
    kind, api_version = obj.get("kind", ""), obj.get("apiVersion", "")
    # managedFields are the server's own (their keys name list items, so they would defeat the cache).
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    shape = json.dumps(
        {**_shape({**obj, "metadata": meta}), "apiVersion": api_version, "kind": kind}, sort_keys=True
    )
    if _shape_is_valid(kind, api_version, shape):
        return []
    causes = []
    for error in _validator(kind, api_version).iter_errors(obj):
        if error.validator == "required":
            missing = re.search(r"'([^']+)' is a required property", error.message)
            name = missing.group(1) if missing else "?"
            causes.append(required(_field([*error.absolute_path, name])))
        elif error.validator == "type":
            raise DecodeError(
                f"json: cannot unmarshal into field {_field(error.absolute_path)}: {error.message}"
            )
        else:
            causes.append(invalid(_field(error.absolute_path), error.instance, error.message))
    return causes


# ---- rules the schemas cannot express ----------------------------------------------------------------


def _qualified_name(field: str, key: str) -> Iterator[Cause]:
    # UV IsQualifiedName: optional DNS-1123 subdomain prefix + "/" + name of at most 63 characters.
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        yield invalid(field, key, "prefix part must be a lowercase RFC 1123 subdomain")
    elif not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        yield invalid(
            field,
            key,
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        )


def _labels(field: str, labels: Any) -> Iterator[Cause]:
    for key, value in (labels or {}).items():
        yield from _qualified_name(field, key)
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            yield invalid(
                f"{field}",
                value,
                "a valid label must be an empty string or consist of alphanumeric "
                "characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            )


def _annotations(field: str, annotations: Any) -> Iterator[Cause]:
    # OM ValidateAnnotations: keys are qualified names (checked lowercased), total size at most 256 KiB.
    total = 0
    for key, value in (annotations or {}).items():
        yield from _qualified_name(field, key.lower())
        total += len(key) + len(str(value))
    if total > _ANNOTATIONS_MAX_BYTES:
        yield Cause("FieldValueTooLong", field, f"Too long: must have at most {_ANNOTATIONS_MAX_BYTES} bytes")


def _object_meta(kind: str, meta: dict[str, Any], field: str = "metadata") -> Iterator[Cause]:
    name = meta.get("name")
    if field == "metadata" and isinstance(name, str):
        if kind == "Service":  # VAL ValidateServiceName: DNS-1035 label
            if len(name) > 63 or not _DNS1035_LABEL.match(name):
                yield invalid(
                    f"{field}.name",
                    name,
                    "a DNS-1035 label must consist of lower case alphanumeric "
                    "characters or '-', start with an alphabetic character, and end with an alphanumeric "
                    "character",
                )
        elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            yield invalid(
                f"{field}.name",
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            )
    yield from _labels(f"{field}.labels", meta.get("labels"))
    yield from _annotations(f"{field}.annotations", meta.get("annotations"))
    controllers = [ref for ref in meta.get("ownerReferences") or () if ref.get("controller")]
    if len(controllers) > 1:
        yield invalid(
            f"{field}.ownerReferences", controllers, "Only one reference can have Controller set to true"
        )


def _env_name(field: str, name: Any) -> Iterator[Cause]:
    # UV IsRelaxedEnvVarName (RelaxedEnvironmentVariableValidation, GA in 1.34): printable ASCII without '='.
    if not isinstance(name, str) or not name:
        yield required(field)
    elif "=" in name or any(not 32 <= ord(c) <= 126 for c in name):
        yield invalid(
            field,
            name,
            "a valid environment variable name must consist only of printable ASCII "
            "characters other than '='",
        )


def _tolerations(field: str, tolerations: Any) -> Iterator[Cause]:
    # VAL validateTolerations.
    for i, toleration in enumerate(tolerations or ()):
        here = f"{field}[{i}]"
        operator = toleration.get("operator") or "Equal"
        key, value = toleration.get("key") or "", toleration.get("value") or ""
        if key:
            yield from _qualified_name(f"{here}.key", key)
        if not key and operator != "Exists":
            yield invalid(
                f"{here}.operator",
                operator,
                'operator must be Exists when `key` is empty, which means "match all values and all keys"',
            )
        if operator == "Exists" and value:
            yield invalid(f"{here}.operator", toleration, "value must be empty when `operator` is 'Exists'")
        elif operator == "Equal":
            if len(value) > 63 or not _LABEL_VALUE.match(value):
                yield invalid(
                    f"{here}.value",
                    value,
                    "a valid label must be an empty string or consist of "
                    "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                    "alphanumeric character",
                )
        elif operator != "Exists":
            yield not_supported(f"{here}.operator", toleration.get("operator"), ("Equal", "Exists"))
        if toleration.get("tolerationSeconds") is not None and toleration.get("effect") != "NoExecute":
            yield invalid(
                f"{here}.effect",
                toleration.get("effect"),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            )


def _is_extended(resource: str) -> bool:
    # VAL IsExtendedResourceName: a domain-prefixed name outside kubernetes.io (nvidia.com/gpu).
    prefix = resource.partition("/")[0] if "/" in resource else ""
    return bool(prefix) and not prefix.endswith("kubernetes.io") and not resource.startswith("requests.")


def _resources(field: str, resources: Any) -> Iterator[Cause]:
    # VAL ValidateContainerResourceRequirements.
    requests = (resources or {}).get("requests") or {}
    limits = (resources or {}).get("limits") or {}
    values: dict[tuple[str, str], Decimal] = {}
    for part, entries in (("requests", requests), ("limits", limits)):
        for name, raw in entries.items():
            value = parse_quantity(raw)
            values[(part, name)] = value
            if value < 0:
                yield invalid(f"{field}.{part}[{name}]", raw, "must be greater than or equal to 0")
            if _is_extended(name) and value != value.to_integral_value():
                yield invalid(f"{field}.{part}[{name}]", raw, "must be an integer")
    for name in requests:
        request, limit = values[("requests", name)], values.get(("limits", name))
        if _is_extended(name):
            if limit is None:
                yield Cause(
                    "FieldValueForbidden",
                    f"{field}.limits",
                    "Limit must be set for non overcommitable resources",
                )
            elif request != limit:
                yield invalid(
                    f"{field}.requests[{name}]",
                    requests[name],
                    f"must be equal to {name} limit of {limits[name]}",
                )
        elif limit is not None and request > limit:
            yield invalid(
                f"{field}.requests",
                requests[name],
                f"must be less than or equal to {name} limit of {limits[name]}",
            )


def _container(field: str, container: dict[str, Any]) -> Iterator[Cause]:
    name = container.get("name")
    if not isinstance(name, str) or len(name) > 63 or not _DNS1123_LABEL.match(name):
        yield invalid(
            f"{field}.name",
            name,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric "
            "characters or '-', and must start and end with an alphanumeric character",
        )
    for i, env in enumerate(container.get("env") or ()):
        yield from _env_name(f"{field}.env[{i}].name", env.get("name"))
    for i, port in enumerate(container.get("ports") or ()):
        number = port.get("containerPort")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            yield invalid(
                f"{field}.ports[{i}].containerPort", number, "must be between 1 and 65535, inclusive"
            )
        if "name" in port:
            yield from _port_name(f"{field}.ports[{i}].name", port["name"])
    yield from _resources(f"{field}.resources", container.get("resources"))


def _port_name(field: str, name: Any) -> Iterator[Cause]:
    # UV IsValidPortName (IANA_SVC_NAME).
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 15
        or not _PORT_NAME.match(name)
        or "--" in name
        or name.startswith("-")
        or name.endswith("-")
        or not re.search("[a-z]", name)
    ):
        yield invalid(field, name, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")


def _pod_spec(field: str, spec: dict[str, Any], kind: str) -> Iterator[Cause]:
    for group in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(group) or ()):
            yield from _container(f"{field}.{group}[{i}]", container)
    yield from _tolerations(f"{field}.tolerations", spec.get("tolerations"))
    if kind == "Job" and spec.get("restartPolicy") not in ("OnFailure", "Never"):  # BV validateJobSpec
        yield not_supported(f"{field}.restartPolicy", spec.get("restartPolicy"), ("OnFailure", "Never"))


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def rule_causes(kind: str, obj: dict[str, Any]) -> list[Cause]:
    """The server-side rules of §4 that the schemas lack, for a defaulted object."""
    causes = list(_object_meta(kind, obj.get("metadata") or {}))
    spec = obj.get("spec") or {}
    if kind in _POD_TEMPLATE_KINDS:
        template = spec.get("template") or {}
        template_meta = template.get("metadata") or {}
        causes += _object_meta(kind, template_meta, "spec.template.metadata")
        causes += _pod_spec("spec.template.spec", template.get("spec") or {}, kind)
        selector = spec.get("selector") or {}
        causes += _labels("spec.selector.matchLabels", selector.get("matchLabels"))
        if kind == "Deployment" and not _selector_matches(selector, template_meta.get("labels") or {}):
            causes.append(
                invalid(
                    "spec.template.metadata.labels",
                    template_meta.get("labels"),
                    "`selector` does not match template `labels`",
                )
            )
    if kind == "Pod":
        causes += _pod_spec("spec", spec, kind)
    if kind == "Service":
        for i, port in enumerate(spec.get("ports") or ()):
            number = port.get("port")
            if not isinstance(number, int) or not 1 <= number <= 65535:
                causes.append(
                    invalid(f"spec.ports[{i}].port", number, "must be between 1 and 65535, inclusive")
                )
    return causes


# Fields the API server refuses to change after create (DS, BV, VAL).
IMMUTABLE = {
    "Deployment": (("spec", "selector"),),
    "Job": (("spec", "selector"), ("spec", "template"), ("spec", "completionMode")),
}


def immutable_causes(kind: str, old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    """`field is immutable` for each immutable field an update changed."""
    causes = []
    for path in IMMUTABLE.get(kind, ()):
        before, after = old, new
        for key in path:
            before, after = (before or {}).get(key), (after or {}).get(key)
        if before != after:
            causes.append(invalid(".".join(path), after, "field is immutable"))
    if kind == "PersistentVolumeClaim":
        causes += _pvc_update(old, new)
    if kind == "Service":
        before, after = (old.get("spec") or {}).get("clusterIP"), (new.get("spec") or {}).get("clusterIP")
        if before and after != before:
            causes.append(invalid("spec.clusterIPs[0]", after, "may not change once set"))
    return causes


def storage_grows(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether an update raises a claim's spec.resources.requests.storage."""
    before, after = (
        ((obj.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
        for obj in (old, new)
    )
    return bool(before and after) and parse_quantity(after) > parse_quantity(before)


def _pvc_update(old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    # VAL ValidatePersistentVolumeClaimUpdate: only a Bound claim may grow; nothing else in spec changes.
    before, after = old.get("spec") or {}, new.get("spec") or {}
    bound = (old.get("status") or {}).get("phase") == "Bound"
    rest_before = {k: v for k, v in before.items() if k != "resources"}
    rest_after = {k: v for k, v in after.items() if k != "resources"}
    requests_before = (before.get("resources") or {}).get("requests") or {}
    requests_after = (after.get("resources") or {}).get("requests") or {}
    if rest_before != rest_after or (requests_before != requests_after and not bound):
        return [
            Cause(
                "FieldValueForbidden",
                "spec",
                "Forbidden: spec is immutable after creation except resources.requests and "
                "volumeAttributesClassName for bound claims",
            )
        ]
    storage_before, storage_after = requests_before.get("storage"), requests_after.get("storage")
    if storage_before and storage_after and parse_quantity(storage_after) < parse_quantity(storage_before):
        return [
            Cause(
                "FieldValueForbidden",
                "spec.resources.requests.storage",
                "Forbidden: field can not be less than previous value",
            )
        ]
    return []
