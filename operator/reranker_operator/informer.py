"""Watch-fed caches of the operator's children: one list + watch per kind, each event slimmed as it arrives.

What client-go's shared informers do, with a transform (controller-runtime's `cache.Options.DefaultTransform`
drops managedFields the same way): LIST the kind filtered by the operator's label, then WATCH from the list's
resourceVersion; every event is decoded, slimmed (`children.slim`) and stored at once, keyed by the
RerankerDeployment it belongs to, and `on_event` is told. A watch the server ends (its `timeoutSeconds`, a
restart) is resumed from the last resourceVersion seen; a 410 Gone (the version was compacted), a refused or
broken connection re-lists, with back-off, and objects missing from the new list count as deleted.

Before this, kopf's indexes fed the cache: kopf queues each raw event for a worker of its object before any
handler sees it. At 1 000 RerankerDeployments (11 000 children) the queued full bodies of a burst were about
40 MB of the operator's peak RSS, and kopf's per-event work 30 % of its CPU (bench/results/reconcile.md).

Requests go through aiohttp on kopf's event loop, with the credentials the kubernetes client was configured
with at login (kubeconfig or in-cluster ServiceAccount, whose token it re-reads as it rotates).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import aiohttp
import kubernetes.client

from reranker_operator.children import OwnerKey, owner_of, slim, version_of
from reranker_operator.kube import resource_for

logger = logging.getLogger(__name__)
EventHandler = Callable[[str, str, Mapping[str, Any]], None]  # (kind, event type, slim object)
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
LIST_PAGE_SIZE = 500  # client-go's reflector pages its lists by 500 too


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class KindStore(Mapping[OwnerKey, tuple[dict[str, Any], ...]]):
    """The cached children of one kind by owner, as read by passes (in worker threads).

    Written only on the event loop; each owner's entry is a tuple replaced whole on every change, so a reader
    never sees it half-updated."""

    def __init__(self) -> None:
        self._objects: dict[OwnerKey, dict[str, dict[str, Any]]] = {}
        self._view: dict[OwnerKey, tuple[dict[str, Any], ...]] = {}

    def __getitem__(self, owner: OwnerKey) -> tuple[dict[str, Any], ...]:
        return self._view[owner]

    def __iter__(self) -> Iterator[OwnerKey]:
        return iter(list(self._view))

    def __len__(self) -> int:
        return len(self._view)

    def put(self, owner: OwnerKey, obj: dict[str, Any]) -> None:
        objects = self._objects.setdefault(owner, {})
        objects[obj["metadata"]["name"]] = obj
        self._view[owner] = tuple(objects.values())

    def drop(self, owner: OwnerKey, name: str) -> dict[str, Any] | None:
        objects = self._objects.get(owner)
        gone = objects.pop(name, None) if objects is not None else None
        if objects:
            self._view[owner] = tuple(objects.values())
        elif objects is not None:
            del self._objects[owner]
            self._view.pop(owner, None)
        return gone

    def in_scope(self, namespace: str | None) -> Iterable[tuple[OwnerKey, dict[str, Any]]]:
        """(owner, object) of every object cached from a scope (None: all namespaces)."""
        return [
            (owner, obj)
            for owner, objects in list(self._objects.items())
            if namespace is None or owner[0] == namespace
            for obj in list(objects.values())
        ]


class Scope:
    """Which namespaces the operator serves: all (`patterns` empty), listed names, or globs (`team-*`;
    `!name` excludes). Listed names are watched one namespace each (a namespaced Role suffices); globs need a
    watch of all namespaces, filtered here."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        include = [p for p in self.patterns if not p.startswith("!")]
        self.exclude = [p[1:] for p in self.patterns if p.startswith("!")]
        self.include = include
        globbed = any(set(p) & set("*?[") for p in self.patterns) or bool(self.exclude)
        self.watched: tuple[str | None, ...] = (None,) if not include or globbed else tuple(include)

    def matches(self, namespace: str | None) -> bool:
        if not namespace:
            return False
        if any(fnmatch.fnmatchcase(namespace, p) for p in self.exclude):
            return False
        return not self.include or any(fnmatch.fnmatchcase(namespace, p) for p in self.include)


