"""Starting the server: clear failures before vLLM, readiness, CPU tuning decisions, the model download."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import models
import pytest
import requests
from conftest import run_serve
from fastapi import FastAPI
from fastapi.testclient import TestClient
from reranker_server import cpu, download
from reranker_server.config import EngineConfig, ServerConfig
from reranker_server.engine import GOLDEN_DOCUMENTS, Readiness, check_golden, mount_ready, strip_vllm_routes
from reranker_server.scoring import ScoreResult

CPU_ENGINE = {"device": "cpu", "enforce_eager": True, "cpu_kvcache_space_gib": 1}


# --- startup failures: exit 1, one paragraph on stderr and in the termination log ---------------------------


def test_tp_not_dividing_heads_exits_1_naming_heads_and_tp(tmp_path, tiny_bert_path):
    config = {
        "model": {"name": str(tiny_bert_path), "served_name": "x"},
        "engine": {**CPU_ENGINE, "tensor_parallel_size": 4},
    }
    rc, output, term = run_serve(tmp_path, config)
    assert rc == 1
    assert "tensor_parallel_size 4" in term and "2 attention heads" in term
    assert term.strip() in output  # the same paragraph on stderr
    assert "\n" not in term.strip()  # one paragraph


def test_language_model_is_refused_as_not_a_reranker(tmp_path):
    gpt2 = models.write_gpt2_config(tmp_path / "gpt2")
    rc, _, term = run_serve(
        tmp_path, {"model": {"name": str(gpt2), "served_name": "x"}, "engine": CPU_ENGINE}
    )
    assert rc == 1
    assert f"{gpt2} is not a reranker" in term and "GPT2LMHeadModel" in term


def test_bad_config_file_exits_1(tmp_path):
    rc, _, term = run_serve(tmp_path, {"model": {"name": "x", "served_name": "x", "colour": "blue"}})
    assert rc == 1
    assert "invalid server config" in term and "colour" in term


def test_missing_model_offline_exits_1(tmp_path):
    rc, _, term = run_serve(tmp_path, {"model": {"name": "nobody/no-such-reranker", "served_name": "x"}})
    assert rc == 1
    assert "nobody/no-such-reranker" in term and "HF_HUB_OFFLINE" in term


def test_download_dir_without_marker_exits_1(tmp_path):
    config = {
        "model": {"name": "BAAI/bge-reranker-v2-m3", "served_name": "x", "download_dir": str(tmp_path / "m")}
    }
    rc, _, term = run_serve(tmp_path, config)
    assert rc == 1
    assert "not downloaded" in term and str(tmp_path / "m") in term


@pytest.mark.vllm
def test_vllm_engine_failure_is_reported(tmp_path, tiny_bert_path):
    # A model directory whose weights are missing: passes our checks, fails inside vLLM's engine start.
    broken = tmp_path / "broken-ce"
    broken.mkdir()
    for name in (
        "config.json",
        "vocab.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ):
        if (tiny_bert_path / name).exists():
            (broken / name).write_bytes((tiny_bert_path / name).read_bytes())
    rc, output, term = run_serve(
        tmp_path, {"model": {"name": str(broken), "served_name": "x"}, "engine": CPU_ENGINE}
    )
    assert rc == 1
    assert "vLLM could not start" in term and str(broken) in term
    assert "Traceback" not in term


# --- readiness -----------------------------------------------------------------------------------------------


class FakeScorer:
    served_name, family, max_model_len = "m", "cross-encoder", 128

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores

    async def rerank(self, query, documents, *, instruction=None, use_activation=True):
        return ScoreResult(scores=self.scores, prompt_tokens=10, truncated_documents=0, truncated_query=False)


@pytest.mark.parametrize(
    ("scores", "ranking", "problem"),
    [
        ([0.9, 0.1, 0.2], True, None),
        ([0.1, 0.9, 0.2], True, "does not rank first"),
        ([0.1, 0.9, 0.2], False, None),  # random test models: order is not checked
        ([0.5, 0.5, 0.5], False, "all scores are equal"),
        ([0.9, float("nan"), 0.1], False, "non-finite"),
        ([0.9], False, "expected 3 scores"),
    ],
)
def test_golden_check(scores, ranking, problem):
    outcome = check_golden(scores, ranking=ranking)
    assert outcome is None if problem is None else problem in outcome


async def test_ready_goes_503_then_200_after_the_golden_rerank():
    readiness = Readiness(ranking=True)
    app = FastAPI()
    mount_ready(app, readiness)
    client = TestClient(app)
    before = client.get("/ready")
    assert before.status_code == 503 and before.json()["status"] == "not ready"
    await readiness.run(FakeScorer([0.9, 0.1, 0.2]))
    after = client.get("/ready")
    assert after.status_code == 200
    assert after.json()["golden_scores"] == [0.9, 0.1, 0.2] and after.json()["family"] == "cross-encoder"


async def test_ready_turns_503_when_the_engine_dies():
    alive = {"engine": True}
    readiness = Readiness(ranking=True, engine_alive=lambda: alive["engine"])
    await readiness.run(FakeScorer([0.9, 0.1, 0.2]))
    assert readiness.response()[0] == 200
    alive["engine"] = False
    status, body = readiness.response()
    assert status == 503 and "engine has died" in body["reason"]


async def test_ready_stays_503_when_the_golden_rerank_fails():
    readiness = Readiness(ranking=True)
    await readiness.run(FakeScorer([0.1, 0.9, 0.2]))
    status, body = readiness.response()
    assert status == 503 and "does not rank first" in body["reason"]


def test_strip_vllm_routes_keeps_only_probes_and_metrics():
    app = FastAPI()
    for path in (
        "/health",
        "/ping",
        "/version",
        "/load",
        "/rerank",
        "/v1/rerank",
        "/v2/rerank",
        "/score",
        "/v1/score",
        "/v1/models",
        "/pooling",
        "/classify",
        "/tokenize",
        "/detokenize",
        "/invocations",
    ):
        app.add_api_route(path, lambda: None, methods=["POST"])
    removed = strip_vllm_routes(app)
    left = {getattr(r, "path", None) for r in app.router.routes}
    assert {"/health", "/ping", "/version", "/load"} <= left
    for path in (
        "/rerank",
        "/v1/score",
        "/v1/models",
        "/pooling",
        "/tokenize",
        "/detokenize",
        "/invocations",
    ):
        assert path in removed and path not in left


@pytest.mark.vllm
def test_live_server_is_ready_and_has_no_vllm_scoring_routes(ce_server):
    ready = requests.get(ce_server.url + "/ready", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["family"] == "cross-encoder" and len(ready.json()["golden_scores"]) == len(
        GOLDEN_DOCUMENTS
    )
    assert requests.get(ce_server.url + "/health", timeout=10).status_code == 200
    for path in ("/tokenize", "/detokenize", "/pooling", "/classify", "/invocations"):
        assert requests.post(ce_server.url + path, json={"prompt": "x"}, timeout=10).status_code == 404, path


# --- CPU tuning (pure decisions) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu_max", "limit"), [("max 100000", None), ("200000 100000", 2.0), ("150000 100000", 1.5), ("", None)]
)
def test_cgroup_cpu_limit(cpu_max, limit):
    assert cpu.cgroup_cpu_limit(cpu_max) == limit


@pytest.mark.parametrize(
    ("affinity", "limit", "cores", "text"),
    [
        ({0, 1}, None, [0, 1], "0-1"),
        ({0, 1, 2, 3, 4, 5, 6, 7}, 2.5, [0, 1, 2], "0-2"),
        ({4, 5, 6, 9}, None, [4, 5, 6, 9], "4-6,9"),
        ({3}, 0.5, [3], "3"),
    ],
)
def test_usable_cpus_and_bind_string(affinity, limit, cores, text):
    assert cpu.usable_cpus(affinity, limit) == cores
    assert cpu.format_cpu_list(cores) == text


def test_bf16_chosen_only_for_auto_on_cpus_where_it_measures_faster():
    flags = "processor : 0\nflags : fpu avx512f avx512_bf16 avx512_vnni\n"

    def never_probed() -> float:
        raise AssertionError("the probe runs only for auto on a bfloat16-capable CPU")

    assert cpu.choose_dtype("auto", flags, lambda: 8.0) == "bfloat16"  # AMD EPYC-like: bf16 10x faster
    assert cpu.choose_dtype("auto", flags, lambda: 0.55) == "float32"  # the flag, but bf16 at half speed
    assert cpu.choose_dtype("float32", flags, never_probed) == "float32"
    assert cpu.choose_dtype("auto", "flags : fpu avx2\n", never_probed) == "auto"


def test_bf16_probe_measures_once_and_hands_the_result_to_the_reexec(monkeypatch):
    monkeypatch.delenv(cpu.BF16_SPEEDUP_ENV, raising=False)
    speedup = cpu.measure_bf16_speedup(size=256, repeats=2)
    assert math.isfinite(speedup) and speedup > 0
    assert float(os.environ[cpu.BF16_SPEEDUP_ENV]) == pytest.approx(speedup, abs=1e-3)
    monkeypatch.setenv(cpu.BF16_SPEEDUP_ENV, "3.5")
    assert cpu.measure_bf16_speedup() == 3.5


def test_tuned_env_on_cpu(tmp_path):
    lib = tmp_path / "libiomp5.so"
    lib.write_bytes(b"")
    engine = EngineConfig(device="cpu")
    env = cpu.tuned_env(engine, {}, cores=[0, 1], libiomp=cpu.find_libiomp([tmp_path]), decoder=False)
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_KVCACHE_SPACE": "1", "LD_PRELOAD": str(lib)}
    # Explicit settings win; an existing preload is kept and not duplicated.
    engine = EngineConfig(device="cpu", cpu_threads_bind="2-3", cpu_kvcache_space_gib=6)
    env = cpu.tuned_env(engine, {"LD_PRELOAD": f"{lib}:x.so"}, cores=[0, 1], libiomp=lib, decoder=True)
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "2-3", "VLLM_CPU_KVCACHE_SPACE": "6"}
    assert cpu.tuned_env(EngineConfig(device="gpu"), {}, cores=[0], libiomp=lib, decoder=False) == {}


def test_intel_openmp_is_installed_where_cpu_looks():
    assert cpu.find_libiomp(cpu.default_lib_dirs()) is not None


# --- the model download (the online path needs the hub, which this machine cannot reach) -----------------------


def _download_cfg(tmp_path: Path, revision: str | None = "abc123") -> ServerConfig:
    return ServerConfig.model_validate(
        {
            "model": {
                "name": "BAAI/bge-reranker-v2-m3",
                "served_name": "x",
                "revision": revision,
                "download_dir": str(tmp_path / "cache"),
            }
        }
    )


def test_complete_download_is_reused_without_network(tmp_path, monkeypatch):
    cfg = _download_cfg(tmp_path)
    (tmp_path / "cache").mkdir()
    download.write_marker(tmp_path / "cache", cfg.model.name, cfg.model.revision)

    def no_network(*args, **kwargs):
        raise AssertionError("snapshot_download must not be called for a complete directory")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_network)
    assert download.download(cfg) == tmp_path / "cache"


def test_marker_records_model_and_revision(tmp_path):
    d = tmp_path / "cache"
    d.mkdir()
    marker = download.write_marker(d, "BAAI/bge-reranker-v2-m3", "abc123")
    assert marker.name == ".reranker-complete"
    assert json.loads(marker.read_text())["model"] == "BAAI/bge-reranker-v2-m3"
    assert download.is_complete(d, "BAAI/bge-reranker-v2-m3", "abc123")
    assert not download.is_complete(d, "BAAI/bge-reranker-v2-m3", "def456")  # a new revision is fetched again
    assert not download.is_complete(d, "BAAI/bge-reranker-base", "abc123")
    assert not download.is_complete(tmp_path / "empty", "BAAI/bge-reranker-v2-m3", "abc123")


def test_download_writes_marker_only_after_the_files(tmp_path, monkeypatch):
    cfg = _download_cfg(tmp_path, revision=None)
    seen = {}

    def fake_snapshot(repo_id, revision, local_dir, token, ignore_patterns):
        seen.update(repo_id=repo_id, marker_during=(Path(local_dir) / download.MARKER).exists())
        (Path(local_dir) / "config.json").write_text("{}")
        return local_dir

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert download.download(cfg) == tmp_path / "cache"
    assert seen == {"repo_id": "BAAI/bge-reranker-v2-m3", "marker_during": False}
    assert download.is_complete(tmp_path / "cache", cfg.model.name, None)


def test_download_cli_offline_complete_exits_0(tmp_path):
    cfg = _download_cfg(tmp_path)
    (tmp_path / "cache").mkdir()
    download.write_marker(tmp_path / "cache", cfg.model.name, cfg.model.revision)
    path = tmp_path / "server.yaml"
    path.write_text(cfg.to_yaml())
    proc = subprocess.run(
        [sys.executable, "-m", "reranker_server", "download", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "is complete in" in proc.stdout
