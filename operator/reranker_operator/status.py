"""Status is observed, not remembered: conditions computed from what the children report (pure, no I/O).

Condition types (metav1.Condition shape), following the kstatus conventions (sigs.k8s.io/cli-utils) that
`kubectl wait`, Flux and Argo CD read:
- Ready: enough ready replicas run the current pod template of a valid spec (False while InvalidSpec), and
  the router's replicas are ready when there is a router; with scale to zero (`autoscaling.minReplicas: 0`)
  0 server replicas are Ready too (reason ScaledToZero: the router starts one on the first request). While
  not, the reason and message of the first wait that blocks it (`waits.py`: Unschedulable, ImagePullBackOff,
  FailedMount, ProvisioningFailed, ...).
- Reconciling: the operator is still working towards the current generation (abnormal-true: set only while so).
- Stalled: it cannot get there without a change by a person (invalid or refused spec, rollout or download
  that gave up, a cache size the claim cannot take: `CacheResizeRefused`).
- Progressing: a rollout is under way; the message says what the new pods wait for.
- Degraded: a pod of the current template keeps failing; the message is its termination message.
- ModelCached: state of the model download Job (only when caching is requested).
- InvalidSpec: the spec could not be rendered or a child was refused; the last good children are untouched.
status.observedGeneration is the generation the conditions describe: with Stalled=True it means "seen, and
failed", which kstatus reports as Failed rather than Current.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from reranker_operator.api import ClientSettings, RerankerDeploymentSpec, RerankerDeploymentStatus
from reranker_operator.render.labels import selector_string
from reranker_operator.waits import cache_wait, container_failure, first_wait

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
CONDITION_TYPES = ("Ready", "Reconciling", "Stalled", "Progressing", "Degraded", "ModelCached", "InvalidSpec")
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


@dataclass(frozen=True)
class Observed:
    """What the API reports about one RerankerDeployment's children."""

    deployment: Mapping[str, Any] | None = None
    replica_sets: Sequence[Mapping[str, Any]] = ()
    pods: Sequence[Mapping[str, Any]] = ()
    job: Mapping[str, Any] | None = None
    cache_requested: bool = False
    pvc: Mapping[str, Any] | None = None  # the shared cache's PVC
    download_pods: Sequence[Mapping[str, Any]] = ()  # the download Job's pods
    events: Sequence[Mapping[str, Any]] = ()  # Warning Events, read only when a wait needs them
    router: Mapping[str, Any] | None = None  # the router Deployment
    router_expected: bool = False  # the spec asks for a router
    scale_to_zero: bool = False  # 0 server replicas is a normal state (autoscaling.minReplicas 0)
    # Warning Events were read (a wait only they explain): Events are not watched, so a later one changes the
    # status without any watch event, and only another pass (the resync sweep) sees it.
    events_listed: bool = False


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    """A condition without a timestamp (set_condition adds it)."""
    return {"type": type_, "status": status, "reason": reason, "message": message}


def set_condition(old_conditions: Iterable[Mapping[str, Any]], new: Mapping[str, Any], now: str) -> dict:
    """`new` with lastTransitionTime kept from the old condition of its type unless the status flipped."""
    for old in old_conditions or ():
        if old.get("type") == new["type"]:
            if old.get("status") == new["status"] and old.get("lastTransitionTime"):
                return {**new, "lastTransitionTime": old["lastTransitionTime"]}
            break
    return {**new, "lastTransitionTime": now}


def current_pods(observed: Observed) -> list[Mapping[str, Any]]:
    """Pods of the newest ReplicaSet (the current template); all pods when no ReplicaSet is visible."""
    if not observed.replica_sets:
        return list(observed.pods)

    def revision(rs: Mapping[str, Any]) -> int:
        try:
            return int(_annotations(rs).get(REVISION_ANNOTATION, "0"))
        except ValueError:
            return 0

    newest = max(observed.replica_sets, key=revision)
    template_hash = _labels(newest).get("pod-template-hash")
    if template_hash is None:
        return list(observed.pods)
    return [pod for pod in observed.pods if _labels(pod).get("pod-template-hash") == template_hash]


def ready_condition(observed: Observed) -> dict[str, str]:
    """Ready: the Deployments (server, and router when there is one) saw the current generation and all their
    desired replicas are updated and ready; 0 server replicas count as ready with scale to zero."""
    server = _server_ready(observed)
    if server["status"] != TRUE or not observed.router_expected:
        return server
    router = observed.router
    if router is None:
        return condition("Ready", FALSE, "RouterMissing", "the router Deployment has not been created yet")
    desired, updated, ready = _replica_counts(router)
    if not _deployment_caught_up(router) or updated < desired or ready < desired:
        return condition(
            "Ready",
            FALSE,
            "RouterNotReady",
            f"{min(updated, ready)}/{desired} router replicas of the current version ready "
            f"(server: {server['message']})",
        )
    return server


