"""`load_spec`: schema validation plus the semantic checks a schema cannot express.

The API server already enforces the schema and CEL rules of the CRD; these checks repeat them (the operator
must not trust that the CRD in the cluster is current) and add the ones needing outside knowledge, such as the
server's model families. Every problem is reported at once.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from reranker_operator.api import RerankerDeploymentSpec
from reranker_operator.errors import InvalidSpecError
from reranker_operator.render.free_form import free_form_problems

# Environment variables the operator sets on server pods; a user entry with the same name would make the
# env list ambiguous (and server-side apply refuses duplicate list-map keys).
RESERVED_ENV = (
    "HOME",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "HF_MODULES_CACHE",
    "HF_TOKEN",
    "VLLM_CACHE_ROOT",
    "TRITON_CACHE_DIR",
)


def _location(loc: tuple[Any, ...]) -> str:
    parts = ["spec"]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts)


def _schema_problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; fields are camelCase)"
        elif item["type"] == "missing":
            message = "required field is missing"
        problems.append(f"{_location(item['loc'])}: {message}")
    return problems


def _family_names() -> list[str]:
    # The server's profile table is the only list of families; importing it lazily keeps vLLM out of reach.
    from reranker_server.profiles import family_names

    return list(family_names())


def semantic_problems(spec: RerankerDeploymentSpec) -> list[str]:
    """Cross-field problems of a schema-valid spec, each as an actionable sentence."""
    problems: list[str] = []
    families = _family_names()
    if spec.model.family not in families:
        problems.append(
            f"spec.model.family: unknown family {spec.model.family!r}; use one of: {', '.join(families)}"
        )

    engine = spec.engine_or_default
    if engine.device == "cpu" and spec.gpus_per_pod:
        problems.append(
            f"spec.gpusPerPod: a cpu engine takes no GPUs (got {spec.gpus_per_pod}); set it to 0 or leave it out"
        )
    if engine.device == "gpu" and spec.gpus_per_pod == 0:
        problems.append("spec.gpusPerPod: a gpu engine needs at least 1 GPU; use engine.device: cpu for CPU")
    if spec.device == "gpu":
        for field, value in (
            ("cpuKvcacheSpaceGib", engine.cpu_kvcache_space_gib),
            ("cpuThreadsBind", engine.cpu_threads_bind),
        ):
            if value is not None:
                problems.append(
                    f"spec.engine.{field}: only applies to a cpu engine; remove it or set gpusPerPod: 0"
                )

    source = spec.model.source
    if source is not None:
        if (source.huggingface is None) == (source.pvc is None):
            problems.append("spec.model.source: set exactly one of huggingface or pvc")
        if source.pvc is not None:
            path = source.pvc.path if source.pvc.path is not None else spec.model.name
            normalized = posixpath.normpath(path)
            if path.startswith("/") or normalized == ".." or normalized.startswith("../"):
                problems.append(
                    f"spec.model.source.pvc: model path {path!r} must be relative to the claim's root "
                    "(no leading / or ..)"
                )
            if spec.model.cache is not None:
                problems.append(
                    "spec.model.cache: a pvc source is already local; remove cache or use a huggingface source"
                )

    scaling = spec.autoscaling
    if scaling is not None and scaling.min_replicas > scaling.max_replicas:
        problems.append(
            f"spec.autoscaling: minReplicas ({scaling.min_replicas}) is greater than maxReplicas "
            f"({scaling.max_replicas})"
        )

    if scaling is not None and scaling.min_replicas == 0 and not (scaling.enabled and spec.router_enabled):
        problems.append(
            "spec.autoscaling.minReplicas: 0 (scale to zero) needs autoscaling.enabled and router.enabled: "
            "the router holds the first request and starts a server pod"
        )

    seen: set[str] = set()
    for index, entry in enumerate(engine.env):
        env_name = entry.get("name")
        if not isinstance(env_name, str) or not env_name:
            problems.append(f"spec.engine.env[{index}]: every entry needs a name")
            continue
        if env_name in RESERVED_ENV:
            problems.append(
                f"spec.engine.env[{index}]: {env_name} is set by the operator; use the spec fields instead"
            )
        if env_name in seen:
            problems.append(f"spec.engine.env[{index}]: {env_name} is listed twice")
        seen.add(env_name)

    policy = spec.network_policy
    if policy is not None and policy.enabled and not policy.allow_from and not policy.metrics_from:
        problems.append(
            "spec.networkPolicy: enabled with no allowFrom and no metricsFrom peers would block all traffic"
        )
    problems.extend(free_form_problems(spec))
    return problems


def load_spec(spec_dict: Mapping[str, Any] | None) -> RerankerDeploymentSpec:
    """Validate a RerankerDeployment `spec` (camelCase dict) into the model.

    Raises InvalidSpecError listing every schema and semantic problem.
    """
    if not isinstance(spec_dict, Mapping):
        raise InvalidSpecError("spec: must be an object with at least model.name")
    try:
        spec = RerankerDeploymentSpec.model_validate(dict(spec_dict))
    except ValidationError as error:
        raise InvalidSpecError(_schema_problems(error)) from None
    problems = semantic_problems(spec)
    if problems:
        raise InvalidSpecError(problems)
    return spec
