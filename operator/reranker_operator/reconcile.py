"""One reconcile pass: load, render, read the cache, plan, check, apply, prune, observe, report status.

Planning is pure (`plan_changes`, `settle_replicas`); `apply_children`/`prune_children` are the only writers,
and `reconcile()` reads like the steps of the story. Children are read from the watch-fed cache
(`children.ChildCache`), so a pass over unchanged children makes no API call. A child the API server refuses
(422) is reported in the outcome, not raised; other API failures become `kopf.TemporaryError`s with a delay
suited to the failure, so kopf retries without a crash loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import kopf
import kubernetes.client
import urllib3.exceptions
from kubernetes.utils import parse_quantity

from reranker_operator import FIELD_MANAGER, metrics
from reranker_operator.api import RerankerDeploymentSpec
from reranker_operator.children import ChildCache, ChildKey, slim
from reranker_operator.errors import InvalidSpecError
from reranker_operator.kube import KubeClient
from reranker_operator.render import GENERATION_ANNOTATION, client_settings, load_spec, render_all
from reranker_operator.render.kube_schema import child_problems
from reranker_operator.render.labels import COMPONENT_LABEL, ROUTER_COMPONENT, SERVER_COMPONENT
from reranker_operator.render.paths import cache_pvc_name, router_name
from reranker_operator.render.quantity import same_quantity
from reranker_operator.render.workload import TEMPLATE_HASH_ANNOTATION
from reranker_operator.status import Observed, compute_status
from reranker_operator.waits import needs_events

# Field manager that holds Deployment spec.replicas between the operator letting go of it and the HPA's first
# write ("Transferring ownership" in the Kubernetes server-side apply documentation).
HANDOVER_MANAGER = "reranker-operator-handover"
# Children kept when the spec stops asking for them: deleting the model cache would throw away a
# download that may have taken an hour; ownerReferences still remove it with the RerankerDeployment.
RETAINED_KINDS = frozenset({"PersistentVolumeClaim"})

# Fields holding resource.Quantity values (or maps of them, like requests/limits) in the kinds rendered here.
QUANTITY_KEYS = frozenset({"requests", "limits", "sizeLimit", "averageValue"})


@dataclass(frozen=True)
class Plan:
    """What to write so that the live children match the desired ones."""

    create: tuple[dict[str, Any], ...] = ()
    update: tuple[dict[str, Any], ...] = ()
    recreate: tuple[dict[str, Any], ...] = ()  # immutable pod templates (Jobs): delete, then create
    delete: tuple[ChildKey, ...] = ()
    retain: tuple[ChildKey, ...] = ()
    scaled: tuple[int | None, int] | None = None  # Deployment replicas (from, to) when the spec sets them
    # Deployment spec.replicas applied under HANDOVER_MANAGER before the operator stops sending it.
    hand_over: dict[str, Any] | None = None
    # The whole Deployment at its current replica count, applied first when the operator takes replicas back.
    take_back: dict[str, Any] | None = None
    # Replicas to set through /scale: a Deployment left at 0 by scale to zero that must run again.
    wake: int | None = None
    # Why a changed child is left as it is (a cache claim cannot shrink or change class/access mode).
    held: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.recreate or self.delete or self.wake)


@dataclass
class Outcome:
    """The result of one pass: the status to write and what was changed (for Events and metrics)."""

    status: dict[str, Any]
    plan: Plan = field(default_factory=Plan)
    invalid_message: str | None = None
    rejected_message: str | None = None  # the API server refused a child (422)
    cache_resize: str | None = None  # the cache claim keeps its size (held by the plan or refused by the API)
    reads_events: bool = False  # the status rests on Warning Events, which no watch reports: never settled


def is_subset(want: Any, have: Any, *, quantity: bool = False) -> bool:
    """True when every field of `want` is present in `have` with the same value.

    Lists must have the same length and match element by element: the operator owns its lists whole
    (containers, ports, env), so an extra or missing element is drift. Fields the API server or other
    controllers add (defaults, status, managedFields) are ignored because they are absent from `want`.
    Quantities (resources, sizeLimit, storage, HPA targets) compare by value: the API server rewrites them
    in canonical form ("1024Mi" is stored as "1Gi").
    """
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            k in have and is_subset(v, have[k], quantity=quantity or k in QUANTITY_KEYS)
            for k, v in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(is_subset(w, h, quantity=False) for w, h in zip(want, have, strict=True))
        )
    return want == have or (quantity and same_quantity(want, have))


def child_key(obj: Mapping[str, Any]) -> ChildKey:
    return obj["kind"], obj["metadata"]["name"]


def plan_changes(
    desired: Sequence[Mapping[str, Any]],
    live: Mapping[ChildKey, Mapping[str, Any]],
    *,
    hand_over: dict[str, Any] | None = None,
    take_back: dict[str, Any] | None = None,
    force: frozenset[ChildKey] = frozenset(),
    wake: int | None = None,
) -> Plan:
    """Pure: children to create (missing), update (drifted or in `force`), delete (no longer desired) or retain."""
    wanted = {child_key(obj): obj for obj in desired}
    create = tuple(dict(obj) for key, obj in wanted.items() if key not in live)
    changed = [
        dict(obj)
        for key, obj in wanted.items()
        if key in live and (key in force or not is_subset(_comparable(obj), live[key]))
    ]
    held = {child_key(obj): claim_change_refused(obj, live[child_key(obj)]) for obj in changed}
    held = {key: message for key, message in held.items() if message}
    changed = [obj for obj in changed if child_key(obj) not in held]
    recreate = tuple(obj for obj in changed if _template_replaced(obj, live[child_key(obj)]))
    update = tuple(obj for obj in changed if obj not in recreate)
    stale = [key for key in live if key not in wanted]
    return Plan(
        create=create,
        update=update,
        recreate=recreate,
        delete=tuple(key for key in stale if key[0] not in RETAINED_KINDS),
        retain=tuple(key for key in stale if key[0] in RETAINED_KINDS),
        scaled=(0, wake) if wake else _scaling(update, live),
        hand_over=hand_over,
        take_back=take_back,
        wake=wake,
        held=tuple(held.values()),
    )


def claim_change_refused(desired: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
    """Why a PersistentVolumeClaim cannot become `desired` (None: it can, or it is not a claim).

    kube-apiserver keeps a claim's spec immutable except for growing resources.requests.storage
    (ValidatePersistentVolumeClaimUpdate; growing also needs a StorageClass with allowVolumeExpansion, which
    only the API server knows: its refusal is handled where the claim is written). Applying anything else
    would be refused on every pass.
    """
    if desired["kind"] != "PersistentVolumeClaim":
        return None
    name = desired["metadata"]["name"]
    want, have = desired.get("spec") or {}, live.get("spec") or {}
    for field_name in ("storageClassName", "accessModes"):
        if field_name in want and field_name in have and want[field_name] != have[field_name]:
            return (
                f"PersistentVolumeClaim {name} kept as it is: its {field_name} cannot change after creation "
                f"({have[field_name]} -> {want[field_name]}); delete the claim to have it re-created "
                "(the model is downloaded again)"
            )
    size = ((want.get("resources") or {}).get("requests") or {}).get("storage")
    current = ((have.get("resources") or {}).get("requests") or {}).get("storage")
    if size and current and parse_quantity(size) < parse_quantity(current):
        return (
            f"PersistentVolumeClaim {name} kept at {current}: a claim cannot shrink (spec.model.cache.size "
            f"{size}); delete the claim to have it re-created smaller (the model is downloaded again)"
        )
    return None


def settle_replicas(
    desired: list[dict[str, Any]], live: Mapping[ChildKey, Mapping[str, Any]], replicas_set: bool
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any] | None, frozenset[ChildKey]]:
    """Pure: who owns Deployment spec.replicas, so that the count never drops on a hand-over.

    Under server-side apply a field its only manager stops sending is removed, and the Deployment would fall
    back to 1 replica before the HPA acts. So when autoscaling starts (the rendered Deployment has no
    replicas) while the operator still owns the field, the current count is first applied under
    HANDOVER_MANAGER (the hand-over manifest) and the Deployment re-applied without it. When autoscaling
    stops, the operator takes the field back at the current count (the take-back manifest, applied first),
    then moves to spec.replicas if the spec sets a different one; unset, the current count stays.
    Returns (desired, hand-over manifest, take-back manifest, keys to apply even without drift).
    """
    deployment = next((obj for obj in desired if obj["kind"] == "Deployment"), None)
    current = live.get(child_key(deployment)) if deployment is not None else None
    if deployment is None or current is None:
        return desired, None, None, frozenset()
    key = child_key(deployment)
    count = (current.get("spec") or {}).get("replicas")
    if count is None:
        return desired, None, None, frozenset()
    if count == 0 and "replicas" in deployment["spec"] and ("HorizontalPodAutoscaler", key[1]) in live:
        # Autoscaling turned off while scaled to zero: 0 was the router's, and no router wakes it any more.
        count = 1
    if "replicas" not in deployment["spec"]:
        if not owns_field(current, FIELD_MANAGER, ("spec", "replicas")):
            return desired, None, None, frozenset()
        meta = deployment["metadata"]
        hand_over = {
            "apiVersion": deployment["apiVersion"],
            "kind": "Deployment",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": count},
        }
        return desired, hand_over, None, frozenset({key})
    at_count = {**deployment, "spec": {**deployment["spec"], "replicas": count}}
    if not replicas_set:
        desired = [at_count if child_key(obj) == key else obj for obj in desired]
    if not managed_fields_known(current) or owns_field(current, FIELD_MANAGER, ("spec", "replicas")):
        return desired, None, None, frozenset()
    take_back = at_count if replicas_set and deployment["spec"]["replicas"] != count else None
    return desired, None, take_back, frozenset({key})


def wake_replicas(
    spec: RerankerDeploymentSpec, live: Mapping[ChildKey, Mapping[str, Any]], name: str
) -> int | None:
    """Pure: the replicas to bring an autoscaled Deployment at 0 back to, or None.

    Scale to zero leaves the Deployment at 0 replicas, and the HPA does nothing while its target is at 0. Once
    minReplicas is 1 or more again (no router scales from zero any more), the operator sets minReplicas through
    the scale subresource, as the router would; from there the HPA takes over.
    """
    scaling = spec.autoscaling
    current = live.get(("Deployment", name))
    if not spec.autoscaling_enabled or scaling is None or scaling.min_replicas == 0 or current is None:
        return None
    return scaling.min_replicas if (current.get("spec") or {}).get("replicas") == 0 else None


def managed_fields_known(obj: Mapping[str, Any]) -> bool:
    """Whether the object reports managedFields (the API server always does; some test servers do not)."""
    return bool((obj.get("metadata") or {}).get("managedFields"))


def owns_field(obj: Mapping[str, Any], manager: str, path: Sequence[str]) -> bool:
    """Whether `manager` owns the field at `path` through server-side apply (managedFields, FieldsV1)."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") != manager or entry.get("operation") != "Apply" or entry.get("subresource"):
            continue
        node = entry.get("fieldsV1") or {}
        for part in path:
            node = node.get(f"f:{part}") if isinstance(node, Mapping) else None
            if node is None:
                break
        else:
            return True
    return False