def _server_ready(observed: Observed) -> dict[str, str]:
    dep = observed.deployment
    if dep is None:
        return condition("Ready", FALSE, "DeploymentMissing", "the Deployment has not been created yet")
    desired, updated, ready = _replica_counts(dep)
    if not _deployment_caught_up(dep):
        return condition(
            "Ready", FALSE, "RolloutPending", "the Deployment controller has not seen the latest change"
        )
    if desired == 0 and observed.scale_to_zero:
        return condition(
            "Ready",
            TRUE,
            "ScaledToZero",
            "scaled to zero while idle: the router starts a server pod on the first request and holds "
            "requests while it starts",
        )
    if desired == 0:
        return condition("Ready", FALSE, "ScaledToZero", "the Deployment has 0 replicas")
    if updated >= desired and ready >= desired:
        return condition("Ready", TRUE, "ReplicasReady", f"{ready}/{desired} replicas ready")
    return condition(
        "Ready",
        FALSE,
        "ReplicasNotReady",
        f"{min(updated, ready)}/{desired} replicas of the current version ready",
    )


def progressing_condition(observed: Observed, ready: Mapping[str, str]) -> dict[str, str]:
    """Progressing: True while a rollout is under way, with what the new pods are waiting for."""
    dep = observed.deployment
    if dep is None:
        return condition("Progressing", TRUE, "Creating", "creating the Deployment")
    if ready["status"] == TRUE:
        return condition("Progressing", FALSE, "RolloutComplete", ready["message"])
    desired, updated, ready_count = _replica_counts(dep)
    for cond in (dep.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return condition("Progressing", FALSE, "ProgressDeadlineExceeded", cond.get("message", ""))
    pending = [pod for pod in current_pods(observed) if _phase(pod) == "Pending"]
    unschedulable = [msg for pod in pending if (msg := _scheduling_message(pod))]
    if unschedulable:
        count = len(pending)
        noun = "pod" if count == 1 else "pods"
        return condition(
            "Progressing", TRUE, "PodsPending", f"{count} new {noun} Pending: {unschedulable[0]}"
        )
    if pending:
        return condition("Progressing", TRUE, "PodsStarting", f"{len(pending)} new pod(s) starting")
    return condition(
        "Progressing", TRUE, "RollingOut", f"{updated}/{desired} replicas updated, {ready_count} ready"
    )


def degraded_condition(observed: Observed) -> dict[str, str]:
    """Degraded: a pod of the current template is failing; carries its termination message."""
    for pod in current_pods(observed):
        for cs in (pod.get("status") or {}).get("containerStatuses") or ():
            failure = container_failure(cs)
            if failure is not None:
                reason, message = failure
                pod_name = (pod.get("metadata") or {}).get("name", "?")
                text = f"pod {pod_name} container {cs.get('name', '?')}: {message}"
                return condition("Degraded", TRUE, reason, text)
    return condition("Degraded", FALSE, "AsExpected", "")


def model_cached_condition(observed: Observed) -> dict[str, str] | None:
    """ModelCached from the download Job; None when caching is not requested."""
    if not observed.cache_requested:
        return None
    job = observed.job
    if job is None:
        return condition("ModelCached", UNKNOWN, "JobMissing", "the download Job has not been created yet")
    status = job.get("status") or {}
    for cond in status.get("conditions") or ():
        if cond.get("status") != TRUE:
            continue
        if cond.get("type") == "Complete":
            return condition("ModelCached", TRUE, "Downloaded", "the model is in the cache volume")
        if cond.get("type") == "Failed":
            message = cond.get("message") or cond.get("reason") or "the download Job failed"
            return condition("ModelCached", FALSE, "DownloadFailed", message)
    if status.get("succeeded", 0) >= 1:
        return condition("ModelCached", TRUE, "Downloaded", "the model is in the cache volume")
    return condition("ModelCached", FALSE, "Downloading", "the download Job is running")


def invalid_spec_condition(message: str | None, reason: str = "InvalidSpec") -> dict[str, str]:
    """InvalidSpec: True with the validation (or API server) message a person can act on."""
    if message:
        return condition("InvalidSpec", TRUE, reason, message)
    return condition("InvalidSpec", FALSE, "SpecValid", "")


def ready_despite_invalid(ready: Mapping[str, str], invalid: Mapping[str, str]) -> dict[str, str]:
    """Ready is False while the spec is invalid: the pods that serve run an older spec, not this one."""
    if invalid["status"] != TRUE:
        return dict(ready)
    return condition(
        "Ready",
        FALSE,
        invalid["reason"],
        f"the current spec is not applied (see InvalidSpec); the last good spec keeps serving: {ready['message']}",
    )


def stalled_condition(
    invalid: Mapping[str, str],
    progressing: Mapping[str, str],
    model_cached: Mapping[str, str] | None,
    cache_resize: str | None = None,
) -> dict[str, str]:
    """Stalled (kstatus): no progress is possible until a person changes something (`cache_resize`: why the
    cache claim keeps its old size; the rest of the spec is applied)."""
    if invalid["status"] == TRUE:
        return condition("Stalled", TRUE, invalid["reason"], invalid["message"])
    if cache_resize:
        return condition("Stalled", TRUE, "CacheResizeRefused", cache_resize)
    if progressing["reason"] == "ProgressDeadlineExceeded":
        return condition("Stalled", TRUE, "ProgressDeadlineExceeded", progressing["message"])
    if model_cached is not None and model_cached["reason"] == "DownloadFailed":
        return condition("Stalled", TRUE, "DownloadFailed", model_cached["message"])
    return condition("Stalled", FALSE, "NotStalled", "")


def reconciling_condition(ready: Mapping[str, str], stalled: Mapping[str, str]) -> dict[str, str]:
    """Reconciling (kstatus): True while the children are still converging on the current generation."""
    if stalled["status"] == TRUE:
        return condition("Reconciling", FALSE, "Stalled", "see the Stalled condition")
    if ready["status"] == TRUE:
        return condition("Reconciling", FALSE, "Reconciled", ready["message"])
    if ready["reason"] == "ScaledToZero":
        return condition("Reconciling", FALSE, "ScaledToZero", ready["message"])
    return condition("Reconciling", TRUE, ready["reason"], ready["message"])


def compute_status(
    spec: RerankerDeploymentSpec | None,
    generation: int | None,
    observed: Observed,
    *,
    name: str,
    now: str,
    invalid_message: str | None = None,
    invalid_reason: str = "InvalidSpec",
    old_conditions: Iterable[Mapping[str, Any]] = (),
    clients: ClientSettings | None = None,
    cache_resize: str | None = None,
) -> RerankerDeploymentStatus:
    """The whole status from observed children; `spec` is None when it failed to load (InvalidSpec)."""
    if spec is not None:
        observed = replace(
            observed,
            cache_requested=spec.model.cache is not None,
            router_expected=spec.router_enabled,
            scale_to_zero=spec.scale_to_zero is not None,
        )
    conditions = compute_conditions(
        observed,
        invalid_message=invalid_message,
        invalid_reason=invalid_reason,
        old_conditions=old_conditions,
        now=now,
        cache_resize=cache_resize,
    )
    for cond in conditions:
        cond["observedGeneration"] = generation
    return RerankerDeploymentStatus.model_validate(
        {
            "observedGeneration": generation,
            **replica_summary(observed),
            "selector": selector_string(name),
            "endpoint": clients.endpoint if clients is not None else None,
            "clients": clients,
            "conditions": conditions,
        }
    )


def compute_conditions(
    observed: Observed,
    *,
    invalid_message: str | None = None,
    invalid_reason: str = "InvalidSpec",
    old_conditions: Iterable[Mapping[str, Any]] = (),
    now: str,
    cache_resize: str | None = None,
) -> list[dict[str, Any]]:
    """All conditions, in CONDITION_TYPES order, with transition times carried over."""
    rollout = ready_condition(observed)
    model_cached = model_cached_condition(observed)
    # A finished download's failed attempts no longer block anything.
    downloading = () if model_cached is None or model_cached["status"] == TRUE else observed.download_pods
    if rollout["status"] != TRUE:
        wait = first_wait(observed.pvc, downloading, current_pods(observed), observed.events, now=now)
        rollout = _explain(rollout, wait)
    if model_cached is not None and model_cached["status"] != TRUE:
        model_cached = _explain(model_cached, cache_wait(observed.pvc, downloading, observed.events, now=now))
    progressing = progressing_condition(observed, rollout)
    invalid = invalid_spec_condition(invalid_message, invalid_reason)
    ready = ready_despite_invalid(rollout, invalid)
    stalled = stalled_condition(invalid, progressing, model_cached, cache_resize)
    fresh = [
        ready,
        reconciling_condition(ready, stalled),
        stalled,
        progressing,
        degraded_condition(observed),
        model_cached,
        invalid,
    ]
    old = list(old_conditions or ())
    return [set_condition(old, cond, now) for cond in fresh if cond is not None]


def replica_summary(observed: Observed) -> dict[str, int]:
    """replicas / readyReplicas / updatedReplicas as the Deployment reports them."""
    if observed.deployment is None:
        return {"replicas": 0, "readyReplicas": 0, "updatedReplicas": 0}
    desired, updated, ready = _replica_counts(observed.deployment)
    return {"replicas": desired, "readyReplicas": ready, "updatedReplicas": updated}


def _replica_counts(dep: Mapping[str, Any]) -> tuple[int, int, int]:
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    desired = spec.get("replicas", 1)
    return desired, status.get("updatedReplicas", 0) or 0, status.get("readyReplicas", 0) or 0


def _deployment_caught_up(dep: Mapping[str, Any]) -> bool:
    generation = (dep.get("metadata") or {}).get("generation")
    observed = (dep.get("status") or {}).get("observedGeneration")
    return generation is None or (observed is not None and observed >= generation)


def _explain(cond: dict[str, str], wait) -> dict[str, str]:
    """A not-True condition carrying the reason and message of what blocks it (unchanged without a wait)."""
    if wait is None:
        return cond
    return condition(cond["type"], FALSE, wait.reason, wait.message)


def _scheduling_message(pod: Mapping[str, Any]) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "PodScheduled" and cond.get("status") == FALSE:
            return cond.get("message") or cond.get("reason") or "not scheduled"
    return None


def _phase(pod: Mapping[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase", "Pending")


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}
