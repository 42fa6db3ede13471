"""One reconcile pass: load, render, list, plan, apply, prune, observe, report status.

Planning is pure (`plan_changes`); `apply_children`/`prune_children` are the only writers, and
`reconcile()` reads like the steps of the story. API failures become `kopf.TemporaryError`s with a delay
suited to the failure, so kopf retries without a crash loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import kopf
import kubernetes.client
import urllib3.exceptions

from reranker_operator import MANAGED_BY, metrics
from reranker_operator.errors import InvalidSpecError
from reranker_operator.kube import OWNED_KINDS, KubeClient
from reranker_operator.render import GENERATION_ANNOTATION, client_settings, load_spec, render_all
from reranker_operator.render.labels import selector_labels
from reranker_operator.render.workload import TEMPLATE_HASH_ANNOTATION
from reranker_operator.status import Observed, compute_status

INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# Children kept when the spec stops asking for them: deleting the model cache would throw away a
# download that may have taken an hour; ownerReferences still remove it with the RerankerDeployment.
RETAINED_KINDS = frozenset({"PersistentVolumeClaim"})

ChildKey = tuple[str, str]  # (kind, name)


@dataclass(frozen=True)
class Plan:
    """What to write so that the live children match the desired ones."""

    create: tuple[dict[str, Any], ...] = ()
    update: tuple[dict[str, Any], ...] = ()
    recreate: tuple[dict[str, Any], ...] = ()  # immutable pod templates (Jobs): delete, then create
    delete: tuple[ChildKey, ...] = ()
    retain: tuple[ChildKey, ...] = ()
    scaled: tuple[int | None, int] | None = None  # Deployment replicas (from, to) when the spec sets them

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.recreate or self.delete)


@dataclass
class Outcome:
    """The result of one pass: the status to write and what was changed (for Events and metrics)."""

    status: dict[str, Any]
    plan: Plan = field(default_factory=Plan)
    invalid_message: str | None = None


def owned_labels(name: str) -> dict[str, str]:
    """The labels that select every child of RerankerDeployment `name` (pruning selects exactly these)."""
    return {MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: name}


def is_subset(want: Any, have: Any) -> bool:
    """True when every field of `want` is present in `have` with the same value.

    Lists must have the same length and match element by element: the operator owns its lists whole
    (containers, ports, env), so an extra or missing element is drift. Fields the API server or other
    controllers add (defaults, status, managedFields) are ignored because they are absent from `want`.
    """
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(is_subset, want, have))
    return want == have


def child_key(obj: Mapping[str, Any]) -> ChildKey:
    return obj["kind"], obj["metadata"]["name"]


def plan_changes(desired: Sequence[Mapping[str, Any]], live: Mapping[ChildKey, Mapping[str, Any]]) -> Plan:
    """Pure: children to create (missing), update (drifted), delete (no longer desired) or retain."""
    wanted = {child_key(obj): obj for obj in desired}
    create = tuple(dict(obj) for key, obj in wanted.items() if key not in live)
    changed = [
        dict(obj) for key, obj in wanted.items() if key in live and not is_subset(_comparable(obj), live[key])
    ]
    recreate = tuple(obj for obj in changed if _template_replaced(obj, live[child_key(obj)]))
    update = tuple(obj for obj in changed if obj not in recreate)
    stale = [key for key in live if key not in wanted]
    return Plan(
        create=create,
        update=update,
        recreate=recreate,
        delete=tuple(key for key in stale if key[0] not in RETAINED_KINDS),
        retain=tuple(key for key in stale if key[0] in RETAINED_KINDS),
        scaled=_scaling(update, live),
    )


def _scaling(update: Sequence[Mapping[str, Any]], live: Mapping[ChildKey, Mapping[str, Any]]):
    for obj in update:
        if obj["kind"] == "Deployment" and "replicas" in obj.get("spec", {}):
            old = (live[child_key(obj)].get("spec") or {}).get("replicas")
            if old != obj["spec"]["replicas"]:
                return old, obj["spec"]["replicas"]
    return None


def _comparable(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The fields whose difference means drift.

    kind/name already matched. The generation annotation only records which spec generation last wrote the
    child; a new generation that leaves a child's content alone must not rewrite (and re-announce) it.
    """
    result = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    annotations = result["metadata"].get("annotations")
    if annotations and GENERATION_ANNOTATION in annotations:
        annotations = {k: v for k, v in annotations.items() if k != GENERATION_ANNOTATION}
        result["metadata"] = {**result["metadata"], "annotations": annotations}
    return result


