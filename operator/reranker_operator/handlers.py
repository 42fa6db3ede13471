"""kopf handlers: each one loads, renders, applies, prunes and reports status through `reconcile()`.

- resume + create + update(field="spec") share one handler: a spec change is reconciled at once.
- A timer re-runs the same pass every `resync_seconds` while the object is idle: it repairs drift (a Service
  deleted by hand is recreated, an edited Deployment restored) and refreshes status from the children.
- An invalid spec sets InvalidSpec=True, posts a warning Event and raises PermanentError (no retries until
  the spec changes); the children keep serving the last good spec.
- No finalizer: children carry ownerReferences, so Kubernetes garbage-collects them.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import kopf

from reranker_operator import GROUP, PLURAL, VERSION, metrics
from reranker_operator.kube import KubeClient
from reranker_operator.reconcile import Outcome, is_subset, reconcile

STORAGE_PREFIX = "reranker.dev"
RESOURCE = (GROUP, VERSION, PLURAL)


@dataclass(frozen=True)
class OperatorOptions:
    """Knobs fixed when the operator starts."""

    resync_seconds: float = 30.0
    metrics_port: int | None = 9090
    max_workers: int = 8
    # Long-poll length of a watch; the server closes it and kopf re-lists (also the reconnect cadence).
    watch_server_timeout: int = 300


def build_registry(options: OperatorOptions | None = None) -> kopf.OperatorRegistry:
    """A registry holding the operator's handlers, configured by `options`."""
    options = options or OperatorOptions()
    registry = kopf.OperatorRegistry()

    def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.persistence.finalizer = f"{STORAGE_PREFIX}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=STORAGE_PREFIX, key="last-handled-configuration"
        )
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = options.watch_server_timeout
        settings.watching.client_timeout = options.watch_server_timeout + 30
        settings.watching.connect_timeout = 30
        settings.networking.request_timeout = 60
        settings.execution.max_workers = options.max_workers
        memo.kube = KubeClient()
        if options.metrics_port:
            metrics.serve(options.metrics_port)

    kopf.on.startup(id="configure", registry=registry)(configure)
    # A fresh registry lacks kopf's default login handlers; this one also configures the kubernetes client
    # (in-cluster service account or kubeconfig) that KubeClient uses.
    kopf.on.login(id="login", registry=registry)(login)
    for decorator in (kopf.on.resume, kopf.on.create):
        decorator(*RESOURCE, id="reconcile", registry=registry)(reconcile_spec)
    kopf.on.update(*RESOURCE, id="reconcile", field="spec", registry=registry)(reconcile_spec)
    kopf.timer(
        *RESOURCE,
        id="resync",
        interval=options.resync_seconds,
        # Leave a freshly edited object to the spec handler; resync only once it has settled.
        idle=options.resync_seconds,
        registry=registry,
    )(resync)
    kopf.on.delete(*RESOURCE, id="forget", optional=True, registry=registry)(forget)
    return registry


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials from the in-cluster service account or the kubeconfig, via the kubernetes client."""
    return kopf.login_via_client(**kwargs)


def reconcile_spec(
    body: kopf.Body,
    name: str,
    namespace: str,
    uid: str,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A new, resumed or changed spec: converge the children, report status, announce the changes."""
    outcome = _run(body, name, namespace, uid, meta, status, memo, resync=False)
    _write_status(patch, status, outcome)
    _announce(body, outcome)
    if outcome.invalid_message:
        kopf.warn(body, reason="InvalidSpec", message=outcome.invalid_message)
        # The status patch above is still written; PermanentError only stops retrying this spec.
        raise kopf.PermanentError(f"invalid spec: {outcome.invalid_message}")


def resync(
    body: kopf.Body,
    name: str,
    namespace: str,
    uid: str,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Periodic pass: repair drift and refresh status (an invalid spec is reported, not re-raised)."""
    if meta.get("deletionTimestamp"):
        return  # going away: never recreate children of a deleted parent
    outcome = _run(body, name, namespace, uid, meta, status, memo, resync=True)
    _write_status(patch, status, outcome)
    _announce(body, outcome, drift=True)


def forget(name: str, namespace: str, **_: Any) -> None:
    """Drop a deleted RerankerDeployment's children from the managed-objects gauge."""
    metrics.forget_managed((namespace, name))


def _run(body, name, namespace, uid, meta, status, memo, *, resync: bool) -> Outcome:
    return reconcile(
        memo.kube,
        name,
        namespace,
        copy.deepcopy(body.get("spec") or {}),
        uid=uid,
        generation=meta.get("generation"),
        old_status=copy.deepcopy(dict(status)),
        resync=resync,
    )


def _write_status(patch: kopf.Patch, status: kopf.Status, outcome: Outcome) -> None:
    # Skip no-op writes: a resync of a settled object then costs no PATCH (and no watch event).
    if not is_subset(outcome.status, dict(status)):
        patch.status.update(outcome.status)


def _announce(body: kopf.Body, outcome: Outcome, *, drift: bool = False) -> None:
    plan = outcome.plan
    verb_prefix = "Restored" if drift else "Updated"
    for obj in plan.create:
        reason = "DriftRepaired" if drift else "Created"
        kopf.info(body, reason=reason, message=f"Created {obj['kind']} {obj['metadata']['name']}")
    for obj in (*plan.update, *plan.recreate):
        reason = "DriftRepaired" if drift else "Updated"
        kopf.info(body, reason=reason, message=f"{verb_prefix} {obj['kind']} {obj['metadata']['name']}")
    if plan.scaled is not None:
        old, new = plan.scaled
        kopf.info(
            body,
            reason="Scaled",
            message=f"Scaled Deployment {body['metadata']['name']} from {old} to {new} replicas",
        )
    for kind, child in plan.delete:
        kopf.info(body, reason="Pruned", message=f"Deleted {kind} {child} (no longer in the spec)")
    for kind, child in () if drift else plan.retain:
        kopf.info(
            body,
            reason="Retained",
            message=f"Kept {kind} {child} (model cache) although the spec no longer uses it; delete it to free the storage",
        )
