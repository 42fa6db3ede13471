"""Field ownership (`metadata.managedFields`) and server-side apply, kept pragmatic.

Follows docs "Server-Side Apply" (/docs/reference/using-api/server-side-apply/, key SSA) and apimachinery
`pkg/util/managedfields` (key MF):
- a field set is a set of paths; a path element is a map key (str) or the key of an item of a list merged by
  key (a tuple of (field, value) pairs, e.g. containers by name); every other list is atomic (one leaf);
- apply records exactly the fields the manager sent; a field it sent before and omits now is removed when no
  other manager owns it; a changed value another manager owns is a conflict (409) unless `force`, which takes
  the field away from the others; applying the same value shares ownership;
- updates (merge/JSON patch, PUT, /scale) never conflict and take the fields whose value they change.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Path = tuple[Any, ...]
Manager = tuple[str, str, str | None]  # (manager, operation Apply|Update, subresource)
_MISSING = object()
_POD_LISTS = {"containers", "initContainers", "ephemeralContainers"}
# Metadata fields a manager can own; the rest of metadata is the server's.
_OWNED_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")


def clone(value: Any) -> Any:
    """A deep copy of JSON data (several times faster than copy.deepcopy, which dominated write costs)."""
    if type(value) is dict:
        return {k: clone(v) for k, v in value.items()}
    if type(value) is list:
        return [clone(v) for v in value]
    return value


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of `obj` without `metadata.managedFields` (the server rewrites them on every write anyway)."""
    meta = obj.get("metadata") or {}
    return clone({**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}})


def list_keys(path: Path, builtin: bool) -> tuple[str, ...] | None:
    """The merge keys of the list at `path`, or None for an atomic list (SSA "Merge strategy", types.go).

    In CRDs every list is atomic unless its schema says otherwise; ownerReferences are standard metadata.
    """
    last = path[-1] if path else None
    if path == ("metadata", "ownerReferences"):
        return ("uid",)
    if not builtin:
        return None
    in_container = len(path) >= 3 and isinstance(path[-2], tuple) and path[-3] in _POD_LISTS
    if last in _POD_LISTS:
        return ("name",)
    if last == "volumes" and len(path) >= 2 and path[-2] == "spec":
        return ("name",)
    if last == "imagePullSecrets":
        return ("name",)
    if in_container and last == "env":
        return ("name",)
    if in_container and last == "volumeMounts":
        return ("mountPath",)
    if in_container and last == "ports":
        return ("containerPort", "protocol")
    if path == ("spec", "ports"):  # Service ports
        return ("port", "protocol")
    return None