def _template_replaced(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """A Job whose pod template changed: the API refuses to update it, so it is deleted and created."""
    if desired["kind"] != "Job":
        return False
    want = (desired["metadata"].get("annotations") or {}).get(TEMPLATE_HASH_ANNOTATION)
    have = ((live.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH_ANNOTATION)
    return want != have


def list_children(kube: KubeClient, name: str, namespace: str) -> dict[ChildKey, dict[str, Any]]:
    """Every live child of `name`, found by the managed-by + instance labels."""
    labels = owned_labels(name)
    found: dict[ChildKey, dict[str, Any]] = {}
    for kind in OWNED_KINDS:
        for obj in kube.list(kind, namespace, labels):
            found[(kind, obj["metadata"]["name"])] = obj
    return found


def apply_children(kube: KubeClient, manifests: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Server-side apply each manifest (field manager reranker-operator, force); returns the live objects."""
    return [kube.apply(dict(manifest)) for manifest in manifests]


def prune_children(kube: KubeClient, namespace: str, keys: Iterable[ChildKey]) -> list[ChildKey]:
    """Delete the given children; returns those that existed."""
    return [key for key in keys if kube.delete(key[0], namespace, key[1])]


def observe(
    kube: KubeClient,
    name: str,
    namespace: str,
    live: Mapping[ChildKey, Mapping[str, Any]],
    *,
    cache_requested: bool,
) -> Observed:
    """Read what status needs: the Deployment and Job (already listed), its ReplicaSets and pods."""
    selector = selector_labels(name)
    return Observed(
        deployment=live.get(("Deployment", name)),
        replica_sets=kube.list("ReplicaSet", namespace, selector),
        pods=kube.list("Pod", namespace, selector),
        job=next((obj for (kind, _), obj in live.items() if kind == "Job"), None),
        cache_requested=cache_requested,
    )


def reconcile(
    kube: KubeClient,
    name: str,
    namespace: str,
    spec: Mapping[str, Any],
    *,
    uid: str | None,
    generation: int | None,
    old_status: Mapping[str, Any] | None = None,
    resync: bool = False,
) -> Outcome:
    """One full pass. An invalid spec leaves the children untouched and is reported, not raised."""
    started = time.perf_counter()
    try:
        outcome = _reconcile(
            kube,
            name,
            namespace,
            spec,
            uid=uid,
            generation=generation,
            old_status=old_status or {},
            resync=resync,
        )
    except kubernetes.client.ApiException as e:
        metrics.RECONCILE_TOTAL.labels("retry").inc()
        raise temporary_error(e) from e
    except urllib3.exceptions.HTTPError as e:
        metrics.RECONCILE_TOTAL.labels("retry").inc()
        metrics.RECONCILE_ERRORS.labels("unreachable").inc()
        raise kopf.TemporaryError(f"Kubernetes API unreachable: {e}", delay=2) from e
    finally:
        metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
    metrics.RECONCILE_TOTAL.labels("invalid_spec" if outcome.invalid_message else "ok").inc()
    return outcome


def _reconcile(kube, name, namespace, spec, *, uid, generation, old_status, resync) -> Outcome:
    invalid_message = None
    try:
        parsed = load_spec(dict(spec))
        desired = render_all(name, namespace, parsed, uid=uid, generation=generation)
    except InvalidSpecError as e:
        parsed, desired, invalid_message = None, None, str(e)

    live = list_children(kube, name, namespace)
    plan = Plan()
    if desired is not None:
        plan = plan_changes(desired, live)
        prune_children(kube, namespace, map(child_key, plan.recreate))
        for obj in apply_children(kube, (*plan.create, *plan.update, *plan.recreate)):
            live[child_key(obj)] = obj
        for key in prune_children(kube, namespace, plan.delete):
            live.pop(key, None)
        if resync:
            for obj in (*plan.create, *plan.update, *plan.recreate):
                metrics.DRIFT_REPAIRS.labels(obj["kind"]).inc()
    metrics.record_managed((namespace, name), [kind for kind, _ in live])

    cache_requested = any(kind == "Job" for kind, _ in map(child_key, desired or ())) or (
        desired is None and any(kind == "Job" for kind, _ in live)
    )
    observed = observe(kube, name, namespace, live, cache_requested=cache_requested)
    status = compute_status(
        parsed,
        generation,
        observed,
        name=name,
        now=now_rfc3339(),
        invalid_message=invalid_message,
        old_conditions=old_status.get("conditions") or (),
        clients=client_settings(name, namespace, parsed) if parsed is not None else None,
    )
    reported = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    metrics.record_status((namespace, name), reported)
    return Outcome(
        status=reported,
        plan=plan,
        invalid_message=invalid_message,
    )


def temporary_error(e: kubernetes.client.ApiException) -> kopf.TemporaryError:
    """Map an API failure to a retry with a delay that suits it."""
    status = e.status or 0
    if status in (409, 422):
        reason, delay = "conflict", 0.5  # someone else wrote first: re-read and re-plan soon
    elif status == 429:
        reason, delay = "throttled", _retry_after(e, default=2.0)
    elif status >= 500:
        reason, delay = "server_error", 2.0
    else:
        # 400/403/404 are not transient by nature, but RBAC or a missing CRD can be fixed without a
        # spec change; retrying slowly beats a PermanentError that would need a spec edit to clear.
        reason, delay = "client_error", 30.0
    metrics.RECONCILE_ERRORS.labels(reason).inc()
    return kopf.TemporaryError(f"Kubernetes API answered {status} {e.reason}: {_api_message(e)}", delay=delay)


def _retry_after(e: kubernetes.client.ApiException, default: float) -> float:
    try:
        return float((e.headers or {}).get("Retry-After", default))
    except (TypeError, ValueError):
        return default


def _api_message(e: kubernetes.client.ApiException) -> str:
    try:
        return json.loads(e.body).get("message", "")[:300]
    except (TypeError, ValueError, AttributeError):
        return str(e.body)[:300] if e.body else ""


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
