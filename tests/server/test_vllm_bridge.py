"""The one vLLM bridge: every vLLM name it uses exists in the installed vLLM; nothing else imports vLLM.

A vLLM upgrade that renames or removes something the server relies on fails `test_every_vllm_name_...` with
the names that went missing, instead of a server that degrades silently or fails at its first request.
"""

from __future__ import annotations

import ast
import importlib
import json
import logging
import subprocess
import sys
import types
from pathlib import Path

import pytest
from reranker_server import vllm_bridge

BRIDGE = Path(vllm_bridge.__file__)
SERVER_PACKAGE = BRIDGE.parent
# Modules that must import (and run) without vLLM: the router needs the dialects, the operator the contract,
# and the logic modules are tested with stand-ins.
VLLM_FREE = ("config", "dialects", "profiles", "download", "engine", "scoring", "http", "lifecycle", "cpu")


def vllm_names_in_bridge() -> list[str]:
    """Every vLLM name the bridge uses, as "module:attribute.path", read from its source (so it cannot drift)."""
    tree = ast.parse(BRIDGE.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vllm":
            names += [f"{node.module}:{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [f"{alias.name}:" for alias in node.names if alias.name.split(".")[0] == "vllm"]
        elif isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "INTERNALS" for t in node.targets
        ):
            names += list(ast.literal_eval(node.value))
    return names


def namespace_fields_in_bridge() -> set[str]:
    """The fields of vLLM's parsed arguments the bridge reads (`args.<field>`)."""
    tree = ast.parse(BRIDGE.read_text())
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "args"
    }


def missing(names: list[str]) -> list[str]:
    """The names that do not resolve in the installed vLLM."""
    gone = []
    for name in names:
        module_name, _, path = name.partition(":")
        try:
            target = importlib.import_module(module_name)
        except ImportError:
            gone.append(name)
            continue
        for part in filter(None, path.split(".")):
            if not hasattr(target, part):
                gone.append(name)
                break
            target = getattr(target, part)
    return gone


def test_every_vllm_name_the_bridge_uses_exists():
    names = vllm_names_in_bridge()
    assert len(names) >= 15, names  # the scan found the imports (an empty list would pass vacuously)
    gone = missing(names)
    assert not gone, (
        f"the installed vLLM {vllm_bridge.vllm_version()} lacks {gone}, which "
        "server/reranker_server/vllm_bridge.py uses; adapt the bridge to this vLLM"
    )


def test_every_argument_field_the_bridge_reads_exists():
    args = vllm_bridge.parse_args(["--model", "some/model"])
    fields = namespace_fields_in_bridge()
    assert {"host", "port", "ssl_keyfile", "h11_max_header_count"} <= fields
    gone = sorted(f for f in fields if not hasattr(args, f))
    assert not gone, f"vLLM {vllm_bridge.vllm_version()}'s serve arguments no longer have {gone}"


def test_the_name_check_reports_what_is_missing():
    assert missing(["vllm.entrypoints.launchers.app:build_app"]) == []
    fake = [
        "vllm.entrypoints.launchers.app:build_app_v9",
        "vllm.no_such_module:thing",
        "vllm.entrypoints.pooling.scoring.serving:ServingScores._gone",
    ]
    assert missing(fake) == fake


def test_only_the_bridge_imports_vllm():
    importers = []
    for path in sorted(SERVER_PACKAGE.glob("*.py")):
        if path == BRIDGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            if any(m.split(".")[0] == "vllm" for m in modules):
                importers.append(f"{path.name}:{node.lineno}")
    assert not importers, f"vLLM imported outside vllm_bridge.py: {importers}"


def test_contract_and_logic_modules_import_without_vllm():
    script = f"""
import sys
class NoVllm:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "vllm":
            raise ImportError("vllm is blocked in this test")
sys.meta_path.insert(0, NoVllm())
import importlib
for name in {VLLM_FREE!r}:
    importlib.import_module("reranker_server." + name)
try:
    importlib.import_module("reranker_server.vllm_bridge")
except ImportError as exc:
    print("bridge:", exc)
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] == "vllm"))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "bridge: vllm is blocked in this test" in out.stdout  # the blocker works
    assert "loaded: []" in out.stdout


# --- the one reach into vLLM's private scoring internals --------------------------------------------------------


class ServingScoresStandIn:
    """vLLM's ServingScores as far as the bridge touches it: tokenises nothing, reports prompt lengths."""

    def __init__(self, lengths: list[int]) -> None:
        self.lengths = lengths

    def _extract_prompt_len(self, prompt: list[int]) -> int:
        return len(prompt)

    def _build_response(self, ctx):
        results = [{"index": i, "relevance_score": 0.5} for i in range(len(ctx.request.documents))]
        body = {"results": results, "usage": {"prompt_tokens": sum(self.lengths)}}
        return types.SimpleNamespace(status_code=200, body=json.dumps(body).encode())

    async def __call__(self, request, raw_request):
        inputs = [{"prompts": [0] * n} for n in self.lengths]
        return self._build_response(types.SimpleNamespace(request=request, engine_inputs=inputs))


class OldServingScores:
    """A vLLM whose ServingScores lacks the internals: it answers, but reports no lengths."""

    async def __call__(self, request, raw_request):
        body = {"results": [{"index": 0, "relevance_score": 0.5}], "usage": {"prompt_tokens": 3}}
        return types.SimpleNamespace(status_code=200, body=json.dumps(body).encode())


OPTIONS = dict(
    instruction=None,
    use_activation=True,
    truncate_prompt_tokens=-1,
    max_tokens_per_query=0,
    max_tokens_per_doc=0,
)


async def test_backend_reads_vllms_prompt_lengths():
    backend = vllm_bridge.RerankBackend(ServingScoresStandIn([20, 7, 20]))
    reply = await backend.rerank("q", ["a", "b", "c"], **OPTIONS)
    assert backend.records_prompt_lengths
    assert (reply.status, reply.prompt_lengths) == (200, [20, 7, 20])
    assert json.loads(reply.body)["usage"]["prompt_tokens"] == 47
    assert not backend._prompt_lengths  # nothing kept after the request


async def test_backend_without_the_internals_warns_once_and_reports_no_lengths(caplog, monkeypatch):
    monkeypatch.setattr(vllm_bridge, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="reranker_server.vllm_bridge"):
        backends = [vllm_bridge.RerankBackend(OldServingScores()) for _ in range(3)]
        reply = await backends[0].rerank("q", ["a"], **OPTIONS)
    assert reply.prompt_lengths is None and not backends[0].records_prompt_lengths
    warnings = [r for r in caplog.records if "_build_response" in r.getMessage()]
    assert len(warnings) == 1, caplog.text


@pytest.mark.parametrize("bad_inputs", [None, [{"no-prompts": 1}]])
async def test_backend_warns_once_when_the_context_changed_shape(bad_inputs, caplog, monkeypatch):
    monkeypatch.setattr(vllm_bridge, "_warned", set())

    class ChangedShape(ServingScoresStandIn):
        async def __call__(self, request, raw_request):
            return self._build_response(types.SimpleNamespace(request=request, engine_inputs=bad_inputs))

    backend = vllm_bridge.RerankBackend(ChangedShape([3]))
    with caplog.at_level(logging.WARNING, logger="reranker_server.vllm_bridge"):
        for _ in range(3):
            reply = await backend.rerank("q", ["a"], **OPTIONS)
    assert reply.status == 200 and reply.prompt_lengths is None
    assert sum("cannot read prompt lengths" in r.getMessage() for r in caplog.records) == 1