class Informers:
    """List + watch of each of `kinds`, filtered by `selector`, in every watched namespace of `scope`."""

    def __init__(
        self,
        kinds: Iterable[str],
        selector: str,
        on_event: EventHandler,
        *,
        scope: Scope | None = None,
        server_timeout: int = 300,
    ) -> None:
        self.kinds = tuple(kinds)
        self.selector = selector
        self.on_event = on_event
        self.scope = scope or Scope()
        self.server_timeout = server_timeout
        self.stores: dict[str, KindStore] = {kind: KindStore() for kind in self.kinds}
        self._unsynced = {(kind, ns) for kind in self.kinds for ns in self.scope.watched}
        self._synced = threading.Event()
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None
        self._session_key: tuple | None = None
        if not self._unsynced:
            self._synced.set()

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every list + watch on the running loop (once)."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        for kind in self.kinds:
            for namespace in self.scope.watched:
                task = loop.create_task(
                    self._run(kind, namespace), name=f"informer {kind} {namespace or '*'}"
                )
                self._tasks.append(task)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block (a worker thread) until every kind has been listed once; False on time-out."""
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def unsynced(self) -> list[str]:
        """`Kind in namespace` of each list not yet done (the log says why: its failures are warnings)."""
        return sorted(f"{kind} in {namespace or 'all namespaces'}" for kind, namespace in set(self._unsynced))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- one kind in one scope -------------------------------------------------------------------------

    async def _run(self, kind: str, namespace: str | None) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list(kind, namespace)
                    if (kind, namespace) in self._unsynced:
                        self._unsynced.discard((kind, namespace))
                        if not self._unsynced:
                            self._synced.set()
                version = await self._watch(kind, namespace, version)
                backoff = BACKOFF_FIRST_SECONDS
            except asyncio.CancelledError:
                raise
            except Gone:
                logger.info(
                    "watch of %s in %s: resourceVersion expired; listing again", kind, namespace or "*"
                )
                version = None
            except Exception as e:  # network, 5xx, 403: log, wait, list again (events may have been missed)
                logger.warning(
                    "watch of %s in %s failed (%s: %s); listing again in %g s",
                    kind,
                    namespace or "*",
                    type(e).__name__,
                    e,
                    backoff,
                )
                version = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def _list(self, kind: str, namespace: str | None) -> str:
        """Replace the scope's cached objects by a fresh list; changes since the old ones are events.

        In pages of LIST_PAGE_SIZE (`limit`/`continue`, one consistent snapshot): an operator restarted beside
        thousands of Deployments decodes a page at a time, not every full body at once."""
        res = resource_for(kind)
        store = self.stores[kind]
        old = {(owner, obj["metadata"]["name"]): obj for owner, obj in store.in_scope(namespace)}
        query = {"labelSelector": self.selector, "limit": str(LIST_PAGE_SIZE)}
        while True:
            async with self._request(res.path(namespace), query) as response:
                data = json.loads(await response.read())
            for item in data.pop("items", None) or ():  # slim() adds the kind list items lack on the wire
                meta = item.get("metadata") or {}
                owner = self._owner(meta)
                if owner is not None:
                    before = old.pop((owner, meta.get("name", "")), None)
                    if before is None or version_of(before) != version_of(item):
                        self._store("ADDED" if before is None else "MODIFIED", kind, owner, item)
            meta = data.get("metadata") or {}
            if not meta.get("continue"):
                break
            query = {**query, "continue": meta["continue"]}
        for (owner, name), obj in old.items():
            store.drop(owner, name)
            self.on_event(kind, "DELETED", obj)
        return str(meta.get("resourceVersion") or "")

    async def _watch(self, kind: str, namespace: str | None, version: str) -> str:
        """Follow the watch from `version` until the server ends it; returns the last version seen."""
        res = resource_for(kind)
        query = {
            "watch": "true",
            "labelSelector": self.selector,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.server_timeout),
        }
        if version:
            query["resourceVersion"] = version
        async with self._request(res.path(namespace), query) as response:
            async for line in _lines(response.content):
                event = json.loads(line)
                kind_of_event = event.get("type")
                obj = event.get("object") or {}
                if kind_of_event == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind_of_event == "BOOKMARK":
                    continue
                owner = self._owner(obj.get("metadata") or {})
                if owner is not None:
                    self._store(kind_of_event, kind, owner, obj)
        return version

    def _owner(self, meta: Mapping[str, Any]) -> OwnerKey | None:
        """The RerankerDeployment an object belongs to, if it is in a namespace the operator serves."""
        owner = owner_of(meta.get("namespace"), meta.get("labels") or {})
        return owner if owner is not None and self.scope.matches(owner[0]) else None

    def _store(self, event_type: str, kind: str, owner: OwnerKey, raw: dict[str, Any]) -> None:
        """Apply one event to the cache and tell `on_event` (with the object as cached)."""
        store = self.stores[kind]
        if event_type == "DELETED":
            gone = store.drop(owner, (raw.get("metadata") or {}).get("name", ""))
            self.on_event(kind, event_type, gone or slim(kind, raw))
        else:
            obj = slim(kind, raw)
            store.put(owner, obj)
            self.on_event(kind, event_type, obj)

    # ---- HTTP ------------------------------------------------------------------------------------------

    def _request(self, path: str, query: Mapping[str, str]):
        config = kubernetes.client.Configuration.get_default()
        session = self._session_for(config)
        headers = {"Accept": "application/json"}
        token = config.get_api_key_with_prefix("authorization")  # re-reads a rotated in-cluster token
        if token:
            headers["Authorization"] = token
        elif config.username or config.password:
            headers["Authorization"] = aiohttp.BasicAuth(
                config.username or "", config.password or ""
            ).encode()
        timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=self.server_timeout + 30)
        return _checked(
            session.get(config.host.rstrip("/") + path, params=query, headers=headers, timeout=timeout)
        )

    def _session_for(self, config: kubernetes.client.Configuration) -> aiohttp.ClientSession:
        key = (config.host, config.ssl_ca_cert, config.cert_file, config.key_file, config.verify_ssl)
        if self._session is None or key != self._session_key:
            if self._session is not None:
                asyncio.get_running_loop().create_task(self._session.close())
            tls: ssl.SSLContext | bool = False
            if config.host.startswith("https"):
                tls = ssl.create_default_context(cafile=config.ssl_ca_cert)
                if config.cert_file:
                    tls.load_cert_chain(config.cert_file, config.key_file)
                if not config.verify_ssl:
                    tls.check_hostname = False
                    tls.verify_mode = ssl.CERT_NONE
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls, limit=0), trust_env=True
            )
            self._session_key = key
        return self._session


class _checked:
    """`session.get(...)` as an async context manager that raises on a status other than 200 (410: Gone)."""

    def __init__(self, request) -> None:
        self._request = request
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self._response = response = await self._request
        if response.status == 410:
            response.release()
            raise Gone()
        if response.status != 200:
            text = (await response.text())[:300]
            response.release()
            raise RuntimeError(f"HTTP {response.status}: {text}")
        return response

    async def __aexit__(self, *exc: object) -> None:
        if self._response is not None:
            self._response.release()


async def _lines(content: aiohttp.StreamReader):
    """The lines of a watch stream, however long (aiohttp's own line reader stops at 64 KiB; a Deployment's
    event with its managedFields can be longer)."""
    buffer = b""
    async for chunk in content.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer
