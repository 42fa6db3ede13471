"""kmock's KubernetesEmulator with the API-server behaviour the operator relies on.

Added on top of kmock 0.8: uid/resourceVersion/generation/creationTimestamp stamping, generation bumps on
spec changes only, no-op writes that change nothing (no RV bump, no watch event), 422 on a failed JSON-patch
`test`, `/status` patches that touch only status (and main patches that ignore it), server-side apply that
creates a missing object, label selectors, list kind/apiVersion/resourceVersion, watches that honour
`resourceVersion` (replayed from an event log, 410 Gone when too old) and `timeoutSeconds`, fault
injection (status codes, delays, dropped watches) and a record of every (verb, resource, group) called.

What kube-apiserver does to stored objects is modelled by the rules in `apiserver/` (each names its source):
quantity canonicalisation (400 on a malformed one), defaulting, validation of built-in kinds with the official
schemas plus the server-side rules they lack (422 with causes), immutable fields, `managedFields` with
server-side apply (removal of omitted fields, 409 conflicts unless force), the `/scale` subresource,
resourceVersion preconditions on PUT and merge patch (409 when stale),
generation per kind, status cleared on create, and garbage collection by ownerReferences.

Lookups are indexed so that a thousand RerankerDeployments (about ten thousand objects) stay cheap.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import attrs
import jsonpatch
from kmock._internal import apps, dicts, enums, k8s, k8s_dicts, references, rendering

from .apiserver import defaults, validation
from .apiserver.fields import Conflict, ManagedFields, clone, without_managed_fields
from .apiserver.quantity import UPSTREAM_PATTERN, canonicalise_quantities

EVENT_LOG_SIZE = 20000
_DROP = {"type": "__DROP__"}
# Kinds whose writes are defaulted and validated: those the operator writes. Pods and ReplicaSets come from
# tests playing the controllers, Events from kopf; neither is checked.
CHECKED_KINDS = frozenset(
    {
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "Job",
        "NetworkPolicy",
        "ServiceAccount",
        "Role",
        "RoleBinding",
    }
)
# Kinds without metadata.generation (their registries never set it; HPA's only behind the HPAGeneration gate).
NO_GENERATION = frozenset(
    {
        "ConfigMap",
        "Secret",
        "Service",
        "Event",
        "PersistentVolumeClaim",
        "HorizontalPodAutoscaler",
        "Endpoints",
    }
)
UNTRACKED_KINDS = frozenset({"Event"})  # no managedFields kept (kopf posts thousands; nobody reads them)
TEST_MANAGER = "e2e-test"


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


def _copy(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored object to write on; its managedFields list is shared, never mutated (settle()
    replaces it), which saves copying the largest part of a built-in object on every write."""
    new = without_managed_fields(raw)
    if "managedFields" in raw.get("metadata", {}):
        new["metadata"]["managedFields"] = raw["metadata"]["managedFields"]
    return new


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _agent(request: rendering.Request) -> str:
    """The field manager of a write without `fieldManager`: the user agent's first word, as upstream."""
    agent = request.headers.get("User-Agent") or "unknown"
    return agent.split("/", 1)[0].split(" ", 1)[0] or "unknown"


