"""kopf handlers: each one runs a reconcile pass through `Controller.run_pass` (load, render, apply, report).

- resume + create + update(field="spec") share one handler: a spec change is reconciled at once.
- Children are read from the operator's own watch-fed caches (`informer.py`: one list + watch per kind,
  each event slimmed as it arrives); a change of a Deployment, Job or Pod (or the deletion of any child)
  triggers a pass for its RerankerDeployment within a fraction of a second, so status follows the pods and a
  deleted or edited child is repaired at once. The RerankerDeployments themselves come through kopf.
- One operator-wide sweep every `resync_seconds` re-runs the pass for each object whose inputs changed since its
  last pass (drift a watch missed, a lost status write), as a safety net; a settled object costs a set compare
  and no API call. (kopf's per-object timers cost 1 000 tasks, a finalizer PATCH per object, and most of the
  idle CPU.)
- An invalid spec sets InvalidSpec (and Stalled) True, posts a Warning Event and raises PermanentError (no
  retries until the spec changes); the children keep serving the last good spec.
- A child the API server refuses (422) is reported the same way (reason RejectedByAPIServer) and retried with
  exponential back-off; a new spec (e.g. the field reverted) is reconciled at once.
- No finalizer: nothing has to run before a RerankerDeployment goes (its children carry ownerReferences, so
  Kubernetes garbage-collects them; the sweep drops the bookkeeping of objects no longer there). kopf removes
  the `reranker.dev/finalizer` that earlier versions (with per-object timers) added.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from reranker_operator import GROUP, PLURAL, VERSION, metrics
from reranker_operator.children import (
    OWNERS_INDEX,
    STATUS_KINDS,
    WATCHED_KINDS,
    ChildCache,
    Debouncer,
    OwnerKey,
    index_owner,
    owner_of,
)
from reranker_operator.informer import Informers, Scope
from reranker_operator.kube import OWNED_KINDS, KubeClient, resource_for
from reranker_operator.reconcile import Outcome, is_subset, reconcile
from reranker_operator.render import kube_schema
from reranker_operator.render.labels import label_selector, owned_labels

logger = logging.getLogger(__name__)
STORAGE_PREFIX = "reranker.dev"
RESOURCE = (GROUP, VERSION, PLURAL)
# How often the API server's version (which picks the schema children are checked against) is asked again.
VERSION_TTL_SECONDS = 600.0
# How long the first pass waits for the children's first lists (then kopf retries it).
SYNC_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class OperatorOptions:
    """Knobs fixed when the operator starts."""

    resync_seconds: float = 30.0
    # Namespaces served (names or globs, `!name` excludes); empty: all.
    namespaces: tuple[str, ...] = ()
    metrics_port: int | None = 9090
    max_workers: int = 8
    # Long-poll length of a watch; the server closes it and kopf re-lists (also the reconnect cadence).
    watch_server_timeout: int = 300
    # A burst of child events (a rollout) within this window makes one pass.
    debounce_seconds: float = 0.2
    # Retries of a child the API server refused: doubling from the first delay up to the last.
    rejected_backoff: tuple[float, float] = (2.0, 300.0)


class Backoff:
    """Exponential back-off per RerankerDeployment after a refused child."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap = first, cap
        self._failures: dict[OwnerKey, tuple[int, float, str]] = {}

    def fail(self, key: OwnerKey, message: str) -> float:
        """Record one more failure; returns the delay before the next attempt."""
        count = self._failures.get(key, (0, 0.0, ""))[0] + 1
        delay = min(self.first * 2 ** (count - 1), self.cap)
        self._failures[key] = (count, time.monotonic() + delay, message)
        return delay

    def message(self, key: OwnerKey) -> str | None:
        """The last refusal of `key` until a write succeeds or the spec changes."""
        return self._failures[key][2] if key in self._failures else None

    def waiting(self, key: OwnerKey) -> bool:
        """True while `key` must not be written to."""
        return key in self._failures and time.monotonic() < self._failures[key][1]

    def reset(self, key: OwnerKey) -> None:
        self._failures.pop(key, None)


