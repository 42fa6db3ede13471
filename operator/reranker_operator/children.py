"""The operator's view of its children: what a pass reads of each (`slim`), keyed by RerankerDeployment.

The children arrive through the operator's own list + watch per kind (`informer.py`), filtered by the API
server by the label `app.kubernetes.io/managed-by=reranker-operator`, keyed by (namespace, instance label); the
RerankerDeployments through a kopf index. The first pass waits until every kind has been listed once, so it
sees every existing child.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reranker_operator.kube import OWNED_KINDS, resource_for
from reranker_operator.render.labels import INSTANCE_LABEL

ChildKey = tuple[str, str]  # (kind, name)
OwnerKey = tuple[str, str]  # (namespace, name) of a RerankerDeployment
# Children whose status feeds the RerankerDeployment's status: their changes trigger a pass at once.
STATUS_KINDS = ("Deployment", "Job", "Pod")
WATCHED_KINDS: tuple[str, ...] = (*OWNED_KINDS, "ReplicaSet", "Pod")
OWNERS_INDEX = "rerankers"
# What a pass reads of a cached child decides what the cache keeps (at 1 000 RerankerDeployments the full
# bodies were most of the operator's memory). Status is read only of these kinds:
STATUS_READ = frozenset({"Deployment", "ReplicaSet", "Pod", "Job", "PersistentVolumeClaim"})
# Kinds that are only observed (never rendered, so no drift compare): their spec (a full pod template) is unread.
SPEC_UNREAD = frozenset({"ReplicaSet", "Pod"})
REPLICAS_FIELD = {"f:spec": {"f:replicas": {}}}

logger = logging.getLogger(__name__)


def owner_of(namespace: str | None, labels: Mapping[str, str]) -> OwnerKey | None:
    """The RerankerDeployment a child belongs to, from its instance label."""
    instance = labels.get(INSTANCE_LABEL)
    return (namespace, instance) if namespace and instance else None


def slim(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a child that a pass reads (drift compare, status, the replicas hand-over), as cached.

    Dropped: managedFields (of a Deployment only whether each manager's entry covers spec.replicas is kept, all
    the hand-over asks), the spec of ReplicaSets and Pods, and the status of kinds whose status is never read.
    """
    obj = {
        sys.intern(key): _shared(value)
        for key, value in body.items()
        if not (key == "spec" and kind in SPEC_UNREAD) and not (key == "status" and kind not in STATUS_READ)
    }
    obj["kind"] = kind  # items of an initial list carry no kind/apiVersion on the wire
    obj.setdefault("apiVersion", resource_for(kind).api_version)
    meta = obj.get("metadata") or {}
    if "managedFields" in meta:
        obj["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
        if kind == "Deployment":
            obj["metadata"]["managedFields"] = [
                _replicas_entry(entry) for entry in meta["managedFields"] or ()
            ]
    return obj


def _shared(value: Any) -> Any:
    """A copy of a decoded JSON value whose keys are interned: thousands of cached children then share one copy
    of each key (every watch event is decoded afresh, with keys of its own)."""
    if isinstance(value, dict):
        return {sys.intern(k): _shared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shared(v) for v in value]
    return value


def _replicas_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A managedFields entry reduced to who owns spec.replicas (FieldsV1 `f:spec` > `f:replicas`) or not."""
    fields = entry.get("fieldsV1") or {}
    spec = fields.get("f:spec") if isinstance(fields, Mapping) else None
    owns = isinstance(spec, Mapping) and "f:replicas" in spec
    slim_entry = {k: entry[k] for k in ("manager", "operation", "subresource") if k in entry}
    slim_entry["fieldsV1"] = REPLICAS_FIELD if owns else {}
    return slim_entry


async def index_owner(body: Mapping[str, Any], namespace: str, name: str, **_: Any) -> dict[OwnerKey, Any]:
    """kopf index of RerankerDeployments by (namespace, name): the body a child-triggered pass works from.

    Async for the same reason as the children's indexes."""
    return {(namespace, name): {key: value for key, value in body.items()}}


@dataclass(frozen=True)
class ChildCache:
    """Read access to the children's caches (kind -> {(namespace, instance): objects}).

    The operator's own writes are overlaid until their watch events arrive (`remember`): a pass soon after a
    write, on a busy API server, then sees what it wrote instead of re-creating it as "drift".
    """

    indexes: Mapping[str, Mapping[OwnerKey, Iterable[Mapping[str, Any]]]]
    # owner -> (kind, name) -> (the object we wrote, the resourceVersion it replaced, expiry)
    overlay: dict[OwnerKey, dict[ChildKey, tuple[dict[str, Any], str | None, float]]] = field(
        default_factory=dict
    )
    overlay_seconds: float = 60.0
    # uid -> expiry of children whose deletion was watched: a write's reply that arrives after the deletion of
    # the very object it wrote (deleted at once by someone else) must not be overlaid as "not echoed yet".
    gone: dict[str, float] = field(default_factory=dict)

    def remember(self, obj: Mapping[str, Any], replaced: str | None) -> None:
        """An object as the API server returned it for our write (slimmed by the pass, as the cache keeps
        children), which replaced version `replaced` (None: created). Read instead of the cache while the cache still holds `replaced` (or nothing): watch events of
        one object arrive in order, so any other version in the cache is ours or newer. Not if that object's
        deletion has already been watched (its uid is gone)."""
        meta = obj.get("metadata") or {}
        owner = owner_of(meta.get("namespace"), meta.get("labels") or {})
        if meta.get("uid") in self.gone:
            return
        if owner is not None and obj.get("kind") in OWNED_KINDS:
            entries = self.overlay.setdefault(owner, {})
            expires = time.monotonic() + self.overlay_seconds
            entries[(obj["kind"], meta["name"])] = (dict(obj), replaced, expires)

    def forget(self, namespace: str, name: str, key: ChildKey, uid: str | None = None) -> None:
        """A child deleted (by us, or watched going): no longer overlaid, nor overlaid again by a late reply
        of a write to the same object (`uid`)."""
        self.overlay.get((namespace, name), {}).pop(key, None)
        if uid:
            now = time.monotonic()
            for old, expires in list(self.gone.items()):
                if expires < now:
                    self.gone.pop(old, None)
            self.gone[uid] = now + self.overlay_seconds

    def objects(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        """Cached objects of `kind` belonging to RerankerDeployment `namespace/name`."""
        return [dict(obj) for obj in self.indexes[kind].get((namespace, name), ())]

    def versions(
        self, namespace: str, name: str, *, written: bool = False
    ) -> frozenset[tuple[str, str, str]]:
        """(kind, name, resourceVersion) of everything cached for `namespace/name`: equal sets, equal inputs.

        `written`: as the cache will hold them once the watch events of our not yet echoed writes are in."""
        overlay = self.overlay.get((namespace, name), {}) if written else {}
        found = {
            (kind, (obj.get("metadata") or {}).get("name", "")): (obj.get("metadata") or {}).get(
                "resourceVersion", ""
            )
            for kind in WATCHED_KINDS
            for obj in self.indexes[kind].get((namespace, name), ())
        }
        for key, (obj, _, _) in overlay.items():
            found[key] = (obj.get("metadata") or {}).get("resourceVersion", "")
        return frozenset((kind, child, version) for (kind, child), version in found.items())

    def children(self, namespace: str, name: str) -> dict[ChildKey, dict[str, Any]]:
        """Every owned child of `namespace/name` by (kind, name), our not yet echoed writes included."""
        found = {
            (kind, obj["metadata"]["name"]): obj
            for kind in OWNED_KINDS
            for obj in self.objects(kind, namespace, name)
        }
        entries = self.overlay.get((namespace, name))
        if entries:
            now = time.monotonic()
            for key, (obj, replaced, expires) in list(entries.items()):
                cached = found.get(key)
                stale = (cached is None and replaced is None) or (
                    cached is not None and version_of(cached) == replaced
                )
                if stale and now <= expires:
                    found[key] = dict(obj)
                else:
                    entries.pop(key, None)
            if not entries:
                self.overlay.pop((namespace, name), None)
        return found


def version_of(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


class Debouncer:
    """Runs one pass per key shortly after a burst of pokes (a rollout changes pods, ReplicaSets and the
    Deployment within milliseconds: one pass covers them all)."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self._pending: set[Hashable] = set()
        self._tasks: set[asyncio.Task] = set()

    def poke(self, key: Hashable, run: Callable[[], Awaitable[None]], *, delay: float | None = None) -> None:
        """Schedule `run` after `delay` (default: the debounce delay) unless a run for `key` is pending."""
        if key in self._pending:
            return
        self._pending.add(key)
        task = asyncio.get_running_loop().create_task(
            self._later(key, run, self.delay if delay is None else delay)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, key: Hashable, run: Callable[[], Awaitable[None]], delay: float) -> None:
        await asyncio.sleep(delay)
        self._pending.discard(key)
        try:
            await run()
        except Exception:  # a failed pass must not end the debouncer; the resync sweep retries
            logger.exception("pass for %s failed", "/".join(map(str, key)) if isinstance(key, tuple) else key)

    async def close(self) -> None:
        """Cancel pending runs (operator shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
