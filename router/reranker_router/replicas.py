"""The replicas behind the router: who they are, how loaded they are, and who is left out for a while.

Load is the router's own accounting: pairs it has sent to a replica and not had answered yet. That is exact
for this router and costs nothing (no polling of the replicas' metrics). The least-loaded replica wins; with
several router replicas each one only sees its own traffic, so `power-of-two` picks the lighter of two random
replicas instead, which keeps routers from all piling onto the same "emptiest" replica.

A replica that refuses connections or answers 5xx is ejected for `ejection.seconds`; one that answers 503 or
`Connection: close` is draining and is left alone for the same time (that is "go elsewhere", not an error).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .config import DiscoveryConfig, EjectionConfig

log = logging.getLogger(__name__)

LEAST_LOADED = "least-loaded"
POWER_OF_TWO = "power-of-two"


class NoBackend(Exception):
    """No replica could be found before the wait ended (or too many requests were already waiting)."""


@dataclass(eq=False)
class Replica:
    """One server replica and the router's view of it."""

    url: str
    pending_pairs: int = 0
    consecutive_failures: int = 0
    ejected_until: float = 0.0

    def available(self, now: float) -> bool:
        """True unless ejected (or draining) right now."""
        return now >= self.ejected_until


class ReplicaSet:
    """The current replicas, the balancing choice, passive ejection, and waiting for a replica to appear."""

    def __init__(
        self,
        ejection: EjectionConfig,
        *,
        balancing: str = LEAST_LOADED,
        max_waiting: int = 256,
        wait_seconds: float = 10.0,
        on_no_backend: Callable[[], None] | None = None,
        on_eject: Callable[[Replica, str], None] | None = None,
    ) -> None:
        self.ejection = ejection
        self.balancing = balancing
        self.max_waiting = max_waiting
        self.wait_seconds = wait_seconds
        # Called when a request starts waiting because no replica exists at all: the hook that scale-from-zero
        # uses to ask for replicas (it must be quick; its errors are logged and ignored).
        self.on_no_backend = on_no_backend
        self.on_eject = on_eject
        self._replicas: dict[str, Replica] = {}
        self._changed = asyncio.Event()
        self.waiting = 0

    def __iter__(self):
        return iter(list(self._replicas.values()))

    def __len__(self) -> int:
        return len(self._replicas)

    def set_urls(self, urls: Iterable[str]) -> None:
        """Make the set exactly `urls`: new replicas start unloaded; known ones keep their accounting."""
        wanted = list(dict.fromkeys(urls))
        added = [url for url in wanted if url not in self._replicas]
        removed = [url for url in self._replicas if url not in wanted]
        # Requests in flight keep a reference to a removed Replica, so its accounting stays consistent.
        self._replicas = {url: self._replicas.get(url) or Replica(url) for url in wanted}
        if added or removed:
            log.info("replicas now %s (added %s, removed %s)", wanted, added, removed)
            self._wake()
            if not wanted and self.waiting:
                # Requests that started waiting while (ejected) replicas were still listed: ask now.
                self._no_backend()

    def available(self) -> list[Replica]:
        """Replicas that may get traffic now."""
        now = time.monotonic()
        return [r for r in self._replicas.values() if r.available(now)]

    def pick(self, exclude: Iterable[Replica] = ()) -> Replica | None:
        """The replica for the next piece of work, avoiding `exclude` when another one is available."""
        candidates = self.available()
        if not candidates:
            return None
        excluded = set(exclude)
        fresh = [r for r in candidates if r not in excluded]
        candidates = fresh or candidates
        if self.balancing == POWER_OF_TWO and len(candidates) > 2:
            candidates = random.sample(candidates, 2)
        least = min(r.pending_pairs for r in candidates)
        # Random among equals: idle routers must not all start on the same replica.
        return random.choice([r for r in candidates if r.pending_pairs == least])

    async def hold(self) -> None:
        """Return once a replica is available, waiting up to `wait_seconds` (scale from zero, a rollout).

        This wait comes before a request's own deadline starts (see docs/router.md, "No replica ready"), so a
        cold start longer than `request_timeout_seconds` does not fail the requests that triggered it.
        `NoBackend` when the wait ends, or at once when `max_waiting` requests already wait.
        """
        if self.pick() is None:
            await self._wait_for_replica(time.monotonic() + self.wait_seconds, ())

    async def acquire(self, pairs: int, deadline: float, exclude: Iterable[Replica] = ()) -> Replica:
        """Pick a replica and count `pairs` on it, waiting while none is available.

        The wait ends at `deadline` (monotonic) or after `wait_seconds`, whichever is first; then, or when too
        many requests already wait, `NoBackend` is raised.
        """
        replica = self.pick(exclude)
        if replica is None:
            replica = await self._wait_for_replica(
                min(deadline, time.monotonic() + self.wait_seconds), exclude
            )
        replica.pending_pairs += pairs
        return replica

    def release(self, replica: Replica, pairs: int) -> None:
        """The work counted by `acquire` is finished."""
        replica.pending_pairs -= pairs

    async def _wait_for_replica(self, deadline: float, exclude: Iterable[Replica]) -> Replica:
        if self.waiting >= self.max_waiting:
            raise NoBackend(f"no replica is ready and {self.waiting} requests already wait for one")
        self.waiting += 1
        # Only an empty set is "scaled to zero"; replicas that are all ejected come back by themselves.
        if not self._replicas:
            self._no_backend()
        try:
            while True:
                replica = self.pick(exclude)
                if replica is not None:
                    return replica
                now = time.monotonic()
                if now >= deadline:
                    raise NoBackend("no replica became ready in time")
                # Wake on a change of the set, or when the earliest ejection ends.
                expiries = [r.ejected_until - now for r in self._replicas.values() if r.ejected_until > now]
                timeout = min([deadline - now, *expiries])
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=max(timeout, 0.001))
                except asyncio.TimeoutError:
                    pass
        finally:
            self.waiting -= 1

    def succeeded(self, replica: Replica) -> None:
        """A good answer: the replica's failure streak ends."""
        replica.consecutive_failures = 0

    def failed(self, replica: Replica, reason: str) -> None:
        """A connect error or 5xx: eject after `ejection.consecutive_failures` in a row."""
        replica.consecutive_failures += 1
        if replica.consecutive_failures >= self.ejection.consecutive_failures:
            self._eject(replica, reason)

    def draining(self, replica: Replica) -> None:
        """The replica said 503 or `Connection: close`: send it nothing new for a while (not a failure)."""
        if replica.available(time.monotonic()):
            self._eject(replica, "draining")

    def _eject(self, replica: Replica, reason: str) -> None:
        replica.ejected_until = time.monotonic() + self.ejection.seconds
        replica.consecutive_failures = 0
        log.warning("replica %s left out for %.1fs (%s)", replica.url, self.ejection.seconds, reason)
        if self.on_eject is not None:
            self.on_eject(replica, reason)

    def _no_backend(self) -> None:
        if self.on_no_backend is not None:
            try:
                self.on_no_backend()
            except Exception:
                log.exception("the on_no_backend hook failed")

    def _wake(self) -> None:
        self._changed.set()


async def resolve(name: str, port: int) -> list[str]:
    """The URLs of every address `name` resolves to (a headless Service: one per ready pod), sorted."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []  # NXDOMAIN: a headless Service with no ready pod has no records at all
    urls = set()
    for family, *_, sockaddr in infos:
        host = f"[{sockaddr[0]}]" if family == socket.AF_INET6 else sockaddr[0]
        urls.add(f"http://{host}:{port}")
    return sorted(urls)


async def discover(replicas: ReplicaSet, discovery: DiscoveryConfig, static: list[str]) -> None:
    """Keep `replicas` equal to the static URLs plus the ready pods behind `discovery.service`, forever."""
    while True:
        try:
            found = await resolve(discovery.service, discovery.port)
            replicas.set_urls([*static, *found])
        except Exception:
            log.exception("resolving %s failed; keeping the last known replicas", discovery.service)
        await asyncio.sleep(discovery.interval_seconds)
