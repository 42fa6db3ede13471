"""Graceful termination: a pod told to stop finishes what it accepted, then the engine stops.

On the first SIGTERM (or SIGINT), in this order:
1. `/ready` answers 503 (`Drain.draining`), so the pod leaves the endpoints of every Service and router;
2. every response from now on carries `Connection: close`, and idle keep-alive connections are closed, so
   clients reconnect (through the Service, to other pods) instead of sending more work here;
3. requests already accepted, queued or running in the engine, finish and are answered;
4. when none is left, or at the drain deadline, the HTTP server stops (requests still running at the deadline,
   and any arriving after the drain, get 503 with `Retry-After`); only then does the caller stop vLLM's engine.
A second signal cuts the drain short: everything still running gets its 503 at once and the server stops.

vLLM-free (uvicorn and ASGI only), so the sequence is tested with a stand-in app in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn

from .dialects import error_body

log = logging.getLogger("reranker_server.lifecycle")

# Seconds a client should wait before retrying a 503 from a stopping pod: the retry goes to another pod.
RETRY_AFTER_SECONDS = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After a second stop signal the process is gone within this many seconds, whatever the engine is doing.
FORCED_EXIT_SECONDS = 1.5

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Drain:
    """The drain's state: consulted by `/ready`, the middleware and the shutdown sequence."""

    def __init__(self, deadline_seconds: float) -> None:
        self.deadline_seconds = deadline_seconds
        self.draining = False  # SIGTERM seen: /ready 503, Connection: close on every response
        self.closed = False  # drain over: every request gets 503 at once
        self.started_at: float | None = None
        self._requests: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """HTTP requests being handled right now."""
        return len(self._requests)

    def begin(self) -> None:
        """Start draining (idempotent)."""
        if not self.draining:
            self.draining = True
            self.started_at = time.monotonic()

    def close(self) -> int:
        """End the drain: cut every request still running (each is answered 503); returns how many."""
        self.closed = True
        running = [task for task in self._requests if not task.done()]
        for task in running:
            self._cut.add(task)
            task.cancel("drain deadline")
        return len(running)

    async def wait_idle(self, timeout: float, *, unless: asyncio.Event | None = None) -> bool:
        """Wait until no request is in flight (True), or `timeout` passes or `unless` is set (False)."""
        waits = {asyncio.ensure_future(self._idle.wait())}
        if unless is not None:
            waits.add(asyncio.ensure_future(unless.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return self._idle.is_set()

    def enter(self, task: asyncio.Task[Any]) -> None:
        """A request starts (called by the middleware)."""
        self._requests.add(task)
        self._idle.clear()

    def leave(self, task: asyncio.Task[Any]) -> None:
        """A request ends (called by the middleware)."""
        self._requests.discard(task)
        self._cut.discard(task)
        if not self._requests:
            self._idle.set()

    def was_cut(self, task: asyncio.Task[Any]) -> bool:
        """Whether `close` cancelled this request's task."""
        return task in self._cut


class DrainMiddleware:
    """Outermost ASGI layer: counts requests, adds `Connection: close` while draining, answers 503 once closed."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain = self.drain
        if drain.closed:
            await send_unavailable(send)
            return
        task = asyncio.current_task()
        assert task is not None
        drain.enter(task)
        started = False

        async def send_closing(message: Message) -> None:
            nonlocal started
            if drain.was_cut(task):
                return  # the request's 503 is sent below; whatever the app still says is dropped
            if message["type"] == "http.response.start":
                started = True
                if drain.draining:
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, receive, send_closing)
        except asyncio.CancelledError:
            if not drain.was_cut(task):
                raise
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+ counts cancellations
            if uncancel is not None:
                uncancel()
        finally:
            cut = drain.was_cut(task)
            drain.leave(task)
        if cut and not started:
            await send_unavailable(send)


async def send_unavailable(send: Send) -> None:
    """503 with Retry-After and Connection: close, in the error shape every dialect documents."""
    body = json.dumps(
        error_body(503, "the server is shutting down; retry on another replica", "ServiceUnavailableError")
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def close_idle_connections(server: uvicorn.Server) -> int:
    """Ask every connection to close: idle ones at once, busy ones after their response; returns how many.

    A connection whose request bytes already arrived but were not yet read counts as busy: closing it would
    lose a request the client sent before the signal.
    """
    count = 0
    for connection in list(server.server_state.connections):
        if _unread_bytes(connection):
            continue
        connection.shutdown()
        count += 1
    return count


def _unread_bytes(connection: Any) -> int:
    transport = getattr(connection, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return struct.unpack("i", raw)[0]


class Lifecycle:
    """Runs a uvicorn server until a stop signal, then drains it in the documented order."""

    def __init__(
        self, server: uvicorn.Server, drain: Drain, *, on_forced: Callable[[], None] | None = None
    ) -> None:
        """`on_forced` runs FORCED_EXIT_SECONDS after a second stop signal, in a timer thread, if the process is
        still there (the server passes `exit_with_descendants`)."""
        self.server = server
        self.drain = drain
        self.on_forced = on_forced
        self.signals: list[int] = []
        self.forced = False
        self._stop = asyncio.Event()
        self._force = asyncio.Event()

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """First call: start the drain. Later calls: stop now."""
        self.signals.append(signum)
        name = signal.Signals(signum).name
        if len(self.signals) == 1:
            self.drain.begin()  # /ready is 503 from here on, before anything else happens
            log.info(
                "%s: draining (readiness 503, connections told to close; deadline %.0f s)",
                name,
                self.drain.deadline_seconds,
            )
            self._stop.set()
            return
        if not self.forced:
            self.forced = True
            self._force.set()
            cut = self.drain.close()
            log.warning("second %s: stopping now (%d request(s) answered 503)", name, cut)
            self.server.should_exit = True
            self.server.force_exit = True
            # The orderly stop below (HTTP server, then vLLM's engine) normally takes well under a second; an
            # engine busy with aborted work must not keep a process that was told twice to stop.
            if self.on_forced is not None:
                timer = threading.Timer(FORCED_EXIT_SECONDS, self.on_forced)
                timer.daemon = True
                timer.start()

    async def run(
        self,
        sockets: list[socket.socket],
        *,
        watchdog: Awaitable[None] | None = None,
        signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
    ) -> None:
        """Serve until stopped; returns once the HTTP server has drained and stopped.

        The engine must be stopped by the caller afterwards (it still serves requests during the drain).
        `watchdog` (e.g. vLLM's engine watchdog) runs beside the server and may tell it to exit. `signals`
        call `request_stop` (the server itself must not install handlers: vLLM's `NoSignalServer`).
        """
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop, sig)
        serving = loop.create_task(self.server.serve(sockets=sockets))
        background = loop.create_task(watchdog) if watchdog is not None else None  # type: ignore[arg-type]
        stop = loop.create_task(self._stop.wait())
        try:
            await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
            if self._stop.is_set() and not serving.done():
                await self._drain()
                self.server.should_exit = True
            await serving
        finally:
            stop.cancel()
            if background is not None:
                background.cancel()

    async def _drain(self) -> None:
        drain = self.drain
        closed = close_idle_connections(self.server)
        log.info("drain: %d request(s) in flight, %d connection(s) told to close", drain.in_flight, closed)
        assert drain.started_at is not None
        remaining = drain.deadline_seconds - (time.monotonic() - drain.started_at)
        finished = await drain.wait_idle(max(remaining, 0.0), unless=self._force)
        if self.forced:
            return
        cut = drain.close()
        if finished:
            log.info(
                "drain: every accepted request answered after %.2f s", time.monotonic() - drain.started_at
            )
        else:
            log.warning(
                "drain: deadline of %.0f s reached; %d request(s) still running answered 503 with Retry-After",
                drain.deadline_seconds,
                cut,
            )
        # Let the cut requests send their 503 before uvicorn closes the connections.
        await drain.wait_idle(1.0, unless=self._force)


def exit_with_descendants() -> None:
    """Kill every process this one started (vLLM's engine and workers), then exit at once."""
    import psutil  # the server's dependency; imported here so the module's own import stays light

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(children, timeout=1)
    log.warning("forced exit after the second stop signal")
    logging.shutdown()
    os._exit(0)


@contextlib.contextmanager
def stop_signals_abandon_loading(abandon: Callable[[str], None]) -> Iterator[None]:
    """While the model loads: the first stop signal calls `abandon(signal name)` at once, in a relay thread.

    The main thread is then blocked inside vLLM (waiting for its engine process) and cannot act: a Python
    signal handler would run only when the engine is ready, minutes later, and an exception raised from it
    inside that wait is swallowed (pyzmq retries the interrupted poll). So the handler only wakes the relay
    thread (through the wakeup fd) and `abandon` stops the start from there; it is expected to exit the
    process.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def relay() -> None:
        while data := os.read(read_end, 1):
            if data[0] in STOP_SIGNALS:
                abandon(signal.Signals(data[0]).name)
                return

    previous = {sig: signal.signal(sig, _wake_relay) for sig in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    relay_thread = threading.Thread(target=relay, name="stop-signal-relay", daemon=True)
    relay_thread.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)  # ends the relay's read
        relay_thread.join(timeout=1)
        os.close(read_end)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wake_relay(_signum: int, _frame: Any) -> None:
    # Python writes the signal number to the wakeup fd before calling this; the relay thread does the work.
    pass
