"""kmock's KubernetesEmulator with the API-server behaviour the operator relies on.

Added on top of kmock 0.8: uid/resourceVersion/generation/creationTimestamp stamping, generation bumps on
spec changes only, no-op writes that change nothing (no RV bump, no watch event), 422 on a failed JSON-patch
`test`, `/status` patches that touch only status (and main patches that ignore it), server-side apply that
creates a missing object, label selectors, list kind/apiVersion/resourceVersion, watches that honour
`resourceVersion` (replayed from an event log, 410 Gone when too old) and `timeoutSeconds`, fault
injection (status codes, delays, dropped watches) and a record of every (verb, resource, group) called.

Lookups are indexed so that a thousand RerankerDeployments (about ten thousand objects) stay cheap.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import attrs
import jsonpatch
from kmock._internal import apps, dicts, enums, k8s, k8s_dicts, references, rendering

EVENT_LOG_SIZE = 20000
_DROP = {"type": "__DROP__"}


@dataclass
class Fault:
    """Fail or delay the next `times` matching requests (None matches anything)."""

    verb: str | None = None  # get, list, watch, create, patch, delete
    plural: str | None = None
    subresource: str | None = None
    status: int | None = None
    delay: float = 0.0
    times: int = 1

    def matches(self, verb: str, plural: str | None, subresource: str | None) -> bool:
        return (
            self.times > 0
            and self.verb in (None, verb)
            and self.plural in (None, plural)
            and self.subresource in (None, subresource)
        )


def verb_of(request: rendering.Request) -> str:
    """The RBAC verb of a request."""
    action = request.action
    if action == enums.action.WATCH:
        return "watch"
    if action == enums.action.LIST:
        return "list"
    if action == enums.action.FETCH:
        return "get"
    if action == enums.action.CREATE:
        return "create"
    if action == enums.action.UPDATE:
        return "patch"
    if action == enums.action.DELETE:
        return "delete"
    return str(request.method.value).lower()


def parse_selector(text: str | None) -> list[tuple[str, str, str | None]]:
    """`a=b,c!=d,e,!f` -> [(key, op, value)] with op in =, !=, exists, !exists."""
    terms: list[tuple[str, str, str | None]] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "!=" in part:
            key, value = part.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "=" in part:
            key, value = part.replace("==", "=").split("=", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif part.startswith("!"):
            terms.append((part[1:].strip(), "!exists", None))
        else:
            terms.append((part, "exists", None))
    return terms


def selector_matches(terms: list[tuple[str, str, str | None]], labels: dict[str, str]) -> bool:
    for key, op, value in terms:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!exists" and key in labels:
            return False
    return True


def _labels(raw: dict[str, Any]) -> dict[str, str]:
    return (raw.get("metadata") or {}).get("labels") or {}


@attrs.define(kw_only=True)
class StampingEmulator(k8s.KubernetesEmulator):
    """A KubernetesEmulator that behaves enough like kube-apiserver for kopf and server-side apply."""

    faults: list[Fault] = attrs.field(factory=list)
    api_calls: set[tuple[str, str, str]] = attrs.field(factory=set)
    history_limit: int | None = None  # keep only the newest versions of each object (benchmarks)
    _rv: itertools.count = attrs.field(factory=lambda: itertools.count(1))
    _last_rv: int = 0
    _by_resource: dict[Any, dict[tuple[str | None, str], k8s_dicts.Object]] = attrs.field(
        factory=lambda: collections.defaultdict(dict)
    )
    _by_label: dict[tuple[Any, str, str], set[tuple[str | None, str]]] = attrs.field(
        factory=lambda: collections.defaultdict(set)
    )
    _log: dict[Any, collections.deque] = attrs.field(
        factory=lambda: collections.defaultdict(lambda: collections.deque(maxlen=EVENT_LOG_SIZE))
    )

    # ---- request entry point --------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request):  # type: ignore[override]
        if request.resource is None or request.action is None or request.resource.plural is None:
            return await apps.RawHandler._handle(self, request)  # discovery, /version, ...
        verb = verb_of(request)
        sub = f"/{request.subresource}" if request.subresource else ""
        self.api_calls.add((verb, f"{request.resource.plural}{sub}", request.resource.group or ""))
        await self._inject_faults(verb, request)
        if request.action in (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE):
            async with self._lock:
                if request.action == enums.action.CREATE:
                    await self._create(request.resource, request.namespace, request.data)
                elif request.action == enums.action.UPDATE:
                    await self._update(request)
                else:
                    await self._delete(request.resource, request.namespace, request.name)
        # Serve object requests directly: kmock's DSL dispatch re-filters the whole request history on every
        # request (quadratic), which dominates once thousands of requests were served.
        serve = {
            enums.action.LIST: self._serve_list,
            enums.action.WATCH: self._serve_watch,
            enums.action.FETCH: self._serve_fetch,
            enums.action.CREATE: self._serve_create,
            enums.action.UPDATE: self._serve_update,
            enums.action.DELETE: self._serve_delete,
        }[request.action]
        return await rendering.Response(payload=serve)(request)

    async def _inject_faults(self, verb: str, request: rendering.Request) -> None:
        for fault in self.faults:
            if fault.matches(verb, request.resource.plural, request.subresource):
                fault.times -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status:
                    raise k8s.KubernetesError(
                        status=fault.status, reason="InjectedFault", message=f"injected {fault.status}"
                    )
                return

    # ---- state changes (under the lock) ---------------------------------------------------------------

    def _next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    def _get(self, resource, namespace, name) -> k8s_dicts.Object | None:
        obj = self._by_resource[resource].get((namespace, name))
        return None if obj is None or obj.deleted else obj

    async def _create(self, resource, namespace, data: dict[str, Any]) -> dict[str, Any]:
        meta = data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        namespace = namespace or meta.get("namespace")
        if namespace is not None:
            meta["namespace"] = namespace
        name = meta.get("name")
        if not name:
            raise k8s.KubernetesError(status=422, reason="Invalid", message="metadata.name: Required value")
        if self._get(resource, namespace, name) is not None:
            raise k8s.KubernetesObjectConflictError()
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_rv(),
            generation=1,
            creationTimestamp=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        key = (resource, namespace, name)
        if key in self._objects:
            self._objects[key].create(data)
        else:
            self._objects[key] = data
        obj = self._objects[key]
        self._by_resource[resource][(namespace, name)] = obj
        self._index_labels(resource, namespace, name, {}, _labels(data))
        await self._publish(resource, "ADDED", obj.raw)
        return obj.raw

    async def _update(self, request: rendering.Request) -> None:
        resource, namespace, name = request.resource, request.namespace, request.name
        obj = self._get(resource, namespace, name)
        content_type = request.headers.get("Content-Type", "")
        if obj is None:
            if "apply-patch" in content_type and request.subresource is None:
                await self._create(resource, namespace, copy.deepcopy(request.data))  # SSA creates
                return
            raise k8s.KubernetesObjectNotFoundError()
        await self.patch_object(resource, namespace, name, request.data, subresource=request.subresource)

    async def patch_object(self, resource, namespace, name, patch: Any, *, subresource: str | None = None):
        """Patch like the API server (merge for dicts, JSON patch for lists). Call under `self._lock`."""
        obj = self._get(resource, namespace, name)
        if obj is None:
            raise k8s.KubernetesObjectNotFoundError()
        old = obj.raw
        if isinstance(patch, list):
            try:
                new = jsonpatch.apply_patch(copy.deepcopy(old), patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise k8s.KubernetesError(
                    status=422, reason="Invalid", message=f"the patch failed: {e}"
                ) from e
        else:
            patch = dict(patch or {})
            if subresource == "status":
                patch = {"status": patch.get("status")} if "status" in patch else {}
            else:
                patch.pop("status", None)  # the main resource ignores status (it has a subresource)
            new = dict(dicts.merge_patch_dict(copy.deepcopy(old), patch))
        # Identity fields are the server's, whatever the patch says.
        new_meta = new.setdefault("metadata", {})
        for field in ("uid", "name", "namespace", "creationTimestamp", "generation", "resourceVersion"):
            if field in old["metadata"]:
                new_meta[field] = old["metadata"][field]
        if new == old:
            return old  # a no-op write changes nothing and is not announced
        if new.get("spec") != old.get("spec"):
            new_meta["generation"] = old["metadata"].get("generation", 1) + 1
        new_meta["resourceVersion"] = self._next_rv()
        obj.history.append(k8s_dicts.ObjectVersion(new))
        self._trim(obj)
        self._index_labels(resource, namespace, name, _labels(old), _labels(new))
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            await self._really_delete(resource, namespace, name)
        else:
            await self._publish(resource, "MODIFIED", obj.raw)
        return new

    async def _delete(self, resource, namespace, name) -> None:
        obj = self._get(resource, namespace, name)
        if obj is None:
            raise k8s.KubernetesObjectNotFoundError()
        meta = obj.raw.get("metadata", {})
        if meta.get("deletionTimestamp"):
            return
        if meta.get("finalizers"):
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            obj.patch({"metadata": {"deletionTimestamp": now, "resourceVersion": self._next_rv()}})
            await self._publish(resource, "MODIFIED", obj.raw)
        else:
            await self._really_delete(resource, namespace, name)

    async def _really_delete(self, resource, namespace, name) -> None:
        obj = self._by_resource[resource].pop((namespace, name))
        raw = copy.deepcopy(obj.raw)
        raw["metadata"]["resourceVersion"] = self._next_rv()
        self._index_labels(resource, namespace, name, _labels(raw), {})
        obj.delete()
        await self._publish(resource, "DELETED", raw)

    def _trim(self, obj: k8s_dicts.Object) -> None:
        if self.history_limit is not None and len(obj.history) > self.history_limit:
            del obj.history[: len(obj.history) - self.history_limit]

    def _index_labels(self, resource, namespace, name, old: dict, new: dict) -> None:
        for key, value in old.items():
            if new.get(key) != value:
                self._by_label[(resource, key, value)].discard((namespace, name))
        for key, value in new.items():
            self._by_label[(resource, key, value)].add((namespace, name))

    async def _publish(self, resource, type_: str, raw: dict[str, Any]) -> None:
        event = {"type": type_, "object": raw}
        self._log[resource].append((int(raw["metadata"]["resourceVersion"]), event))
        await self._buses[resource].put(event)

    # ---- helpers for tests (run in the emulator's loop) -----------------------------------------------

    async def put_object(self, plural_path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object as a controller or a person would (e.g. pods, ReplicaSets)."""
        resource = references.resource(plural_path)
        async with self._lock:
            return await self._create(resource, obj["metadata"].get("namespace"), copy.deepcopy(obj))

    async def edit_object(
        self, plural_path: str, namespace: str, name: str, patch: Any, *, subresource: str | None = None
    ) -> dict[str, Any]:
        """Patch an object as a controller or a person would."""
        resource = references.resource(plural_path)
        async with self._lock:
            return await self.patch_object(resource, namespace, name, patch, subresource=subresource)

    async def remove_object(self, plural_path: str, namespace: str, name: str) -> None:
        """Delete an object as a person would."""
        async with self._lock:
            await self._delete(references.resource(plural_path), namespace, name)

    def read(self, plural_path: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The live object, or None."""
        obj = self._get(references.resource(plural_path), namespace, name)
        return None if obj is None else obj.raw

    def live(self, plural_path: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """All live objects of a resource (optionally in one namespace)."""
        return [
            obj.raw
            for (ns, _), obj in self._by_resource[references.resource(plural_path)].items()
            if namespace is None or ns == namespace
        ]

    async def drop_watches(self) -> None:
        """End every open watch stream, as an API server restart or a load balancer would."""
        for bus in list(self._buses.values()):
            await bus.put(_DROP)

    # ---- reads ----------------------------------------------------------------------------------------

    def _select(self, request: rendering.Request) -> list[dict[str, Any]]:
        terms = parse_selector(request.params.get("labelSelector"))
        objects = self._by_resource[request.resource]
        equal = next(((k, v) for k, op, v in terms if op == "="), None)
        keys = self._by_label[(request.resource, *equal)] if equal else objects.keys()
        result = []
        for ns, name in list(keys):
            if request.namespace is not None and ns != request.namespace:
                continue
            obj = objects.get((ns, name))
            if obj is not None and not obj.deleted and selector_matches(terms, _labels(obj.raw)):
                result.append(obj.raw)
        return result

    def _get_resources(self) -> list[references.resource]:
        # kmock's version scans every stored object; the declared resources plus the index suffice.
        declared = set(k8s.KubernetesScaffold._get_resources(self))
        return list(declared | {resource for resource, objects in self._by_resource.items() if objects})

    def _known(self, resource) -> bool:
        return resource in self._resources or bool(self._by_resource.get(resource))

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        if not self._known(request.resource):
            raise k8s.KubernetesResourceNotFoundError()
        async with self._lock:
            items = self._select(request)
            info = self._resources[request.resource] if request.resource in self._resources else None
        kind = (
            info.kind if info is not None and info.kind else request.resource.plural.capitalize()
        ) + "List"
        group = request.resource.group
        return {
            "apiVersion": f"{group}/{request.resource.version}" if group else request.resource.version,
            "kind": kind,
            "metadata": {"resourceVersion": str(self._last_rv)},
            "items": items,
        }

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        obj = self._get(request.resource, request.namespace, request.name)
        if obj is None:
            raise k8s.KubernetesObjectNotFoundError()
        return obj.raw

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        meta = request.data.get("metadata", {})
        obj = self._get(request.resource, request.namespace or meta.get("namespace"), meta.get("name"))
        assert obj is not None
        return obj.raw

    async def _serve_update(self, request: rendering.Request) -> rendering.Payload:
        obj = self._by_resource[request.resource].get((request.namespace, request.name))
        if obj is None:  # deleted by this very patch (finalizers removed): answer with the last state
            obj = self._objects[request.resource, request.namespace, request.name]
        return obj.last.raw

    async def _serve_delete(self, request: rendering.Request) -> rendering.Payload:
        return self._objects[request.resource, request.namespace, request.name].last.raw

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""  # send the headers now: the client waits for them
        resource = request.resource
        bus = self._buses[resource]
        mark = await bus.mark()  # before the snapshot: nothing published after it can be lost
        terms = parse_selector(request.params.get("labelSelector"))
        timeout = float(request.params.get("timeoutSeconds") or 0) or None

        def wanted(event: dict[str, Any]) -> bool:
            raw = event["object"]
            ns = raw.get("metadata", {}).get("namespace")
            return (request.namespace is None or ns == request.namespace) and selector_matches(
                terms, _labels(raw)
            )

        try:
            since = int(request.params.get("resourceVersion") or 0)
            async with self._lock:
                if since:
                    log = list(self._log[resource])
                    if log and len(log) == EVENT_LOG_SIZE and since < log[0][0]:
                        replay = None
                    else:
                        replay = [event for rv, event in log if rv > since]
                else:
                    replay = [{"type": "ADDED", "object": raw} for raw in self._select(request)]
                last = self._last_rv
            if replay is None:
                yield {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "code": 410,
                        "reason": "Expired",
                        "message": "too old resource version",
                    },
                }
                return
            for event in replay:
                if wanted(event):
                    yield event
            async with asyncio.timeout(timeout):
                async for event in bus.stream(since=mark):
                    if event is _DROP:
                        return
                    if int(event["object"]["metadata"]["resourceVersion"]) <= last:
                        continue  # already in the snapshot/replay
                    if wanted(event):
                        yield event
        except TimeoutError:
            return  # the server-side timeout: the client re-watches from its last resourceVersion
        finally:
            await bus.unmark(mark)


def declare_resources(emulator: Any) -> str:
    """Load the builtin kinds and declare the RerankerDeployment CRD (kopf needs list/watch/patch); returns its key."""
    from reranker_operator import GROUP, KIND, PLURAL, SINGULAR, VERSION

    key = f"{GROUP}/{VERSION}/{PLURAL}"
    emulator.resources.load_bundled()
    emulator.resources[key] = emulator.ResourceInfo(
        kind=KIND,
        singular=SINGULAR,
        namespaced=True,
        subresources={"status"},
        verbs={"list", "watch", "patch", "get", "create", "update", "delete"},
    )
    return key