class Controller:
    """Operator-wide state shared by the handlers: the API client, the caches and per-object bookkeeping."""

    def __init__(self, options: OperatorOptions, kube: KubeClient) -> None:
        self.options = options
        self.kube = kube
        self.debouncer = Debouncer(options.debounce_seconds)
        self.backoff = Backoff(*options.rejected_backoff)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.informers = Informers(
            WATCHED_KINDS,
            label_selector(owned_labels()),
            self.child_changed,
            scope=Scope(options.namespaces),
            server_timeout=options.watch_server_timeout,
        )
        self._cache: ChildCache | None = None
        # A kopf handler's context: passes scheduled from the watches run in it (kopf's Event posting needs its
        # context variables, which the informers' tasks, started at login, lack).
        self._context: contextvars.Context | None = None
        self._owners: Mapping[OwnerKey, Any] | None = None
        self._locks: dict[OwnerKey, threading.Lock] = {}
        self._handled: dict[OwnerKey, int | None] = {}  # generation the spec handler last reconciled
        # Objects whose child-event pass came while their spec was still being handled: a pass is due once it
        # is (a child deleted during the first pass would otherwise wait for the resync sweep).
        self._deferred: set[OwnerKey] = set()
        self._handled_lock = threading.Lock()  # _handled and _deferred change together
        self._written: dict[tuple[str, str, str], str] = {}  # (kind, namespace, name) -> our last write's RV
        # Inputs after the last pass that succeeded (generation, the children's resourceVersions once its own
        # writes are echoed, the status it reported): the same inputs again give an empty pass.
        self._settled: dict[OwnerKey, tuple[Any, frozenset, dict[str, Any]]] = {}
        self._version: tuple[str | None, float] = (None, 0.0)
        self._sweeper: asyncio.Task | None = None

    def bind(self, kwargs: Mapping[str, Any]) -> ChildCache:
        """The children's cache, once every kind is listed, and kopf's index of RerankerDeployments from a
        handler's kwargs (kept for deferred passes). The first call starts the resync sweep.

        Runs in kopf's worker threads: waits there for the first lists (kopf retries the handler after a
        time-out)."""
        if self.loop is not None and not self.informers.synced:
            self.loop.call_soon_threadsafe(self.informers.start)  # normally started at login; idempotent
        if not self.informers.wait_synced(SYNC_WAIT_SECONDS):
            missing = ", ".join(self.informers.unsynced()) or "none"
            raise kopf.TemporaryError(f"the operator's children are not listed yet: {missing}", delay=5)
        if self._cache is None:
            self._context = contextvars.copy_context()
            self._cache = ChildCache(self.informers.stores)
            self._owners = kwargs[OWNERS_INDEX]
            if self.loop is not None:
                # Started from a handler's context: kopf's Event posting (announce) needs its context variables,
                # which a task created at startup lacks.
                self.loop.call_soon_threadsafe(self._start_sweep)
        return self._cache

    def _start_sweep(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self.sweep_forever())

    async def close(self) -> None:
        """Stop the sweep and pending passes (operator shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.debouncer.close()
        await self.informers.stop()

    def cluster_version(self) -> str | None:
        version, checked = self._version
        if checked == 0.0 or (version is None and time.monotonic() - checked > VERSION_TTL_SECONDS):
            self._version = version, checked = self.kube.server_version(), time.monotonic()
        return version

    def record_write(self, obj: Mapping[str, Any]) -> None:
        """Remember the resourceVersion of our own write, so its watch event triggers no pass."""
        meta = obj.get("metadata") or {}
        if obj.get("kind") in STATUS_KINDS and meta.get("resourceVersion"):
            self._written[(obj["kind"], meta.get("namespace", ""), meta["name"])] = meta["resourceVersion"]

    def run_pass(
        self,
        body: Mapping[str, Any],
        *,
        resync: bool,
        patch: kopf.Patch | None = None,
        children_only: bool = False,
    ) -> Outcome | None:
        """One pass for `body` under its lock; writes status when it changed and announces what was done.

        `resync` passes (the sweep, child events, retries) skip objects being deleted, objects whose new spec the
        spec handler has not reconciled yet (one pass follows when it has: a child deleted while the spec
        handler's pass runs is repaired then, not at the next sweep), and writes during a back-off. Inside a
        kopf handler the status goes into kopf's `patch`, so it lands in the same PATCH as kopf's own bookkeeping
        (a separate status write would race it, and kopf would handle the same change twice); elsewhere it is
        patched directly.
        `children_only` (a pass for a child's watch event): skipped when the children are exactly as the last
        pass left them, whatever the status in `body` says (that pass's status write may still be on its way:
        the echo of a write can arrive before the write is recorded); the resync sweep checks the status too.
        """
        assert self._cache is not None, "bind() first"
        meta = body["metadata"]
        key: OwnerKey = (meta["namespace"], meta["name"])
        generation = meta.get("generation")
        if resync and meta.get("deletionTimestamp"):
            return None
        if resync:
            with self._handled_lock:
                if self._handled.get(key, -1) != generation:
                    self._deferred.add(key)
                    return None
        if not resync:
            self.backoff.reset(key)  # a new spec is tried at once
        with self._locks.setdefault(key, threading.Lock()):
            if resync and self._is_settled(
                key, generation, None if children_only else body.get("status") or {}
            ):
                return None  # nothing changed since a pass that left everything in place: skip the render
            write = not self.backoff.waiting(key)
            # The children as this pass reads them: what changes besides its own writes while it runs (a Pod
            # that appears mid-pass) was not seen by it, so the pass cannot count as settled on it.
            seen = self._cache.versions(*key, written=True)
            status = copy.deepcopy(dict(body.get("status") or {}))
            outcome = reconcile(
                self.kube,
                self._cache,
                meta["name"],
                meta["namespace"],
                copy.deepcopy(dict(body.get("spec") or {})),
                uid=meta.get("uid"),
                generation=generation,
                old_status=status,
                resync=resync,
                cluster_version=self.cluster_version(),
                write=write,
                record=self.record_write,
                held_rejection=self.backoff.message(key),
            )
            # Skip no-op writes: a pass over a settled object then costs no PATCH (and no watch event).
            status_changed = not is_subset(outcome.status, status)
            if status_changed and patch is not None:
                patch.status.update(outcome.status)
            elif status_changed:
                self.kube.patch_status(meta["namespace"], meta["name"], outcome.status)
            # Settled also after writes: once their watch events are in, the next pass would find nothing to do
            # (the first resync of a new object was a full render before: most of the idle CPU after a burst).
            expected = self._cache.versions(*key, written=True)
            # Unless a child it wrote is already gone again (deleted while the pass ran: its deletion's own
            # pass was skipped as the spec was not yet handled), which the sweep must then repair.
            plan = outcome.plan
            wrote = {
                (obj["kind"], obj["metadata"]["name"]) for obj in (*plan.create, *plan.update, *plan.recreate)
            }
            if (
                write
                and not outcome.rejected_message
                and wrote <= {(kind, name) for kind, name, _ in expected}
                and _others(expected, wrote) == _others(seen, wrote)
                and not outcome.reads_events
            ):
                self._settled[key] = (generation, expected, outcome.status)
            else:
                self._settled.pop(key, None)
            with self._handled_lock:
                self._handled[key] = generation
                again = key in self._deferred
                self._deferred.discard(key)
            if again:
                self._schedule(key, self.options.debounce_seconds)
        if outcome.rejected_message and write:
            delay = self.backoff.fail(key, outcome.rejected_message)
            kopf.warn(
                body,
                reason="RejectedByAPIServer",
                message=f"{outcome.rejected_message} (retry in {delay:g} s)",
            )
            self._schedule(key, delay, retry=True)
        elif not outcome.rejected_message:
            if write:
                self.backoff.reset(key)
            announce(body, outcome, drift=resync)
            if outcome.invalid_message and not resync:
                kopf.warn(body, reason="InvalidSpec", message=outcome.invalid_message)
            if outcome.cache_resize and not resync:
                kopf.warn(body, reason="CacheResizeRefused", message=outcome.cache_resize)
        return outcome

    def _is_settled(self, key: OwnerKey, generation: int | None, status: Mapping[str, Any] | None) -> bool:
        """Same generation, same children (resourceVersions) and the status as reported (None: not checked):
        nothing to do."""
        settled = self._settled.get(key)
        return (
            settled is not None
            and settled[0] == generation
            and settled[1] == self._cache.versions(*key)
            and (status is None or is_subset(settled[2], status))
        )

    def child_changed(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of a child: pass for its owner soon, unless it is the echo of our own write."""
        meta = body.get("metadata") or {}
        owner = owner_of(meta.get("namespace"), meta.get("labels") or {})
        if owner is None or (kind not in STATUS_KINDS and event_type != "DELETED"):
            return
        if event_type == "DELETED" and self._cache is not None:
            # Gone: our earlier write no longer counts, nor does a reply to it still on its way.
            self._cache.forget(*owner, (kind, meta.get("name", "")), uid=meta.get("uid"))
        written = self._written.pop((kind, meta.get("namespace", ""), meta.get("name", "")), None)
        if written is not None and written == meta.get("resourceVersion") and event_type != "DELETED":
            return
        self._schedule(owner, self.options.debounce_seconds)

    async def sweep_forever(self) -> None:
        """The resync safety net: `sweep` every `resync_seconds`."""
        while True:
            await asyncio.sleep(self.options.resync_seconds)
            await self.sweep()

    async def sweep(self) -> None:
        """A pass for each RerankerDeployment not settled (one at a time: a safety net needs no burst), and
        the bookkeeping of those gone dropped."""
        if self._owners is None:
            return  # no handler ran yet: nothing was reconciled
        present = set()
        for key in list(self._owners.keys()):
            body = next(iter(self._owners.get(key, ())), None)
            if body is None:
                continue
            present.add(key)
            if self._is_settled(key, body["metadata"].get("generation"), body.get("status") or {}):
                continue
            try:
                await asyncio.to_thread(self.run_pass, body, resync=True)
            except kopf.TemporaryError as e:
                logger.warning("[%s/%s] resync failed, retrying in %g s: %s", *key, e.delay or 1.0, e)
                self._schedule(key, e.delay or 1.0, retry=True)
            except Exception:  # one object's failure must not end the sweep; the next one retries it
                logger.exception("[%s/%s] resync failed", *key)
        for key in set(self._handled) - present:
            self.forget(key)

    def forget(self, key: OwnerKey) -> None:
        """Drop the bookkeeping of a deleted RerankerDeployment."""
        self._handled.pop(key, None)
        self._deferred.discard(key)
        self._settled.pop(key, None)
        self._locks.pop(key, None)
        self.backoff.reset(key)
        metrics.forget_managed(key)

    def _schedule(self, key: OwnerKey, delay: float, *, retry: bool = False) -> None:
        async def run() -> None:
            body = next(iter((self._owners or {}).get(key, ())), None)
            if body is None:
                return
            try:
                await asyncio.to_thread(self.run_pass, body, resync=True, children_only=not retry)
            except kopf.TemporaryError as e:  # outside a kopf handler: retry here, as kopf would
                logger.warning("[%s/%s] pass failed, retrying in %g s: %s", *key, e.delay or 1.0, e)
                self._schedule(key, e.delay or 1.0, retry=True)

        if self.loop is None:
            return
        slot = ("retry", *key) if retry else key
        context = self._context.copy() if self._context is not None else None
        self.loop.call_soon_threadsafe(lambda: self.debouncer.poke(slot, run, delay=delay), context=context)


def build_registry(options: OperatorOptions | None = None) -> kopf.OperatorRegistry:
    """A registry holding the operator's handlers, configured by `options`."""
    options = options or OperatorOptions()
    registry = kopf.OperatorRegistry()

    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
        controller = Controller(options, KubeClient())
        controller.loop = asyncio.get_running_loop()
        memo.controller = controller
        if options.metrics_port:
            metrics.serve(options.metrics_port)

    async def shutdown(memo: kopf.Memo, **_: Any) -> None:
        await memo.controller.close()

    kopf.on.startup(id="configure", registry=registry)(configure)
    kopf.on.cleanup(id="shutdown", registry=registry)(shutdown)
    # A fresh registry lacks kopf's default login handlers; this one also configures the kubernetes client
    # (in-cluster service account or kubeconfig) that KubeClient uses.
    kopf.on.login(id="login", registry=registry)(login)
    kopf.index(*RESOURCE, id=OWNERS_INDEX, registry=registry)(index_owner)
    for decorator in (kopf.on.resume, kopf.on.create):
        decorator(*RESOURCE, id="reconcile", registry=registry)(reconcile_spec)
    kopf.on.update(*RESOURCE, id="reconcile", field="spec", registry=registry)(reconcile_spec)
    return registry


def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials from the in-cluster service account or the kubeconfig, via the kubernetes client; then (the
    API server now reachable) the schema checks for its version are compiled, before the first pass."""
    info = kopf.login_via_client(memo=memo, **kwargs)
    controller: Controller | None = getattr(memo, "controller", None)
    if controller is not None:
        # The children's lists + watches use the credentials just loaded (kopf runs startup before login).
        if controller.loop is not None:
            controller.loop.call_soon_threadsafe(controller.informers.start)
        kube_schema.prepare(
            [(kind, resource_for(kind).api_version) for kind in OWNED_KINDS], controller.cluster_version()
        )
    return info


def reconcile_spec(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    """A new, resumed or changed spec: converge the children, report status, announce the changes."""
    controller: Controller = memo.controller
    controller.bind(kwargs)
    outcome = controller.run_pass(body, resync=False, patch=patch)
    if outcome is not None and outcome.invalid_message:
        # Status and the Warning Event are already written; PermanentError only stops retrying this spec.
        raise kopf.PermanentError(f"invalid spec: {outcome.invalid_message}")


def _others(
    versions: frozenset[tuple[str, str, str]], wrote: set[tuple[str, str]]
) -> frozenset[tuple[str, str, str]]:
    """The (kind, name, resourceVersion) entries of the children a pass did not write."""
    return frozenset(entry for entry in versions if (entry[0], entry[1]) not in wrote)


def announce(body: Mapping[str, Any], outcome: Outcome, *, drift: bool = False) -> None:
    """Normal Events for what a pass changed (DriftRepaired when nothing in the spec asked for it).

    One Event per verb and pass, naming every child (a first pass creates about ten children: one Event instead
    of ten keeps the API requests of a new RerankerDeployment down)."""
    plan = outcome.plan
    verb_prefix = "Restored" if drift else "Updated"
    if plan.create:
        kopf.info(
            body, reason="DriftRepaired" if drift else "Created", message=f"Created {_names(plan.create)}"
        )
    if plan.update or plan.recreate:
        kopf.info(
            body,
            reason="DriftRepaired" if drift else "Updated",
            message=f"{verb_prefix} {_names((*plan.update, *plan.recreate))}",
        )
    if plan.hand_over is not None:
        kopf.info(
            body,
            reason="ReplicasHandedOver",
            message=f"Deployment spec.replicas ({plan.hand_over['spec']['replicas']}) handed over to the autoscaler",
        )
    if plan.take_back is not None:
        kopf.info(
            body,
            reason="ReplicasTakenBack",
            message=f"Deployment spec.replicas taken back from the autoscaler at {plan.take_back['spec']['replicas']}",
        )
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


def _names(objects: Iterable[Mapping[str, Any]]) -> str:
    """`Deployment demo, Service demo` (an Event's message is limited to 1 KiB)."""
    text = ", ".join(f"{obj['kind']} {obj['metadata']['name']}" for obj in objects)
    return text if len(text) <= 1000 else text[:997] + "..."
