"""The router's logic against fake replicas on loopback: dialects, sharding, balancing, retries, limits, drain."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeBackend, RouterUnderTest, Served, bound_socket, fake_score  # noqa: E402
from reranker_router.config import EjectionConfig  # noqa: E402
from reranker_router.dispatch import plan_shards  # noqa: E402
from reranker_router.replicas import NoBackend, ReplicaSet  # noqa: E402

DOCS = [f"document number {i}" for i in range(40)]


def ranked(query: str, documents: list[str], sign: float = 1.0) -> list[tuple[int, float]]:
    scores = [sign * fake_score(query, d) for d in documents]
    return sorted(((i, s) for i, s in enumerate(scores)), key=lambda item: (-item[1], item[0]))


async def backends(*fakes: FakeBackend) -> list[Served]:
    return [await Served(fake).start() for fake in fakes]


async def stop(served: list[Served]) -> None:
    for s in served:
        await s.stop()


@pytest.mark.parametrize(
    ("count", "size", "expected"),
    [(1, 128, [1]), (128, 128, [128]), (129, 128, [65, 64]), (1000, 128, [125] * 8), (10, 3, [3, 3, 2, 2])],
)
def test_plan_shards_covers_everything_in_order(count: int, size: int, expected: list[int]) -> None:
    shards = plan_shards(count, size)
    assert [len(s) for s in shards] == expected
    assert [i for s in shards for i in s] == list(range(count))


async def test_every_dialect_answers_in_its_own_shape() -> None:
    served = await backends(FakeBackend("a"), FakeBackend("b"))
    async with RouterUnderTest([s.url for s in served], shard_documents=16) as router:
        async with httpx.AsyncClient(base_url=router.url) as client:
            expected = ranked("q", DOCS)
            for path in ("/rerank", "/v1/rerank", "/v1/v1/rerank"):
                reply = (await client.post(path, json={"query": "q", "documents": DOCS, "top_n": 5})).json()
                assert [(r["index"], r["relevance_score"]) for r in reply["results"]] == expected[:5]
                assert reply["results"][0]["document"] == {"text": DOCS[expected[0][0]]}
                assert reply["usage"]["prompt_tokens"] == 3 * len(DOCS) and reply["model"] == "fake"
                assert reply["meta"]["api_version"] == {"version": "1"}
            v2 = (
                await client.post("/v2/rerank", json={"query": "q", "documents": DOCS, "model": "fake"})
            ).json()
            assert [(r["index"], r["relevance_score"]) for r in v2["results"]] == expected
            assert "document" not in v2["results"][0] and v2["meta"]["api_version"] == {"version": "2"}
            tei = (
                await client.post("/rerank", json={"query": "q", "texts": DOCS[:3], "return_text": True})
            ).json()
            assert tei == [{"index": i, "score": s, "text": DOCS[i]} for i, s in ranked("q", DOCS[:3])]
            nvidia = (
                await client.post(
                    "/v1/reranking", json={"query": {"text": "q"}, "passages": [{"text": d} for d in DOCS]}
                )
            ).json()
            assert [(r["index"], r["logit"]) for r in nvidia["rankings"]] == ranked("q", DOCS, -1.0)
            pairs = {"text_1": ["q1", "q2", "q1"], "text_2": ["x", "y", "z"]}
            score = (await client.post("/score", json=pairs)).json()
            assert [d["score"] for d in score["data"]] == [
                fake_score("q1", "x"),
                fake_score("q2", "y"),
                fake_score("q1", "z"),
            ]
            one_to_n = (await client.post("/v1/score", json={"queries": "q", "documents": DOCS})).json()
            assert [d["score"] for d in one_to_n["data"]] == [fake_score("q", d) for d in DOCS]
            models = await client.get("/v1/models")
            assert models.status_code == 200 and models.json()["data"][0]["id"] == "fake"
            assert (await client.get("/info")).json()["model_id"] == "fake"
    await stop(served)


async def test_a_thousand_documents_are_sharded_over_replicas_and_merged_like_one_call() -> None:
    fakes = [FakeBackend("a", delay=0.0005), FakeBackend("b", delay=0.0005)]
    served = await backends(*fakes)
    docs = [f"passage {i} about something" for i in range(1000)]
    body = {"query": "what", "documents": docs, "return_documents": False}
    async with RouterUnderTest([s.url for s in served], shard_documents=128) as sharded:
        async with httpx.AsyncClient(base_url=sharded.url) as client:
            merged = (await client.post("/v1/rerank", json=body)).json()
    assert sorted(fakes[0].seen + fakes[1].seen) == [125] * 8
    assert fakes[0].seen and fakes[1].seen, "both replicas must get shards"
    async with RouterUnderTest([served[0].url], shard_documents=1000) as single:
        async with httpx.AsyncClient(base_url=single.url) as client:
            whole = (await client.post("/v1/rerank", json=body)).json()
    assert fakes[0].seen[-1] == 1000
    assert (
        merged["results"]
        == whole["results"]
        == [{"index": i, "relevance_score": s} for i, s in ranked("what", docs)]
    )
    assert merged["usage"] == whole["usage"] == {"prompt_tokens": 3000, "total_tokens": 3000}
    await stop(served)


async def test_small_requests_go_to_the_replica_not_busy_with_a_large_one() -> None:
    fakes = [FakeBackend("a", delay=0.002), FakeBackend("b", delay=0.002)]
    served = await backends(*fakes)
    async with RouterUnderTest([s.url for s in served], shard_documents=1000) as router:
        async with httpx.AsyncClient(base_url=router.url, timeout=30) as client:
            big = asyncio.ensure_future(client.post("/rerank", json={"query": "q", "documents": DOCS * 10}))
            while not any(f.in_flight for f in fakes):
                await asyncio.sleep(0.005)
            busy = next(f for f in fakes if f.in_flight)
            small = [client.post("/rerank", json={"query": "q", "documents": DOCS[:20]}) for _ in range(10)]
            assert all(r.status_code == 200 for r in await asyncio.gather(*small))
            assert (await big).status_code == 200
    idle = next(f for f in fakes if f is not busy)
    assert busy.seen == [400] and idle.seen == [20] * 10
    await stop(served)


async def test_a_draining_replica_is_skipped_and_a_failing_one_is_retried_elsewhere() -> None:
    fakes = [
        FakeBackend("draining", mode="draining"),
        FakeBackend("broken", mode="error"),
        FakeBackend("good"),
    ]
    served = await backends(*fakes)
    async with RouterUnderTest([s.url for s in served]) as router:
        async with httpx.AsyncClient(base_url=router.url) as client:
            replies = [
                await client.post("/rerank", json={"query": "q", "documents": DOCS[:5]}) for _ in range(20)
            ]
            metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in replies] == [200] * 20
    assert len(fakes[2].seen) == 20
    assert 'reranker_router_ejections_total{reason="draining"} 1.0' in metrics
    assert 'reranker_router_ejections_total{reason="5xx"} 1.0' in metrics
    await stop(served)


async def test_a_dead_replica_costs_no_failed_request() -> None:
    dead = bound_socket()
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there: connection refused
    served = await backends(FakeBackend("good"))
    async with RouterUnderTest([dead_url, served[0].url]) as router:
        async with httpx.AsyncClient(base_url=router.url) as client:
            replies = await asyncio.gather(
                *(client.post("/rerank", json={"query": "q", "documents": DOCS[:5]}) for _ in range(20))
            )
            metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in replies] == [200] * 20
    assert 'reranker_router_ejections_total{reason="connect"}' in metrics
    await stop(served)


async def test_a_replica_saying_connection_close_is_left_alone_for_a_while() -> None:
    fakes = [FakeBackend("closing", mode="close"), FakeBackend("staying")]
    served = await backends(*fakes)
    async with RouterUnderTest([s.url for s in served]) as router:
        async with httpx.AsyncClient(base_url=router.url) as client:
            replies = [
                await client.post("/rerank", json={"query": "q", "documents": DOCS[:5]}) for _ in range(10)
            ]
    assert [r.status_code for r in replies] == [200] * 10
    assert len(fakes[0].seen) <= 1 and len(fakes[1].seen) >= 9
    await stop(served)


async def test_overload_gets_429_with_retry_after() -> None:
    served = await backends(FakeBackend("slow", delay=0.01))
    async with RouterUnderTest(
        [served[0].url], admission={"max_pending_pairs_per_replica": 90, "retry_after_seconds": 2}
    ) as router:
        async with httpx.AsyncClient(base_url=router.url, timeout=30) as client:
            first = asyncio.ensure_future(client.post("/rerank", json={"query": "q", "documents": DOCS[:30]}))
            while not router.router.pending_pairs:
                await asyncio.sleep(0.005)
            second = asyncio.ensure_future(
                client.post("/rerank", json={"query": "q", "documents": DOCS[:30]})
            )
            while router.router.pending_pairs < 60:
                await asyncio.sleep(0.005)
            third = await client.post("/rerank", json={"query": "q", "documents": DOCS})
            assert (await first).status_code == 200
            assert (await second).status_code == 200  # 60 pending <= 90
    assert third.status_code == 429 and third.headers["retry-after"] == "2"  # 60 + 40 > 90
    assert "capacity" in third.json()["error"]["message"]
    await stop(served)


async def test_no_replica_holds_the_request_calls_the_hook_and_serves_it_when_one_appears() -> None:
    async with RouterUnderTest([], no_backend={"wait_seconds": 5, "max_waiting_requests": 1}) as router:
        async with httpx.AsyncClient(base_url=router.url, timeout=30) as client:
            held = asyncio.ensure_future(client.post("/rerank", json={"query": "q", "documents": DOCS[:3]}))
            while not router.router.replicas.waiting:
                await asyncio.sleep(0.005)
            assert router.no_backend_calls == 1
            too_many = await client.post("/rerank", json={"query": "q", "documents": DOCS[:3]})
            assert too_many.status_code == 503 and too_many.headers["retry-after"] == "1"
            served = await backends(FakeBackend("late"))
            router.router.replicas.set_urls([served[0].url])
            assert (await held).status_code == 200
    await stop(served)


async def test_no_replica_at_all_ends_in_503_with_retry_after() -> None:
    async with RouterUnderTest([], no_backend={"wait_seconds": 0.2}) as router:
        async with httpx.AsyncClient(base_url=router.url) as client:
            reply = await client.post("/rerank", json={"query": "q", "documents": DOCS[:3]})
    assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
    assert "no reranker replica is ready" in reply.json()["error"]["message"]


async def test_api_key_is_enforced_and_passed_on(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("secret-1\n")
    fake = FakeBackend("a")
    served = await backends(fake)
    async with RouterUnderTest([served[0].url], auth={"api_key_file": str(keys)}) as router:
        async with httpx.AsyncClient(base_url=router.url) as client:
            body = {"query": "q", "documents": DOCS[:2]}
            assert (await client.post("/rerank", json=body)).status_code == 401
            assert (await client.get("/v1/models")).status_code == 401
            bad = await client.post("/rerank", json=body, headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
            good = await client.post("/rerank", json=body, headers={"Authorization": "Bearer secret-1"})
            assert good.status_code == 200
            for path in ("/healthz", "/ready", "/metrics"):
                assert (await client.get(path)).status_code == 200
    assert len(fake.seen) == 1 and fake.headers_seen[0]["authorization"] == "Bearer secret-1"
    await stop(served)


async def test_bad_input_is_refused_by_the_router_with_a_clear_4xx() -> None:
    fake = FakeBackend("a")
    served = await backends(fake)
    async with RouterUnderTest([served[0].url], limits={"max_documents": 50}) as router:
        async with httpx.AsyncClient(base_url=router.url) as client:
            cases = [
                (
                    await client.post(
                        "/rerank", content=b"{nope", headers={"content-type": "application/json"}
                    ),
                    400,
                    "malformed JSON",
                ),
                (await client.post("/rerank", json={"documents": ["a"]}), 400, "'query' is required"),
                (
                    await client.post("/rerank", json={"query": "q", "documents": DOCS * 2}),
                    413,
                    "too many documents",
                ),
                (
                    await client.post("/rerank", content=b"x", headers={"content-type": "text/plain"}),
                    415,
                    "content type",
                ),
                (await client.get("/rerank"), 405, "not allowed"),
                (
                    await client.post("/rerank", json={"query": "q", "documents": ["a"], "model": "other"}),
                    404,
                    "does not exist",
                ),
            ]
    for reply, status, text in cases:
        assert reply.status_code == status, reply.text
        assert text in reply.text
    assert len(fake.seen) == 0  # only the unknown model reached the replica, which refused it before scoring
    await stop(served)


async def test_drain_answers_ready_503_closes_connections_and_finishes_accepted_work() -> None:
    served = await backends(FakeBackend("slow", delay=0.01))
    async with RouterUnderTest([served[0].url], drain_seconds=5) as router:
        async with httpx.AsyncClient(base_url=router.url, timeout=30) as client:
            accepted = asyncio.ensure_future(
                client.post("/rerank", json={"query": "q", "documents": DOCS[:20]})
            )
            while not router.router.pending_pairs:
                await asyncio.sleep(0.005)
            drain = asyncio.ensure_future(router.router.drain())
            assert (await client.get("/ready")).status_code == 503
            late = await client.post("/rerank", json={"query": "q", "documents": DOCS[:2]})
            assert late.status_code == 200 and late.headers["connection"] == "close"
            assert (await accepted).status_code == 200
            await asyncio.wait_for(drain, 5)
    await stop(served)


async def test_work_left_at_the_drain_deadline_gets_503_with_retry_after() -> None:
    served = await backends(FakeBackend("stuck", delay=1.0))
    async with RouterUnderTest([served[0].url], drain_seconds=0.2) as router:
        async with httpx.AsyncClient(base_url=router.url, timeout=30) as client:
            stuck = asyncio.ensure_future(client.post("/rerank", json={"query": "q", "documents": DOCS[:5]}))
            while not router.router.pending_pairs:
                await asyncio.sleep(0.005)
            await router.router.drain()
            reply = await stuck
    assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
    await stop(served)


def test_least_loaded_pick_avoids_excluded_and_ejected_replicas() -> None:
    replicas = ReplicaSet(EjectionConfig(consecutive_failures=2, seconds=60))
    replicas.set_urls(["http://a", "http://b", "http://c"])
    a, b, c = list(replicas)
    a.pending_pairs, b.pending_pairs, c.pending_pairs = 5, 1, 3
    assert replicas.pick() is b
    assert replicas.pick(exclude=[b]) is c
    replicas.failed(b, "5xx")
    assert replicas.pick() is b, "one failure of two allowed: still in"
    replicas.failed(b, "5xx")
    assert replicas.pick() is c and b not in replicas.available()
    assert replicas.pick(exclude=[a, c]) in (a, c), "when every fresh replica is excluded, reuse one"
    replicas.set_urls(["http://c", "http://d"])
    assert [r.url for r in replicas] == ["http://c", "http://d"] and list(replicas)[0] is c


def test_power_of_two_never_picks_the_most_loaded_of_three() -> None:
    replicas = ReplicaSet(EjectionConfig(), balancing="power-of-two")
    replicas.set_urls(["http://a", "http://b", "http://c"])
    for replica, load in zip(replicas, (0, 10, 20), strict=True):
        replica.pending_pairs = load
    picks = {replicas.pick().url for _ in range(200)}
    assert picks == {"http://a", "http://b"}


async def test_the_scale_from_zero_hook_fires_only_when_no_replica_is_known() -> None:
    calls = []
    replicas = ReplicaSet(EjectionConfig(seconds=0.05), wait_seconds=1, on_no_backend=lambda: calls.append(1))
    replicas.set_urls(["http://a"])
    (a,) = list(replicas)
    replicas.failed(a, "connect")
    assert await replicas.acquire(3, time.monotonic() + 1) is a and a.pending_pairs == 3
    assert calls == [], "an ejected replica comes back by itself; that is not scale-from-zero"
    replicas.set_urls([])
    with pytest.raises(NoBackend):
        await replicas.acquire(1, time.monotonic() + 0.05)
    assert calls == [1]


async def test_the_cohere_sdk_ragflow_pins_reads_the_routers_replies() -> None:
    """cohere==5.6.2 (RAGFlow's VLLM and Cohere providers) at both base URLs users type, with a key."""
    import cohere

    served = await backends(FakeBackend("a"), FakeBackend("b"))
    async with RouterUnderTest([s.url for s in served], shard_documents=8) as router:
        for base in (router.url, router.url + "/v1"):
            client = cohere.AsyncClient(api_key="x", base_url=base, timeout=30.0)
            reply = await client.rerank(
                model="fake", query="q", documents=DOCS, top_n=4, return_documents=True
            )
            assert [(r.index, r.relevance_score) for r in reply.results] == ranked("q", DOCS)[:4]
            assert reply.results[0].document.text == DOCS[reply.results[0].index]
            assert reply.meta.api_version.version == "1"
    await stop(served)
