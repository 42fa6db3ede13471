"""The drain sequence on a real uvicorn server with a stand-in app (milliseconds; the live test is test_shutdown).

Raw HTTP/1.1 over asyncio streams, so each test sees exactly what a keep-alive client sees: the status, the
`Connection` header, and when the server closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from reranker_server.engine import Readiness, mount_ready
from reranker_server.lifecycle import (
    FORCED_EXIT_SECONDS,
    RETRY_AFTER_SECONDS,
    Drain,
    DrainMiddleware,
    Lifecycle,
    stop_signals_abandon_loading,
)


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers (vLLM's NoSignalServer does the same)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def stand_in_app() -> FastAPI:
    app = FastAPI()

    @app.get("/work")
    async def work(seconds: float = 0.0) -> JSONResponse:
        await asyncio.sleep(seconds)
        return JSONResponse({"slept": seconds})

    return app


class Running:
    """A served stand-in app, its drain and lifecycle, and the task running it."""

    def __init__(self, deadline: float) -> None:
        self.drain = Drain(deadline)
        app = stand_in_app()
        readiness = Readiness(ranking=False, ready=True, reason="ready", draining=lambda: self.drain.draining)
        mount_ready(app, readiness)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(DrainMiddleware(app, self.drain), log_level="warning", lifespan="off")
        self.server = QuietServer(config)
        self.lifecycle = Lifecycle(self.server, self.drain)
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.lifecycle.run([self.sock], signals=()))
        while not self.server.started:
            await asyncio.sleep(0.01)

    async def connect(self) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return Connection(reader, writer)


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, path: str) -> None:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.send(path)
        return await self.response()

    async def closed_within(self, seconds: float) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), seconds) == b""
        except TimeoutError:
            return False


@pytest.fixture
async def running():
    servers: list[Running] = []

    async def start(deadline: float = 10.0) -> Running:
        server = Running(deadline)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.server.should_exit = server.server.force_exit = True
        if server.task is not None:
            await asyncio.wait_for(server.task, 10)


async def test_drain_answers_accepted_work_closes_connections_and_stops(running):
    served = await running()
    busy, idle, prober = await served.connect(), await served.connect(), await served.connect()
    assert (await idle.get("/work"))[0] == 200
    assert (await prober.get("/ready"))[0] == 200
    busy.send("/work?seconds=0.5")
    await asyncio.sleep(0.1)  # accepted and running

    served.lifecycle.request_stop()
    status, headers, _ = await prober.get("/ready")
    assert status == 503 and headers["connection"] == "close"  # unready at once, and told to go
    assert await idle.closed_within(1.0)  # the idle keep-alive connection is closed
    status, headers, body = await busy.response()
    assert (status, headers["connection"], body) == (200, "close", b'{"slept":0.5}')
    assert await busy.closed_within(1.0)
    await asyncio.wait_for(served.task, 2.0)  # no request left: the server stops by itself
    assert served.drain.closed and served.drain.in_flight == 0


async def test_new_requests_while_draining_are_answered_with_connection_close(running):
    served = await running()
    busy, late = await served.connect(), await served.connect()
    busy.send("/work?seconds=0.6")
    await asyncio.sleep(0.1)
    served.lifecycle.request_stop()
    # A new connection during the drain (e.g. before the endpoint removal reached every node) is still served.
    status, headers, _ = await late.get("/work?seconds=0.1")
    assert (status, headers["connection"]) == (200, "close")
    assert (await busy.response())[0] == 200
    await asyncio.wait_for(served.task, 2.0)


async def test_at_the_deadline_remaining_requests_get_503_with_retry_after(running):
    served = await running(deadline=0.3)
    slow = await served.connect()
    slow.send("/work?seconds=30")
    await asyncio.sleep(0.1)
    served.lifecycle.request_stop()
    status, headers, body = await asyncio.wait_for(slow.response(), 3.0)  # never a hang
    assert status == 503
    assert headers["retry-after"] == str(RETRY_AFTER_SECONDS) and headers["connection"] == "close"
    assert b"shutting down" in body
    await asyncio.wait_for(served.task, 3.0)


async def test_after_the_drain_every_request_gets_503(running):
    served = await running()
    served.drain.begin()
    served.drain.close()
    conn = await served.connect()
    status, headers, _ = await conn.get("/work")
    assert (status, headers["retry-after"]) == (503, str(RETRY_AFTER_SECONDS))


async def test_a_second_stop_cuts_the_drain_short(running):
    served = await running(deadline=60)
    slow = await served.connect()
    slow.send("/work?seconds=30")
    await asyncio.sleep(0.1)
    served.lifecycle.request_stop()
    await asyncio.sleep(0.2)
    assert not served.task.done()  # the first stop waits for the request (deadline 60 s)
    forced = threading.Event()  # the server passes exit_with_descendants; a test must not exit pytest
    served.lifecycle.on_forced = forced.set
    served.lifecycle.request_stop()
    status, _, _ = await asyncio.wait_for(slow.response(), 2.0)
    assert status == 503
    await asyncio.wait_for(served.task, 2.0)
    assert served.lifecycle.forced
    # The hard stop follows the second signal whatever the engine does.
    assert await asyncio.to_thread(forced.wait, FORCED_EXIT_SECONDS + 1.0)


async def test_stop_with_nothing_in_flight_and_an_open_idle_connection_is_quick(running):
    served = await running()
    idle = await served.connect()
    assert (await idle.get("/work"))[0] == 200
    served.lifecycle.request_stop()
    assert await idle.closed_within(1.0)
    await asyncio.wait_for(served.task, 2.0)


def test_a_stop_signal_while_loading_reaches_the_abandon_callback_while_the_main_thread_is_blocked():
    read_end, write_end = os.pipe()
    called: list[tuple[str, float]] = []

    def abandon(signal_name: str) -> None:
        called.append((signal_name, time.monotonic()))
        os.write(write_end, b"x")  # the real callback exits the process; this one unblocks the test

    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()
    with stop_signals_abandon_loading(abandon):
        select.select([read_end], [], [], 10)  # blocks like vLLM's wait for its engine process
    os.close(read_end)
    os.close(write_end)
    assert [name for name, _ in called] == ["SIGTERM"]
    assert called[0][1] - started < 3
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored
