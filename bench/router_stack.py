"""Which HTTP stack adds the least latency to a proxied rerank request? (chooses the router's stack)

Starts a fake backend (fixed 20-document reply) and three minimal pass-through proxies, each in its own
process, then sends a 20-document request body through each one, interleaved round by round with the direct
call, from one keep-alive client. Prints p50/p99 of the latency each proxy adds over the direct call.

    python bench/router_stack.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import statistics
import time

BODY = json.dumps({"query": "q" * 40, "documents": ["d" * 400] * 20}).encode()
REPLY = json.dumps({"results": [{"index": i, "relevance_score": 0.5} for i in range(20)]}).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend(port: int) -> None:
    """A backend that answers at once (aiohttp server: only its own speed matters, and it is the same for all)."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=REPLY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/rerank", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def starlette_httpx(port: int, upstream: str) -> None:
    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    client = httpx.AsyncClient(base_url=upstream)

    async def handle(request: Request) -> Response:
        reply = await client.post(
            "/rerank", content=await request.body(), headers={"content-type": "application/json"}
        )
        return Response(reply.content, status_code=reply.status_code, media_type="application/json")

    app = Starlette(routes=[Route("/rerank", handle, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools")


def starlette_aiohttp(port: int, upstream: str) -> None:
    import aiohttp
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    state: dict = {}

    async def handle(request: Request) -> Response:
        if "s" not in state:
            state["s"] = aiohttp.ClientSession(upstream)
        async with state["s"].post(
            "/rerank", data=await request.body(), headers={"content-type": "application/json"}
        ) as r:
            content = await r.read()
        return Response(content, status_code=r.status, media_type="application/json")

    app = Starlette(routes=[Route("/rerank", handle, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools")


def aiohttp_aiohttp(port: int, upstream: str) -> None:
    import aiohttp
    import uvloop
    from aiohttp import web

    async def on_startup(app: web.Application) -> None:
        app["s"] = aiohttp.ClientSession(upstream)

    async def handle(request: web.Request) -> web.Response:
        async with request.app["s"].post(
            "/rerank", data=await request.read(), headers={"content-type": "application/json"}
        ) as r:
            content = await r.read()
        return web.Response(body=content, status=r.status, content_type="application/json")

    app = web.Application()
    app.on_startup.append(on_startup)
    app.router.add_post("/rerank", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=uvloop.new_event_loop())


def _wait(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    import http.client

    procs = []
    bport = _free_port()
    procs.append(multiprocessing.Process(target=backend, args=(bport,), daemon=True))
    upstream = f"http://127.0.0.1:{bport}"
    stacks = {
        "starlette+uvicorn / httpx": starlette_httpx,
        "starlette+uvicorn / aiohttp client": starlette_aiohttp,
        "aiohttp server / aiohttp client": aiohttp_aiohttp,
    }
    ports = {"direct": bport}
    for name, target in stacks.items():
        ports[name] = _free_port()
        procs.append(multiprocessing.Process(target=target, args=(ports[name], upstream), daemon=True))
    for p in procs:
        p.start()
    for port in ports.values():
        _wait(port)
    conns = {name: http.client.HTTPConnection("127.0.0.1", port) for name, port in ports.items()}
    samples: dict[str, list[float]] = {name: [] for name in ports}
    headers = {"content-type": "application/json"}
    for i in range(args.rounds + 100):
        for name, conn in conns.items():
            start = time.perf_counter()
            conn.request("POST", "/rerank", BODY, headers)
            resp = conn.getresponse()
            resp.read()
            if i >= 100:  # warm-up
                samples[name].append(time.perf_counter() - start)
    direct = sorted(samples.pop("direct"))
    d50, d99 = statistics.median(direct), direct[int(len(direct) * 0.99)]
    print(f"direct: p50 {d50 * 1e3:.3f} ms, p99 {d99 * 1e3:.3f} ms ({args.rounds} rounds, interleaved)")
    print("| stack | p50 added (ms) | p99 added (ms) |\n|---|---|---|")
    for name, values in samples.items():
        values.sort()
        p50, p99 = statistics.median(values), values[int(len(values) * 0.99)]
        print(f"| {name} | {(p50 - d50) * 1e3:.3f} | {(p99 - d99) * 1e3:.3f} |")
    for p in procs:
        p.terminate()


if __name__ == "__main__":
    main()
