"""Silent waits made visible: why a RerankerDeployment is not Ready, in Kubernetes' own words (pure, no I/O).

A pod can wait for hours without a failing main container: an init container or the download pod cannot pull
its image or crash-loops, a Secret it mounts does not exist (the kubelet's FailedMount Event), no node has a
free GPU or the selected label, or the cache PVC cannot be provisioned (ProvisioningFailed / FailedBinding
Events). Each finder returns the first such wait with the reason Kubernetes gives and its message, so the
Ready condition (and the `kubectl get rrd` Reason column) says what to fix.

Inputs are the objects as the API returns them: pods (`status.initContainerStatuses`,
`status.containerStatuses`, the `PodScheduled` condition), the PVC (`status.phase`) and core/v1 Events
(`involvedObject`, `type`, `reason`, `message`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Waiting reasons that mean "this container keeps failing", not "it is still starting".
FAILING_WAIT_REASONS = {
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}
# Warning Events that explain a pod stuck before its containers exist (they have no status of their own yet).
POD_SETUP_EVENTS = ("FailedMount", "FailedAttachVolume", "FailedCreatePodSandBox")
# Warning Events that explain a Pending PVC: no class/volume, the provisioner refused (class or access mode).
PVC_EVENTS = ("ProvisioningFailed", "FailedBinding")
# The kubelet repeats a failing volume setup at least every ~2 minutes (its retry backoff caps at 2m2s), which
# refreshes the Event; an older one describes a failure that has since cleared (e.g. a Secret created late).
FRESH_POD_EVENT = timedelta(minutes=5)


@dataclass(frozen=True)
class Wait:
    """Why something cannot make progress: a CamelCase reason and the message a person acts on."""

    reason: str
    message: str


def container_failure(cs: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when a container status shows a failing container; None while it is fine or starting."""
    state = cs.get("state") or {}
    last = cs.get("lastState") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated")
    last_terminated = last.get("terminated")
    failed_now = terminated is not None and terminated.get("exitCode", 0) != 0
    failing_wait = waiting.get("reason") in FAILING_WAIT_REASONS
    if not (failed_now or failing_wait):
        return None
    # The pod's own words first: the server writes why it cannot start to the termination log.
    for term in (terminated, last_terminated):
        if term and term.get("message"):
            return waiting.get("reason") or term.get("reason") or "ContainerFailed", term["message"].strip()
    if waiting.get("message"):
        return waiting["reason"], waiting["message"]
    term = terminated or last_terminated or {}
    reason = waiting.get("reason") or term.get("reason") or "ContainerFailed"
    return reason, f"{reason} (exit code {term.get('exitCode', '?')}, {cs.get('restartCount', 0)} restarts)"


def pod_wait(
    pod: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]] = (),
    *,
    what: str = "pod",
    now: str | None = None,
) -> Wait | None:
    """Why one pod cannot start: unschedulable, an init or main container failing, or a failed volume setup
    (a Warning Event refreshed within FRESH_POD_EVENT of `now`, an RFC 3339 time)."""
    status = pod.get("status") or {}
    name = _name(pod)
    for cond in status.get("conditions") or ():
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            message = cond.get("message") or "no node fits the pod"
            return Wait(cond.get("reason") or "Unschedulable", f"{what} {name}: {message}")
    for key, kind in (("initContainerStatuses", "init container"), ("containerStatuses", "container")):
        for cs in status.get(key) or ():
            failure = container_failure(cs)
            if failure is not None:
                reason, message = failure
                return Wait(reason, f"{what} {name} {kind} {cs.get('name', '?')}: {message}")
    if status.get("phase", "Pending") == "Pending":
        event = _newest_warning(events, "Pod", name, POD_SETUP_EVENTS)
        if event is not None and _fresh(event, now):
            return Wait(event["reason"], f"{what} {name}: {event.get('message', '').strip()}")
    return None


def pvc_wait(pvc: Mapping[str, Any] | None, events: Sequence[Mapping[str, Any]] = ()) -> Wait | None:
    """Why the cache PVC stays Pending, from its Warning Events; None once it is Bound or while nothing failed."""
    if pvc is None or (pvc.get("status") or {}).get("phase", "Pending") != "Pending":
        return None
    name = _name(pvc)
    event = _newest_warning(events, "PersistentVolumeClaim", name, PVC_EVENTS)
    if event is None:
        return None
    return Wait(event["reason"], f"cache PVC {name} is Pending: {event.get('message', '').strip()}")


def needs_events(pvc: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> bool:
    """Whether only Events can explain a wait: a Pending PVC, or a scheduled pod whose containers do not exist."""
    if pvc is not None and (pvc.get("status") or {}).get("phase", "Pending") == "Pending":
        return True
    return any(_stuck_before_containers(pod) for pod in pods)


def first_wait(
    pvc: Mapping[str, Any] | None,
    download_pods: Sequence[Mapping[str, Any]],
    server_pods: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]] = (),
    *,
    now: str | None = None,
) -> Wait | None:
    """The wait that blocks a RerankerDeployment first: the cache volume, the download pod, then server pods."""
    found = pvc_wait(pvc, events)
    if found is not None:
        return found
    # The newest download attempt first: an older failed attempt may already be retried.
    newest_first = sorted(download_pods, key=_created, reverse=True)
    for pods, what in ((newest_first, "download pod"), (server_pods, "pod")):
        for pod in pods:
            found = pod_wait(pod, events, what=what, now=now)
            if found is not None:
                return found
    return None


def cache_wait(
    pvc: Mapping[str, Any] | None,
    download_pods: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]] = (),
    *,
    now: str | None = None,
) -> Wait | None:
    """What blocks the shared cache's download (for ModelCached): its PVC or its Job's pod."""
    return first_wait(pvc, download_pods, (), events, now=now)


def _stuck_before_containers(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase", "Pending") != "Pending":
        return False
    scheduled = any(
        c.get("type") == "PodScheduled" and c.get("status") == "True" for c in status.get("conditions") or ()
    )
    return scheduled and not any(
        cs.get("state", {}).get("running") or cs.get("state", {}).get("terminated")
        for key in ("initContainerStatuses", "containerStatuses")
        for cs in status.get(key) or ()
    )


def _newest_warning(
    events: Sequence[Mapping[str, Any]], kind: str, name: str, reasons: Sequence[str]
) -> Mapping[str, Any] | None:
    matching = [
        event
        for event in events
        if event.get("type") == "Warning"
        and event.get("reason") in reasons
        and (event.get("involvedObject") or {}).get("kind") == kind
        and (event.get("involvedObject") or {}).get("name") == name
    ]
    return max(matching, key=_event_time, default=None)


def _fresh(event: Mapping[str, Any], now: str | None) -> bool:
    if now is None:
        return True
    try:
        return _parse_time(now) - _parse_time(_event_time(event)) <= FRESH_POD_EVENT
    except ValueError:
        return True  # no usable timestamp: report it rather than hide it


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _event_time(event: Mapping[str, Any]) -> str:
    # RFC 3339 strings in UTC compare in time order; eventTime is set by newer reporters, lastTimestamp by older.
    return (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def _created(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("creationTimestamp") or ""


def _name(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "?")