def item_key(item: dict[str, Any], keys: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    # `protocol` has a schema default, so an item without it is keyed as TCP (SMD typed/helpers.go).
    return tuple((k, item.get(k, "TCP" if k == "protocol" else None)) for k in keys)


def _keyed(value: Any, path: Path, builtin: bool) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not value or not all(isinstance(i, dict) for i in value):
        return None
    return list_keys(path, builtin)


def _walk(node: dict[str, Any], path: Path, builtin: bool) -> Iterator[Path]:
    for key, value in node.items():
        here = (*path, key)
        if isinstance(value, dict) and value:
            yield from _walk(value, here, builtin)
        elif keys := _keyed(value, here, builtin):
            for item in value:
                item_path = (*here, item_key(item, keys))
                yield item_path
                yield from _walk(item, item_path, builtin)
        else:
            yield here


def field_set(obj: dict[str, Any], builtin: bool) -> set[Path]:
    """The paths a manager sending `obj` owns: leaves, keyed-list items, metadata it may own; no status."""
    paths: set[Path] = set()
    meta = obj.get("metadata") or {}
    owned_meta = {k: meta[k] for k in _OWNED_METADATA if k in meta}
    if owned_meta:
        paths.update(_walk({"metadata": owned_meta}, (), builtin))
    rest = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    paths.update(_walk(rest, (), builtin))
    return paths


def _nodes(node: dict[str, Any], path: Path, builtin: bool, out: set[Path]) -> None:
    for key, value in node.items():
        here = (*path, key)
        out.add(here)
        if isinstance(value, dict):
            _nodes(value, here, builtin, out)
        elif keys := _keyed(value, here, builtin):
            for item in value:
                item_path = (*here, item_key(item, keys))
                out.add(item_path)
                _nodes(item, item_path, builtin, out)


def all_paths(obj: dict[str, Any], builtin: bool) -> set[Path]:
    """Every path present in `obj`, intermediate maps included."""
    out: set[Path] = set()
    _nodes(obj, (), builtin, out)
    return out


def get_path(obj: Any, path: Path) -> Any:
    """The value at `path`, or _MISSING."""
    node = obj
    for element in path:
        if isinstance(element, tuple):
            keys = tuple(k for k, _ in element)
            node = (
                next((i for i in node if isinstance(i, dict) and item_key(i, keys) == element), _MISSING)
                if isinstance(node, list)
                else _MISSING
            )
        else:
            node = node.get(element, _MISSING) if isinstance(node, dict) else _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def remove_path(obj: dict[str, Any], path: Path) -> None:
    """Delete the field or list item at `path` (if present)."""
    parent = get_path(obj, path[:-1])
    last = path[-1]
    if isinstance(last, tuple) and isinstance(parent, list):
        keys = tuple(k for k, _ in last)
        parent[:] = [i for i in parent if not (isinstance(i, dict) and item_key(i, keys) == last)]
    elif isinstance(parent, dict):
        parent.pop(last, None)


def merge(live: dict[str, Any], config: dict[str, Any], builtin: bool, path: Path = ()) -> None:
    """Merge an applied configuration into `live` (which takes over its values): maps granular, keyed lists
    by key, the rest replaced."""
    for key, value in config.items():
        here = (*path, key)
        current = live.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merge(current, value, builtin, here)
        elif (keys := list_keys(here, builtin)) and isinstance(value, list) and isinstance(current, list):
            index = {item_key(i, keys): i for i in current if isinstance(i, dict)}
            for item in value:
                existing = index.get(item_key(item, keys)) if isinstance(item, dict) else None
                if existing is not None:
                    merge(existing, item, builtin, (*here, item_key(item, keys)))
                else:
                    current.append(item)
        else:
            live[key] = value  # the configuration is the caller's copy: no need to copy again


def render_path(path: Path) -> str:
    """`.spec.template.spec.containers[name="server"].image`, as conflicts name fields (MF conflict.go)."""
    text = ""
    for element in path:
        if isinstance(element, tuple):
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in element) + "]"
        else:
            text += f".{element}"
    return text


@functools.lru_cache(maxsize=65536)
def _element_name(element: Any) -> str:
    if isinstance(element, tuple):
        return "k:" + json.dumps(dict(element), separators=(",", ":"), sort_keys=True)
    return f"f:{element}"


def fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """The FieldsV1 encoding: `f:<field>`, `k:{...}` for keyed items (with `.`), SMD serialize-pe.go."""
    root: dict[str, Any] = {}
    for path in sorted(paths, key=len):
        node = root
        for element in path:
            node = node.setdefault(_element_name(element), {})
            if isinstance(element, tuple):
                node.setdefault(".", {})
    return root


@dataclass
class Conflict(Exception):
    """An apply changed fields other managers own."""

    conflicts: list[tuple[Manager, Path]]
    api_version: str

    def causes(self) -> list[dict[str, str]]:
        return [
            {
                "reason": "FieldManagerConflict",
                "message": f"conflict with {_describe(m)}",
                "field": render_path(p),
            }
            for m, p in self.conflicts
        ]

    def message(self) -> str:
        count = len(self.conflicts)
        lines = [
            f"conflict with {_describe(m)} using {self.api_version}: {render_path(p)}"
            for m, p in self.conflicts
        ]
        return f"Apply failed with {count} conflict{'s' if count > 1 else ''}: " + "\n".join(lines)


