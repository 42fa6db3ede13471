"""No client input gets a 5xx from the HTTP layer: the bad-input table and Hypothesis fuzzing (stand-in scorer).

The stand-in scorer encodes every text it is given as UTF-8, as a real tokenizer must, so an invalid string
that slipped past the HTTP layer would fail here exactly as it fails vLLM (a 500).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from bad_inputs import JSON, ODD_BUT_VALID, Case, bad_inputs, good_body, key_cases
from fastapi.testclient import TestClient
from fuzz_requests import FuzzRequest, check_reply, fuzz_settings, requests_
from hypothesis import given
from reranker_server.dialects import DialectError
from reranker_server.scoring import engine_error_message
from test_http_layer import KEY, SERVED, FakeScorer, make_app

MAX_DOCUMENTS = 100
MAX_BYTES = 256 * 1024
CASES = bad_inputs(max_documents=MAX_DOCUMENTS, max_request_bytes=MAX_BYTES, served_name=SERVED)
GOOD = good_body("/v1/rerank", "capital of france", ["paris is the capital", "cats"])


class TokenizingScorer(FakeScorer):
    """FakeScorer that refuses what a tokenizer cannot encode (TypeError, as the real one raises)."""

    async def rerank(self, query, documents, **kwargs):
        for text in (query, *documents, kwargs.get("instruction") or ""):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise TypeError(f"TextEncodeInput must be a valid string: {exc}") from None
        return await super().rerank(query, documents, **kwargs)


def app_client(key_file=None) -> tuple[TestClient, TokenizingScorer]:
    app, scorer, _ = make_app(
        TokenizingScorer(), key_file=key_file, max_documents=MAX_DOCUMENTS, max_request_bytes=MAX_BYTES
    )
    return TestClient(app), scorer


@pytest.fixture(scope="module")
def open_app():
    client, scorer = app_client()
    with client:
        yield client, scorer


@pytest.fixture(scope="module")
def keyed_app(tmp_path_factory):
    key_file = tmp_path_factory.mktemp("keys") / "api-keys"
    key_file.write_text(KEY + "\n")
    client, scorer = app_client(key_file)
    with client:
        yield client, scorer


def send(client: TestClient, request: FuzzRequest | Case) -> httpx.Response:
    # Header values as latin-1 bytes: HTTP carries bytes, and httpx would refuse non-ASCII str values.
    headers = {name: value.encode("latin-1") for name, value in request.headers.items()}
    return client.request(request.method, request.path, content=request.body, headers=headers)


def assert_error(reply: httpx.Response, status: int) -> None:
    assert reply.status_code == status, reply.text[:500]
    body = reply.json()
    assert body["error"]["code"] == status and body["error"]["message"]
    assert body["detail"] == body["message"] == body["error"]["message"]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_table(open_app, case):
    client, scorer = open_app
    before = len(scorer.calls)
    assert_error(send(client, case), case.status)
    assert len(scorer.calls) == before, "a refused request never reaches the engine"


@pytest.mark.parametrize("case", [*key_cases(KEY), *CASES[:10]], ids=str)
def test_bad_input_table_with_an_api_key(keyed_app, case):
    client, _ = keyed_app
    if case.status != 401:  # the table's own cases, now with the right key
        case = Case(
            case.id, case.method, case.path, case.body, case.status, {**case.headers, "x-api-key": KEY}
        )
    assert_error(send(client, case), case.status)


def test_the_table_covers_every_route_and_mistake():
    assert len(CASES) >= 95 and len(key_cases(KEY)) == 10
    assert {c.path for c in CASES} >= {
        "/rerank",
        "/v1/rerank",
        "/v2/rerank",
        "/v1/v1/rerank",
        "/score",
        "/v1/score",
    }
    assert {c.path for c in CASES} >= {"/v1/reranking", "/v1/ranking", "/v1/models"}
    assert {c.status for c in CASES} == {400, 404, 405, 413, 415}


@pytest.mark.parametrize(("name", "body"), ODD_BUT_VALID, ids=[name for name, _ in ODD_BUT_VALID])
def test_odd_but_valid_text_is_scored_unchanged(open_app, name, body):
    client, scorer = open_app
    reply = client.post("/v1/rerank", json=body)
    assert reply.status_code == 200, reply.text[:300]
    assert scorer.calls[-1]["query"] == body["query"] and scorer.calls[-1]["documents"] == body["documents"]


@fuzz_settings(ci_examples=600)
@given(request=requests_())
def test_fuzz_no_5xx_and_the_server_still_answers(open_app, request):
    client, _ = open_app
    reply = send(client, request)
    check_reply(request, reply.status_code, reply.content)
    assert client.post("/v1/rerank", json=GOOD).status_code == 200


@fuzz_settings(ci_examples=200)
@given(request=requests_(api_key=KEY))
def test_fuzz_with_an_api_key(keyed_app, request):
    client, _ = keyed_app
    reply = send(client, request)
    check_reply(request, reply.status_code, reply.content)
    good = client.post("/v1/rerank", json=GOOD, headers={"authorization": f"Bearer {KEY}"})
    assert good.status_code == 200


async def test_concurrent_mix_of_bad_and_good_requests_gets_no_5xx():
    app, scorer, registry = make_app(
        TokenizingScorer(), max_documents=MAX_DOCUMENTS, max_request_bytes=MAX_BYTES
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

        async def one(case: Case) -> tuple[Case, httpx.Response]:
            return case, await client.request(case.method, case.path, content=case.body, headers=case.headers)

        good = [
            Case(f"good-{i}", "POST", "/v1/rerank", httpx.Request("POST", "/", json=GOOD).content, 200, JSON)
            for i in range(20)
        ]
        mixed = [item for pair in zip(CASES, good * 10, strict=False) for item in pair]
        replies = await asyncio.gather(*(one(case) for case in mixed))
    assert [(c.id, r.status_code) for c, r in replies if r.status_code >= 500] == []
    assert all(r.status_code == c.status for c, r in replies), [
        (c.id, r.status_code) for c, r in replies if r.status_code != c.status
    ]
    assert registry.get_sample_value("reranker_pairs_in_flight") == 0


def test_an_engine_refusal_of_the_input_reaches_the_client_as_its_4xx():
    refusal = DialectError(400, f"the engine refused the request: {engine_error_message(VLLM_ERROR)}")
    app, _, registry = make_app(FakeScorer(fail_with=refusal))
    with TestClient(app) as client:
        reply = client.post("/v1/rerank", json=GOOD)
    assert_error(reply, 400)
    assert "the engine refused the request: too many tokens" in reply.json()["detail"]
    assert registry.get_sample_value("reranker_pairs_in_flight") == 0
    assert engine_error_message({"message": "flat"}) == "flat" and engine_error_message([1]) == "[1]"


VLLM_ERROR = {"error": {"message": "too many tokens", "type": "BadRequestError", "code": 400}}