def _scaling(update: Sequence[Mapping[str, Any]], live: Mapping[ChildKey, Mapping[str, Any]]):
    for obj in update:
        # The server Deployment only: the router's replicas are a plain spec field, announced as an update.
        if obj["kind"] == "Deployment" and _component(obj) != ROUTER_COMPONENT and "replicas" in obj["spec"]:
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


def prune_children(kube: KubeClient, namespace: str, keys: Iterable[ChildKey]) -> list[ChildKey]:
    """Delete the given children; returns those that existed."""
    return [key for key in keys if kube.delete(key[0], namespace, key[1])]


def observe(
    kube: KubeClient,
    cache: ChildCache,
    name: str,
    namespace: str,
    live: Mapping[ChildKey, Mapping[str, Any]],
    *,
    cache_requested: bool,
) -> Observed:
    """What status needs: the Deployment, Job and PVC (from `live`), ReplicaSets and pods (cache), and Warning
    Events only when a wait cannot be explained without them."""
    pods = cache.objects("Pod", namespace, name)
    download_pods = [pod for pod in pods if _component(pod) == "download"]
    pvc = live.get(("PersistentVolumeClaim", cache_pvc_name(name))) if cache_requested else None
    events: list[dict[str, Any]] = []
    events_listed = needs_events(pvc, pods)
    if events_listed:
        ours = {obj["metadata"]["name"] for obj in (*pods, *([pvc] if pvc else []))}
        warnings = kube.list("Event", namespace, {}, fields={"type": "Warning"})
        events = [e for e in warnings if (e.get("involvedObject") or {}).get("name") in ours]
    return Observed(
        deployment=live.get(("Deployment", name)),
        router=live.get(("Deployment", router_name(name))),
        # The router's ReplicaSets carry the same instance label; their revisions are not the server's.
        replica_sets=[
            rs for rs in cache.objects("ReplicaSet", namespace, name) if _component(rs) == SERVER_COMPONENT
        ],
        pods=[pod for pod in pods if _component(pod) == SERVER_COMPONENT],
        job=next((obj for (kind, _), obj in live.items() if kind == "Job"), None),
        cache_requested=cache_requested,
        pvc=pvc,
        download_pods=download_pods,
        events=events,
        events_listed=events_listed,
    )