def _describe(manager: Manager) -> str:
    name, _, subresource = manager
    return f'"{name}"' + (f' with subresource "{subresource}"' if subresource else "")


@dataclass
class ManagedFields:
    """Who owns which fields of one object."""

    builtin: bool
    owners: dict[Manager, set[Path]] = field(default_factory=dict)
    times: dict[Manager, str] = field(default_factory=dict)
    rendered: dict[Manager, dict[str, Any]] = field(default_factory=dict)  # fieldsV1 of each manager

    def apply(
        self,
        live: dict[str, Any] | None,
        config: dict[str, Any],
        manager: str,
        *,
        force: bool,
        api_version: str,
    ):
        """The object after `manager` applies `config` to `live` (None: create); raises Conflict."""
        me: Manager = (manager, "Apply", None)
        sent = field_set(config, self.builtin)
        result = without_managed_fields(live) if live is not None else {}
        conflicts = []
        for other, owned in self.owners.items():
            if other[0] == manager:
                continue
            for path in sent & owned:
                have, want = get_path(result, path), get_path(config, path)
                if not isinstance(want, dict) and have != want:
                    conflicts.append((other, path))
        if conflicts and not force:
            raise Conflict(sorted(conflicts, key=lambda c: render_path(c[1])), api_version)
        for other, path in conflicts:
            self.owners[other].discard(path)
        # Omitted fields whose only owner was this manager go (SSA "Field management").
        others = set().union(*(owned for m, owned in self.owners.items() if m != me))
        for path in sorted(self.owners.get(me, set()) - sent, key=len):  # items before their fields
            if path not in others and not any(p[: len(path)] == path for p in others):
                remove_path(result, path)
        merge(result, {k: v for k, v in config.items() if k != "status"}, self.builtin)
        self.owners[me] = sent
        return result

    def update(
        self, old: dict[str, Any] | None, new: dict[str, Any], manager: str, subresource: str | None = None
    ) -> None:
        """`manager` wrote `new` over `old` by a non-apply write: it takes the fields whose value changed."""
        me: Manager = (manager, "Update", subresource)
        changed = set()
        for path in field_set(new, self.builtin):
            before = get_path(old, path) if old is not None else _MISSING
            if before is _MISSING or (not isinstance(before, dict) and before != get_path(new, path)):
                changed.add(path)
        if not changed:
            return
        for other, owned in self.owners.items():
            if other != me:
                owned -= changed
        self.owners.setdefault(me, set()).update(changed)

    def settle(self, obj: dict[str, Any], now: str, before: dict[Manager, set[Path]]) -> None:
        """Forget fields that no longer exist and managers that own nothing; stamp `metadata.managedFields`."""
        present = all_paths(obj, self.builtin)
        for manager in list(self.owners):
            owned = self.owners[manager] & present
            if owned:
                self.owners[manager] = owned
                if before.get(manager) != owned or manager not in self.times:
                    self.times[manager] = now
                    self.rendered[manager] = fields_v1(owned)
            else:
                del self.owners[manager]
                self.times.pop(manager, None)
                self.rendered.pop(manager, None)
        api_version = obj.get("apiVersion", "")
        entries = []
        for manager in self.owners:
            name, operation, subresource = manager
            entry = {
                "manager": name,
                "operation": operation,
                "apiVersion": api_version,
                "time": self.times[manager],
                "fieldsType": "FieldsV1",
                "fieldsV1": self.rendered[manager],  # shared between versions: never mutated
            }
            if subresource:
                entry["subresource"] = subresource
            entries.append(entry)
        obj.setdefault("metadata", {})["managedFields"] = entries

    def snapshot(self) -> dict[Manager, set[Path]]:
        return {m: set(p) for m, p in self.owners.items()}