@attrs.define(kw_only=True)
class StampingEmulator(k8s.KubernetesEmulator):
    """A KubernetesEmulator that behaves enough like kube-apiserver for kopf and server-side apply."""

    faults: list[Fault] = attrs.field(factory=list)
    api_calls: set[tuple[str, str, str]] = attrs.field(factory=set)
    history_limit: int | None = None  # keep only the newest versions of each object (benchmarks)
    custom_groups: set[str] = attrs.field(factory=set)  # API groups served by CRDs (declare_resources)
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
    _managed: dict[tuple[Any, str | None, str], ManagedFields] = attrs.field(factory=dict)
    _dependents: dict[str, set[tuple[Any, str | None, str]]] = attrs.field(
        factory=lambda: collections.defaultdict(set)
    )
    _orphaned: set[str | None] = attrs.field(factory=set)  # owners deleted with propagationPolicy=Orphan
    # (verb, resource[/subresource], name) of the latest requests, for tests that count calls (hot loops).
    request_log: collections.deque = attrs.field(factory=lambda: collections.deque(maxlen=100_000))

    # ---- request entry point --------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request):  # type: ignore[override]
        if request.resource is None or request.resource.plural is None:
            return await apps.RawHandler._handle(self, request)  # discovery, /version, ...
        replace = request.action is None and request.method == enums.method.PUT and request.name is not None
        if request.action is None and not replace:
            return await apps.RawHandler._handle(self, request)
        verb = "update" if replace else verb_of(request)
        sub = f"/{request.subresource}" if request.subresource else ""
        self.api_calls.add((verb, f"{request.resource.plural}{sub}", request.resource.group or ""))
        self.request_log.append((verb, f"{request.resource.plural}{sub}", request.name))
        await self._inject_faults(verb, request)
        if replace or request.action in (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE):
            async with self._lock:
                if request.action == enums.action.CREATE:
                    manager = request.params.get("fieldManager") or _agent(request)
                    await self._create(request.resource, request.namespace, request.data, manager=manager)
                elif replace or request.action == enums.action.UPDATE:
                    await self._update(request, replace=replace)
                else:
                    policy = (
                        (request.data or {}).get("propagationPolicy")
                        if isinstance(request.data, dict)
                        else None
                    )
                    await self._delete(request.resource, request.namespace, request.name, policy=policy)
        # Serve object requests directly: kmock's DSL dispatch re-filters the whole request history on every
        # request (quadratic), which dominates once thousands of requests were served.
        serve = {
            enums.action.LIST: self._serve_list,
            enums.action.WATCH: self._serve_watch,
            enums.action.FETCH: self._serve_fetch,
            enums.action.CREATE: self._serve_create,
            enums.action.UPDATE: self._serve_update,
            enums.action.DELETE: self._serve_delete,
            None: self._serve_update,
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

    # ---- what the API server does to an object before it stores it (rules in apiserver/) --------------

    def _kind(self, resource) -> str:
        info = self._resources[resource] if resource in self._resources else None
        return info.kind if info is not None and info.kind else resource.plural.capitalize()

    def _builtin(self, resource) -> bool:
        return resource.group not in self.custom_groups

    def _decode(self, resource, obj: dict[str, Any]) -> None:
        """Quantities to canonical form; a malformed one fails decoding with 400 (key Q)."""
        if not self._builtin(resource):
            return  # CRs have no Quantity type: stored verbatim (docs "Extend the Kubernetes API with CRDs")
        kind = self._kind(resource)
        bad = canonicalise_quantities(kind, obj)
        if bad:
            raise k8s.KubernetesError(
                status=400,
                reason="BadRequest",
                message=f'{kind} in version "{resource.version}" cannot be handled as a {kind}: '
                f"quantities must match the regular expression '{UPSTREAM_PATTERN}' ({bad[0][0]}: {bad[0][1]!r})",
                details={},
            )

    def _admit(self, resource, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        """Default and validate a built-in kind the operator writes; 400/422 like kube-apiserver."""
        kind = self._kind(resource)
        if not self._builtin(resource) or kind not in CHECKED_KINDS:
            return
        defaults.apply_defaults(kind, new)
        try:
            causes = validation.schema_causes(new)
        except validation.DecodeError as e:
            raise k8s.KubernetesError(
                status=400,
                reason="BadRequest",
                message=f'{kind} in version "{resource.version}" cannot be handled as a {kind}: {e}',
                details={},
            ) from e
        causes += validation.rule_causes(kind, new)
        if old is not None:
            causes += validation.immutable_causes(kind, old, new)
        if causes:
            name = (new.get("metadata") or {}).get("name")
            qualified = f"{kind}.{resource.group}" if resource.group else kind
            listed = ", ".join(map(str, causes))
            raise k8s.KubernetesError(
                status=422,
                reason="Invalid",
                message=f'{qualified} "{name}" is invalid: ' + (f"[{listed}]" if len(causes) > 1 else listed),
                details={
                    "name": name,
                    "group": resource.group,
                    "kind": kind,
                    "causes": [cause.as_dict() for cause in causes],
                },
            )
        if kind == "PersistentVolumeClaim" and old is not None and validation.storage_grows(old, new):
            self._admit_resize(old)

    def _admit_resize(self, old: dict[str, Any]) -> None:
        """403 for a growing claim unless its StorageClass says allowVolumeExpansion: true.

        The PersistentVolumeClaimResize admission plugin, on by default (kubernetes.io/docs/reference/
        access-authn-authz/admission-controllers/#persistentvolumeclaimresize; "You can only expand a PVC if its
        storage class's allowVolumeExpansion field is set to true", kubernetes.io/docs/concepts/storage/
        persistent-volumes/#expanding-persistent-volumes-claims). Runs after validation (a 422 comes first).
        """
        class_name = (old.get("spec") or {}).get("storageClassName")
        storage_class = (
            self.read("storage.k8s.io/v1/storageclasses", None, class_name) if class_name else None
        )
        if not (storage_class or {}).get("allowVolumeExpansion"):
            name = (old.get("metadata") or {}).get("name")
            raise k8s.KubernetesError(
                status=403,
                reason="Forbidden",
                message=f'persistentvolumeclaims "{name}" is forbidden: only dynamically provisioned pvc can be '
                "resized and the storageclass that provisions the pvc must support resize",
                details={"name": name, "kind": "persistentvolumeclaims"},
            )

    def _tracked(self, resource) -> bool:
        return self._kind(resource) not in UNTRACKED_KINDS

    def _generation(self, resource, old: dict[str, Any], new: dict[str, Any]) -> int | None:
        """The new generation: bumped by spec changes (Deployment: also annotations, CRs: anything outside
        metadata and status) [DS, CRS]; None for kinds without one."""
        kind = self._kind(resource)
        current = old["metadata"].get("generation")
        if current is None:
            return None
        if not self._builtin(resource):
            changed = any(
                old.get(k) != new.get(k) for k in set(old) | set(new) if k not in ("metadata", "status")
            )
        else:
            changed = old.get("spec") != new.get("spec")
            if kind == "Deployment":
                changed = changed or old["metadata"].get("annotations") != new["metadata"].get("annotations")
        return current + 1 if changed else current

    # ---- state changes (under the lock) ---------------------------------------------------------------

    def _next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    def _get(self, resource, namespace, name) -> k8s_dicts.Object | None:
        obj = self._by_resource[resource].get((namespace, name))
        return None if obj is None or obj.deleted else obj

    async def _create(
        self,
        resource,
        namespace,
        data: dict[str, Any],
        *,
        manager: str = TEST_MANAGER,
        apply: bool = False,
        from_controller: bool = False,
    ) -> dict[str, Any]:
        """Create an object. `apply`: `data` is a server-side apply configuration of `manager`;
        `from_controller`: a test playing a controller, whose object may carry status."""
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
        if self._builtin(resource) and not from_controller:
            data.pop("status", None)  # create clears status [DS]
        self._decode(resource, data)
        managed = ManagedFields(builtin=self._builtin(resource))
        if apply:
            data = managed.apply(None, data, manager, force=True, api_version=data.get("apiVersion", ""))
            meta = data.setdefault("metadata", {})
            meta.update(name=name, **({"namespace": namespace} if namespace is not None else {}))
        meta.update(
            uid=str(uuid.uuid4()),
            creationTimestamp=_now(),
        )
        if self._kind(resource) not in NO_GENERATION:
            meta["generation"] = 1
        self._admit(resource, None, data)
        if self._tracked(resource):
            if not apply:
                managed.update(None, data, manager)
            managed.settle(data, _now(), {})
            self._managed[(resource, namespace, name)] = managed
        meta["resourceVersion"] = self._next_rv()
        key = (resource, namespace, name)
        if key in self._objects:
            self._objects[key].create(data)
        else:
            self._objects[key] = data
        obj = self._objects[key]
        self._by_resource[resource][(namespace, name)] = obj
        self._index_labels(resource, namespace, name, {}, _labels(data))
        self._index_owners(resource, namespace, name, {}, data)
        await self._publish(resource, "ADDED", obj.raw)
        return obj.raw

    async def _update(self, request: rendering.Request, *, replace: bool = False) -> None:
        resource, namespace, name = request.resource, request.namespace, request.name
        obj = self._get(resource, namespace, name)
        content_type = request.headers.get("Content-Type", "")
        apply = "apply-patch" in content_type
        manager = request.params.get("fieldManager") or _agent(request)
        if apply and not request.params.get("fieldManager"):
            raise k8s.KubernetesError(
                status=400,
                reason="BadRequest",
                message="PATCH, application/apply-patch+yaml requires a non-empty fieldManager",
            )
        if obj is None:
            if apply and request.subresource is None:  # apply to a missing object creates it [AC]
                await self._create(resource, namespace, clone(request.data), manager=manager, apply=True)
                return
            raise k8s.KubernetesObjectNotFoundError()
        force = request.params.get("force") in ("true", "True", "1")
        self._check_precondition(resource, obj.raw, request.data, apply)
        if request.subresource == "scale":
            replicas = ((request.data or {}).get("spec") or {}).get("replicas")
            await self.patch_object(
                resource, namespace, name, {"spec": {"replicas": replicas}}, manager=manager, scale=True
            )
            return
        await self.patch_object(
            resource,
            namespace,
            name,
            request.data,
            subresource=request.subresource,
            manager=manager,
            apply=apply,
            force=force,
            replace=replace,
        )

    def _check_precondition(self, resource, current: dict[str, Any], body: Any, apply: bool) -> None:
        """Optimistic concurrency: a PUT or merge patch (of the object or its /scale) that carries
        `metadata.resourceVersion` is applied only if that is still the stored version, else 409 Conflict
        (docs "Kubernetes API Concepts", "Resource versions"; the API conventions' "Concurrency Control and
        Consistency"). Server-side apply is left out: the operator's apply configurations carry none."""
        if apply or not isinstance(body, dict):
            return
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"].get("resourceVersion"):
            qualified = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
            name = current["metadata"].get("name")
            raise k8s.KubernetesError(
                status=409,
                reason="Conflict",
                message=f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                details={"name": name, "group": resource.group, "kind": resource.plural},
            )

    async def patch_object(
        self,
        resource,
        namespace,
        name,
        patch: Any,
        *,
        subresource: str | None = None,
        manager: str = TEST_MANAGER,
        apply: bool = False,
        force: bool = False,
        replace: bool = False,
        scale: bool = False,
    ):
        """Write like the API server: merge patch for dicts, JSON patch for lists, server-side apply when
        `apply`, full replacement when `replace` (PUT), a `/scale` write when `scale`. Call under `self._lock`."""
        obj = self._get(resource, namespace, name)
        if obj is None:
            raise k8s.KubernetesObjectNotFoundError()
        old = obj.raw
        key = (resource, namespace, name)
        managed = self._managed.get(key)
        before = managed.snapshot() if managed is not None else {}
        try:
            new = self._written(resource, old, patch, subresource, manager, apply, force, replace, managed)
            # Identity fields are the server's, whatever the patch says.
            new_meta = new.setdefault("metadata", {})
            for field in ("uid", "name", "namespace", "creationTimestamp", "generation", "resourceVersion"):
                if field in old["metadata"]:
                    new_meta[field] = old["metadata"][field]
            if subresource != "status":
                self._decode(resource, new)
                self._admit(resource, old, new)
            # Status is nobody's field here and a /status write changes nothing else: ownership stays.
            if managed is not None and subresource != "status":
                if not apply:
                    managed.update(old, new, manager, "scale" if scale else subresource)
                managed.settle(new, _now(), before)
        except Exception:
            if managed is not None:
                managed.owners = before
            raise
        if new == old:
            return old  # a no-op write changes nothing and is not announced
        generation = self._generation(resource, old, new)
        if generation is not None:
            new_meta["generation"] = generation
        new_meta["resourceVersion"] = self._next_rv()
        obj.history.append(k8s_dicts.ObjectVersion(new))
        self._trim(obj)
        self._index_labels(resource, namespace, name, _labels(old), _labels(new))
        self._index_owners(resource, namespace, name, old, new)
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            await self._really_delete(resource, namespace, name)
        else:
            await self._publish(resource, "MODIFIED", obj.raw)
        return new

    def _written(self, resource, old, patch, subresource, manager, apply, force, replace, managed):
        """The object a write asks for, before the server's decoding, defaulting and validation."""
        if isinstance(patch, list):
            try:
                return jsonpatch.apply_patch(clone(old), patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise k8s.KubernetesError(
                    status=422, reason="Invalid", message=f"the patch failed: {e}"
                ) from e
        patch = dict(patch or {})
        if subresource == "status":
            # Only status from a /status write; a body without status deletes it [CRS status_strategy.go].
            new = _copy(old)
            if replace:
                new.pop("status", None)
            if "status" in patch:
                if replace:
                    new["status"] = clone(patch["status"])
                else:
                    new = dict(dicts.merge_patch_dict(new, {"status": patch["status"]}))
            return new
        patch.pop("status", None)  # main writes keep the old status (the status subresource owns it)
        if apply:
            config = clone(patch)
            self._decode(resource, config)  # conflicts compare canonical values
            if managed is None:
                managed = ManagedFields(builtin=self._builtin(resource))
            try:
                new = managed.apply(old, config, manager, force=force, api_version=old.get("apiVersion", ""))
            except Conflict as e:
                raise k8s.KubernetesError(
                    status=409,
                    reason="Conflict",
                    message=e.message(),
                    details={
                        "name": old["metadata"].get("name"),
                        "kind": self._kind(resource),
                        "causes": e.causes(),
                    },
                ) from e
            return new
        if replace:
            new = clone(patch)
            if "status" in old:
                new["status"] = clone(old["status"])
            return new
        return dict(dicts.merge_patch_dict(_copy(old), patch))

    async def _delete(self, resource, namespace, name, *, policy: str | None = None) -> None:
        obj = self._get(resource, namespace, name)
        if obj is None:
            raise k8s.KubernetesObjectNotFoundError()
        meta = obj.raw.get("metadata", {})
        if meta.get("deletionTimestamp"):
            return
        if meta.get("finalizers"):
            # [ST markAsDeleting]: deletionTimestamp set, generation bumped (if present), MODIFIED.
            changes: dict[str, Any] = {"deletionTimestamp": _now(), "resourceVersion": self._next_rv()}
            if meta.get("generation") is not None:
                changes["generation"] = meta["generation"] + 1
            if policy == "Orphan":
                self._orphaned.add(meta.get("uid"))
            obj.patch({"metadata": changes})
            await self._publish(resource, "MODIFIED", obj.raw)
        else:
            await self._really_delete(resource, namespace, name, orphan=policy == "Orphan")

    async def _really_delete(self, resource, namespace, name, *, orphan: bool = False) -> None:
        obj = self._by_resource[resource].pop((namespace, name))
        raw = clone(obj.raw)
        raw["metadata"]["resourceVersion"] = self._next_rv()
        self._index_labels(resource, namespace, name, _labels(raw), {})
        self._index_owners(resource, namespace, name, raw, {})
        self._managed.pop((resource, namespace, name), None)
        obj.delete()
        await self._publish(resource, "DELETED", raw)
        uid = raw["metadata"].get("uid")
        orphan = orphan or uid in self._orphaned
        self._orphaned.discard(uid)
        if not orphan:
            await self._collect_garbage(uid, namespace)

    async def _collect_garbage(self, uid: str | None, namespace: str | None) -> None:
        """Delete the dependents of a deleted owner, background propagation (docs "Garbage Collection").

        Upstream this is kube-controller-manager's collector, which runs after the owner is gone; here it runs
        right after the owner's DELETED event. A namespaced owner only owns objects in its own namespace.
        """
        for resource, dep_namespace, dep_name in sorted(self._dependents.pop(uid, set()), key=str):
            if dep_namespace != namespace or self._get(resource, dep_namespace, dep_name) is None:
                continue
            dependent = self._get(resource, dep_namespace, dep_name).raw
            others = [
                ref for ref in dependent["metadata"].get("ownerReferences") or () if ref.get("uid") != uid
            ]
            if others:  # another owner still holds it: only the reference goes
                await self.patch_object(
                    resource,
                    dep_namespace,
                    dep_name,
                    {"metadata": {"ownerReferences": others}},
                    manager="generic-garbage-collector",
                )
            else:
                await self._delete(resource, dep_namespace, dep_name)

    def _index_owners(self, resource, namespace, name, old: dict, new: dict) -> None:
        before = {ref.get("uid") for ref in (old.get("metadata") or {}).get("ownerReferences") or ()}
        after = {ref.get("uid") for ref in (new.get("metadata") or {}).get("ownerReferences") or ()}
        for uid in before - after:
            self._dependents.get(uid, set()).discard((resource, namespace, name))
        for uid in after - before:
            self._dependents[uid].add((resource, namespace, name))

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

    async def put_object(
        self, plural_path: str, obj: dict[str, Any], *, manager: str = TEST_MANAGER
    ) -> dict[str, Any]:
        """Create an object as a controller or a person would (e.g. pods, ReplicaSets, with their status)."""
        resource = references.resource(plural_path)
        async with self._lock:
            return await self._create(
                resource,
                obj["metadata"].get("namespace"),
                clone(obj),
                manager=manager,
                from_controller=True,
            )

    async def edit_object(
        self,
        plural_path: str,
        namespace: str,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
        manager: str = TEST_MANAGER,
    ) -> dict[str, Any]:
        """Patch (merge or JSON patch) an object as a controller or a person would."""
        resource = references.resource(plural_path)
        async with self._lock:
            return await self.patch_object(
                resource, namespace, name, patch, subresource=subresource, manager=manager
            )

    async def deployment_ready(
        self,
        namespace: str,
        name: str,
        replicas: int | None = None,
        *,
        manager: str = TEST_MANAGER,
    ) -> dict[str, Any]:
        """Play the Deployment controller: `replicas` (default: spec.replicas) of the current generation, all
        updated and ready."""
        dep = self.read("apps/v1/deployments", namespace, name)
        count = dep["spec"]["replicas"] if replicas is None else replicas
        status = {"replicas": count, "updatedReplicas": count, "readyReplicas": count}
        return await self.edit_object(
            "apps/v1/deployments",
            namespace,
            name,
            {"status": {"observedGeneration": dep["metadata"]["generation"], **status}},
            subresource="status",
            manager=manager,
        )

    async def scale(
        self,
        plural_path: str,
        namespace: str,
        name: str,
        replicas: int,
        *,
        manager: str = "kube-controller-manager",
    ) -> dict[str, Any]:
        """Write `/scale` as the HPA controller does (an update of spec.replicas, subresource scale)."""
        resource = references.resource(plural_path)
        async with self._lock:
            return await self.patch_object(
                resource, namespace, name, {"spec": {"replicas": replicas}}, manager=manager, scale=True
            )

    def versions(self, plural_path: str, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every stored version of an object, oldest first (within `history_limit`)."""
        key = (references.resource(plural_path), namespace, name)
        history = self._objects[key].history.raw if key in self._objects else []
        return [version.raw for version in history if version is not None]

    def managed_fields(self, plural_path: str, namespace: str, name: str) -> dict[str, set[str]]:
        """{manager: {".spec.replicas", ...}} of a live object, for assertions."""
        from .apiserver.fields import render_path

        managed = self._managed.get((references.resource(plural_path), namespace, name))
        result: dict[str, set[str]] = {}
        for (manager, _, _), paths in (managed.owners if managed else {}).items():
            result.setdefault(manager, set()).update(map(render_path, paths))
        return result

    async def remove_object(
        self, plural_path: str, namespace: str, name: str, *, propagation: str = "Background"
    ) -> None:
        """Delete an object as a person would (`kubectl delete`: dependents in the background)."""
        async with self._lock:
            await self._delete(references.resource(plural_path), namespace, name, policy=propagation)

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
            version = str(self._last_rv)
        # Chunks (https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks):
        # `limit` items per page, ordered by key; `continue` resumes after the last key served, and every page
        # carries the first page's resourceVersion. Not modelled: the consistent snapshot (later pages show the
        # objects as they are now; a watch from that resourceVersion replays what changed meanwhile anyway),
        # the expiry of a token (410).
        limit = int(request.params.get("limit") or 0)
        token = request.params.get("continue")
        more = None
        if limit > 0 or token:
            items.sort(key=_key)
            if token:
                version, after = json.loads(base64.b64decode(token))
                items = [item for item in items if list(_key(item)) > after]
            if 0 < limit < len(items):
                items = items[:limit]
                more = base64.b64encode(json.dumps([version, list(_key(items[-1]))]).encode()).decode()
        kind = (
            info.kind if info is not None and info.kind else request.resource.plural.capitalize()
        ) + "List"
        group = request.resource.group
        return {
            "apiVersion": f"{group}/{request.resource.version}" if group else request.resource.version,
            "kind": kind,
            "metadata": {"resourceVersion": version, **({"continue": more} if more else {})},
            "items": items,
        }

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        obj = self._get(request.resource, request.namespace, request.name)
        if obj is None:
            raise k8s.KubernetesObjectNotFoundError()
        return _scale_of(obj.raw) if request.subresource == "scale" else obj.raw

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        meta = request.data.get("metadata", {})
        obj = self._get(request.resource, request.namespace or meta.get("namespace"), meta.get("name"))
        assert obj is not None
        return obj.raw

    async def _serve_update(self, request: rendering.Request) -> rendering.Payload:
        obj = self._by_resource[request.resource].get((request.namespace, request.name))
        if obj is None:  # deleted by this very patch (finalizers removed): answer with the last state
            obj = self._objects[request.resource, request.namespace, request.name]
        return _scale_of(obj.last.raw) if request.subresource == "scale" else obj.last.raw

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


def _key(raw: dict[str, Any]) -> tuple[str, str]:
    meta = raw.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def _scale_of(raw: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale of a Deployment-like object (its `/scale` subresource)."""
    meta = raw["metadata"]
    selector = ((raw.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": (raw.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (raw.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        },
    }


def declare_resources(emulator: Any) -> str:
    """Load the builtin kinds and declare the RerankerDeployment CRD (kopf needs list/watch/patch); returns its key."""
    from reranker_operator import GROUP, KIND, PLURAL, SINGULAR, VERSION

    key = f"{GROUP}/{VERSION}/{PLURAL}"
    emulator.custom_groups.add(GROUP)
    emulator.resources.load_bundled()
    emulator.resources[key] = emulator.ResourceInfo(
        kind=KIND,
        singular=SINGULAR,
        namespaced=True,
        subresources={"status"},
        verbs={"list", "watch", "patch", "get", "create", "update", "delete"},
    )
    return key
