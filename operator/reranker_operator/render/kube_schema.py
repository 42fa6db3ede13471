"""Rendered children checked against the official Kubernetes schema before anything is written.

The schemas are kubernetes-validate's (strict: unknown fields are errors), for the newest Kubernetes release
it bundles that is not newer than the cluster. A child the schema refuses would be refused by the API server
with a 422, after its siblings were already changed; checked first, nothing is written and the last good
children keep serving. Validators are built once per (kind, apiVersion, release): building one reads a large
definitions file.

Two validators per kind: fastjsonschema's compiled one answers "valid?" (a tenth of jsonschema's time: the
check was a fifth of the operator's CPU while converging many new objects), and only for a child it refuses is
jsonschema asked for the error to report (it has the better message and decides: where the two disagree the
child counts as valid only when jsonschema finds no error).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
import threading
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import fastjsonschema
import jsonschema
from kubernetes_validate.utils import all_versions, major_minor, schema_contents
from packaging.version import Version
from referencing import Registry, Resource


@lru_cache(maxsize=16)
def schema_release(cluster_version: str | None) -> str:
    """The bundled schema release (`major.minor`) used for a cluster (the newest one when unknown).

    Cached: listing the bundled releases reads a directory, once per pass before (7 % of the operator's CPU
    while converging 300 objects)."""
    releases = sorted({major_minor(v) for v in all_versions()}, key=Version)
    try:
        cluster = Version(major_minor(cluster_version.lstrip("v"))) if cluster_version else None
    except ValueError:
        cluster = None
    if cluster is None:
        return releases[-1]
    fitting = [r for r in releases if Version(r) <= cluster]
    return fitting[-1] if fitting else releases[0]  # older than every bundled release: the oldest is closest


@lru_cache(maxsize=64)
def _validator(kind: str, api_version: str, release: str) -> jsonschema.Validator | None:
    version = next(v for v in reversed(all_versions()) if major_minor(v) == release)
    directory = f"kubernetes-json-schema/v{version}-local-strict"
    # Files are named <kind>-<group without domain>-<version>.json, e.g. deployment-apps-v1.json.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = schema_contents(f"{directory}/{kind.lower()}-{group_version}.json", release)
    except FileNotFoundError:
        return None
    definitions = Resource.from_contents(schema_contents(f"{directory}/_definitions.json", release))
    registry = definitions @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


DEFINITIONS_REF = "/api/_definitions.json#"
_COMPILING = threading.Lock()
# Keywords whose values are data, not subschemas (an `enum` may list anything; `properties` maps field names).
_DATA_KEYWORDS = frozenset({"enum", "required", "default"})
_NAMED_SCHEMAS = frozenset({"properties", "$defs", "patternProperties"})
# Dropped before compiling: fastjsonschema embeds each failing rule's schema in its generated code, and the
# descriptions made a Deployment's validator 80 MB.
_ANNOTATIONS = frozenset({"format", "description"})


@lru_cache(maxsize=4)
def _definitions(release: str) -> dict[str, Any]:
    version = next(v for v in reversed(all_versions()) if major_minor(v) == release)
    document = schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", release)
    return _draft7(document)["$defs"]


@lru_cache(maxsize=64)
def _fast_validator(kind: str, api_version: str, release: str) -> Any:
    """fastjsonschema's compiled check of one kind, or None where no schema is bundled.

    The bundled schema references a separate definitions document and is written for draft 2020-12; compiled
    here as one self-contained draft-7 document holding only the definitions it reaches (the keywords the
    Kubernetes schemas use mean the same in both drafts, `$ref` has only descriptions beside it) and without
    `format` (jsonschema treats formats as annotations by default, so must this check), descriptions and the
    `x-kubernetes-*` extensions (neither validates anything)."""
    version = next(v for v in reversed(all_versions()) if major_minor(v) == release)
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    directory = f"kubernetes-json-schema/v{version}-local-strict"
    try:
        schema = schema_contents(f"{directory}/{kind.lower()}-{group_version}.json", release)
    except FileNotFoundError:
        return None
    schema = _draft7({k: v for k, v in schema.items() if k not in ("$schema", "$id")})
    definitions = _definitions(release)
    reached: set[str] = set()
    pending = _refs(schema)
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending |= _refs(definitions[name])
    schema["$defs"] = {name: definitions[name] for name in sorted(reached)}
    return fastjsonschema.compile(schema)


def _draft7(node: Any) -> Any:
    """A bundled schema with local references (`#/$defs/...`), without annotations and extensions."""
    if isinstance(node, list):
        return [_draft7(item) for item in node]
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _NAMED_SCHEMAS:
            result[key] = {name: _draft7(sub) for name, sub in value.items()}
        elif key == "$ref":
            result[key] = value.replace(DEFINITIONS_REF, "#")
        elif key in _DATA_KEYWORDS:
            result[key] = value
        elif not (key in _ANNOTATIONS or key.startswith("x-kubernetes-")):
            result[key] = _draft7(value)
    return result


def _refs(node: Any) -> set[str]:
    """Names of the definitions a (converted) schema refers to."""
    if isinstance(node, list):
        return set().union(*map(_refs, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found: set[str] = set()
    for key, value in node.items():
        if key == "$ref":
            found.add(value.rsplit("/", 1)[-1])
        elif key in _NAMED_SCHEMAS:
            for sub in value.values():
                found |= _refs(sub)
        elif key not in _DATA_KEYWORDS:
            found |= _refs(value)
    return found


def _valid(manifest: Mapping[str, Any], release: str) -> bool:
    # One compile per kind: passes run in several threads, and concurrent first calls would each compile (a
    # Deployment's takes about half a second and 60 MB while it runs).
    with _COMPILING:
        check = _fast_validator(manifest["kind"], manifest["apiVersion"], release)
    if check is None:
        return True
    try:
        check(manifest)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def prepare(kinds: Iterable[tuple[str, str]], cluster_version: str | None) -> None:
    """Compile the checks of (kind, apiVersion) ahead of the first pass: compiling takes memory for a moment,
    which is given back before the caches fill (compiled amid the first passes it stayed: +40 MB RSS at 300
    objects)."""
    release = schema_release(cluster_version)
    with _COMPILING:
        for kind, api_version in kinds:
            _fast_validator(kind, api_version, release)
    gc.collect()
    _give_back_free_memory()


def _give_back_free_memory() -> None:
    """Return the compile's freed heap to the OS (glibc keeps it otherwise: 170 -> 83 MB RSS measured)."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def child_problems(manifests: Iterable[Mapping[str, Any]], cluster_version: str | None) -> list[str]:
    """One sentence per schema violation: `Deployment demo: spec.template...: message (Kubernetes 1.33)`."""
    release = schema_release(cluster_version)
    problems = []
    for manifest in manifests:
        if _valid(manifest, release):
            continue
        validator = _validator(manifest["kind"], manifest["apiVersion"], release)
        if validator is None:
            continue
        error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
        if error is not None:
            path = _path(error.absolute_path)
            where = f"{path}: " if path else ""
            problems.append(
                f"{manifest['kind']} {manifest['metadata']['name']}: {where}{error.message} "
                f"(Kubernetes {release} schema)"
            )
    return problems


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text
