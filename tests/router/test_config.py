"""The router's config contract: YAML in, validated model out, command-line flags on top."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError
from reranker_router.cli import build_config, main
from reranker_router.config import RouterConfig


def test_yaml_round_trip_with_discovery() -> None:
    text = """
port: 9000
discovery: {service: rr-pods.ns.svc.cluster.local, port: 8000, interval_seconds: 3}
shard_documents: 64
admission: {max_pending_pairs_per_replica: 500}
auth: {api_key_file: /etc/reranker-router/keys/api-keys}
"""
    config = RouterConfig.from_yaml(text)
    assert config.discovery is not None and config.discovery.service == "rr-pods.ns.svc.cluster.local"
    assert config.shard_documents == 64 and config.admission.max_pending_pairs_per_replica == 500
    assert RouterConfig.from_yaml(config.to_yaml()) == config


def test_unknown_fields_and_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError, match="shard_document"):
        RouterConfig.from_yaml("shard_document: 10")
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        RouterConfig.from_yaml("shard_documents: 0")


def test_backends_are_normalised() -> None:
    config = RouterConfig(backends=["127.0.0.1:8001", "http://a:8000/", " "])
    assert config.backends == ["http://127.0.0.1:8001", "http://a:8000"]


def test_flags_override_the_file(tmp_path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text("port: 9000\nbackends: [http://a:1]\nshard_documents: 64\n")
    args = argparse.Namespace(
        config=str(path), host=None, port=9100, backend=["http://b:2"], shard_documents=None, api_key_file="k"
    )
    config = build_config(args)
    assert (config.port, config.backends, config.shard_documents) == (9100, ["http://b:2"], 64)
    assert config.auth.api_key_file == "k"


def test_serve_without_backends_says_what_is_missing(capsys) -> None:
    assert main(["serve", "--port", "9000"]) == 2
    assert "no backends" in capsys.readouterr().err


def test_scale_from_zero_without_discovery_is_refused(tmp_path, capsys) -> None:
    path = tmp_path / "router.yaml"
    path.write_text("backends: [http://a:1]\nscale_from_zero: {namespace: ns, deployment: rr}\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "scale_from_zero needs 'discovery'" in capsys.readouterr().err