def _component(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(COMPONENT_LABEL)


def reconcile(
    kube: KubeClient,
    cache: ChildCache,
    name: str,
    namespace: str,
    spec: Mapping[str, Any],
    *,
    uid: str | None,
    generation: int | None,
    old_status: Mapping[str, Any] | None = None,
    resync: bool = False,
    cluster_version: str | None = None,
    write: bool = True,
    record: Callable[[dict[str, Any]], None] | None = None,
    held_rejection: str | None = None,
) -> Outcome:
    """One full pass. An invalid spec or a refused child leaves the children untouched and is reported.

    `write=False` only observes and reports (a RerankerDeployment waiting out a back-off after a 422, whose
    refusal `held_rejection` stays reported meanwhile); `record` is called with each object the API server
    returns for a write.
    """
    started = time.perf_counter()
    try:
        outcome = _reconcile(
            kube,
            cache,
            name,
            namespace,
            spec,
            uid=uid,
            generation=generation,
            old_status=old_status or {},
            resync=resync,
            cluster_version=cluster_version,
            write=write,
            record=record,
            held_rejection=held_rejection,
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
    result = "ok"
    if outcome.invalid_message:
        result = "invalid_spec"
    elif outcome.rejected_message:
        result = "rejected"
    metrics.RECONCILE_TOTAL.labels(result).inc()
    return outcome


def _reconcile(
    kube,
    cache,
    name,
    namespace,
    spec,
    *,
    uid,
    generation,
    old_status,
    resync,
    cluster_version,
    write,
    record,
    held_rejection,
) -> Outcome:
    live = cache.children(namespace, name)
    invalid_message = rejected_message = None
    try:
        parsed = load_spec(dict(spec))
        desired = render_all(name, namespace, parsed, uid=uid, generation=generation)
        desired, hand_over, take_back, force = settle_replicas(
            desired, live, replicas_set=parsed.replicas is not None
        )
        plan = plan_changes(
            desired,
            live,
            hand_over=hand_over,
            take_back=take_back,
            force=force,
            wake=wake_replicas(parsed, live, name),
        )
        # Checked before the first write, so a child the API server would refuse changes nothing.
        problems = child_problems((*plan.create, *plan.update, *plan.recreate), cluster_version)
        if problems:
            raise InvalidSpecError(problems)
    except InvalidSpecError as e:
        parsed, desired, plan, invalid_message = None, None, Plan(), str(e)

    refused: list[str] = []
    if write and not plan.empty:
        try:
            refused = _execute(kube, cache, name, namespace, plan, live, record)
        except kubernetes.client.ApiException as e:
            if e.status != 422:
                raise
            rejected_message = _rejection(e)
            metrics.RECONCILE_ERRORS.labels("rejected").inc()
        if resync and rejected_message is None:
            for obj in (*plan.create, *plan.update, *plan.recreate):
                metrics.DRIFT_REPAIRS.labels(obj["kind"]).inc()
    elif not write:
        plan, rejected_message = Plan(), held_rejection
    metrics.record_managed((namespace, name), [kind for kind, _ in live])

    cache_requested = any(kind == "Job" for kind, _ in map(child_key, desired or ())) or (
        desired is None and any(kind == "Job" for kind, _ in live)
    )
    observed = observe(kube, cache, name, namespace, live, cache_requested=cache_requested)
    status = compute_status(
        parsed,
        generation,
        observed,
        name=name,
        now=now_rfc3339(),
        invalid_message=invalid_message or rejected_message,
        invalid_reason="RejectedByAPIServer" if rejected_message else "InvalidSpec",
        old_conditions=old_status.get("conditions") or (),
        clients=client_settings(name, namespace, parsed) if parsed is not None else None,
        cache_resize="; ".join((*plan.held, *refused)) or None,
    )
    reported = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    metrics.record_status((namespace, name), reported)
    return Outcome(
        status=reported,
        plan=plan,
        invalid_message=invalid_message,
        rejected_message=rejected_message,
        cache_resize="; ".join((*plan.held, *refused)) or None,
        reads_events=observed.events_listed,
    )


def _execute(
    kube: KubeClient,
    cache: ChildCache,
    name: str,
    namespace: str,
    plan: Plan,
    live: dict[ChildKey, Any],
    record,
) -> list[str]:
    """Write the plan: replicas hand-over/take-back first, Jobs to recreate deleted, applies, then prunes.

    Returns the API server's refusals of a cache claim's new size (403 from the resize admission plugin when
    the StorageClass cannot expand, 422 while the claim is not yet bound): reported, the rest still applied,
    and not retried until the spec or a child changes."""
    refused = []
    if plan.hand_over is not None:
        kube.hand_over(plan.hand_over, HANDOVER_MANAGER)
    if plan.take_back is not None:
        kube.apply(dict(plan.take_back))
    if plan.wake is not None:
        kube.scale(namespace, name, plan.wake)
    prune_children(kube, namespace, map(child_key, plan.recreate))
    for manifest in (*plan.create, *plan.update, *plan.recreate):
        replaced = None if manifest in plan.recreate else live.get(child_key(manifest))
        try:
            # Kept as the cache keeps children: a Deployment's reply is mostly managedFields, and a pass holds
            # each reply to its end (at 1 000 objects the full replies were 20 MB of the operator's peak).
            obj = slim(manifest["kind"], kube.apply(dict(manifest)))
        except kubernetes.client.ApiException as e:
            if manifest["kind"] != "PersistentVolumeClaim" or replaced is None or e.status not in (403, 422):
                raise
            refused.append(
                f"PersistentVolumeClaim {manifest['metadata']['name']} kept at its size: "
                + _rejection(e).removeprefix("refused by the API server: ")
            )
            continue
        cache.remember(obj, (replaced or {}).get("metadata", {}).get("resourceVersion"))
        if record is not None:
            record(obj)
        live[child_key(obj)] = obj
    for key in prune_children(kube, namespace, plan.delete):
        live.pop(key, None)
        cache.forget(namespace, name, key)
    return refused


def _rejection(e: kubernetes.client.ApiException) -> str:
    """The API server's reason for a 422, with the field paths of its causes."""
    try:
        body = json.loads(e.body)
    except (TypeError, ValueError):
        return f"refused by the API server: {str(e.body or e.reason)[:500]}"
    message = str(body.get("message") or e.reason)
    causes = [
        f"{cause['field']}: {cause.get('message', '')}"
        for cause in (body.get("details") or {}).get("causes") or ()
        if cause.get("field") and cause["field"] not in message
    ]
    return "; ".join([f"refused by the API server: {message}", *causes])[:1000]


def temporary_error(e: kubernetes.client.ApiException) -> kopf.TemporaryError:
    """Map an API failure to a retry with a delay that suits it."""
    status = e.status or 0
    if status == 409:
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
