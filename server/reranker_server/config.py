"""The configuration contract between the operator and the pod's server.

The operator renders a `ServerConfig` as YAML into a ConfigMap, mounts it at `DEFAULT_CONFIG_PATH` and starts
the container with `reranker-server serve --config DEFAULT_CONFIG_PATH`. Outside Kubernetes the same fields come
from the command line (`reranker-server serve MODEL --port ...`, see `build_config`); flags override the file. The server is the only place that turns
these fields into vLLM flags (see `profiles.py`); the operator never writes a vLLM flag itself.

This module must stay importable without vLLM or torch: the operator imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CONFIG_PATH = "/etc/reranker/server.yaml"
DEFAULT_PORT = 8000
# Where Kubernetes reads a container's termination message (the operator shows it in `Degraded`).
TERMINATION_LOG = "/dev/termination-log"
# Kubernetes' default terminationGracePeriodSeconds: the budget a pod has when nobody set one.
KUBERNETES_DEFAULT_GRACE_SECONDS = 30
# After the drain: stopping vLLM's engine process and exiting, with room to spare before the kubelet's SIGKILL.
SHUTDOWN_MARGIN_SECONDS = 5


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EngineConfig(_Strict):
    """vLLM engine knobs, passed through by the operator from `spec.engine`."""

    device: Literal["gpu", "cpu"] = "gpu"
    tensor_parallel_size: int = Field(1, ge=1, description="= spec.gpusPerPod on GPU")
    dtype: str = "auto"
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_num_seqs: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    enforce_eager: bool = False
    # CPU only: KV cache in GiB (vLLM otherwise sizes it from the host, not the pod's cgroup limit).
    cpu_kvcache_space_gib: int | None = Field(None, ge=1)
    # CPU only: e.g. "0-3"; None lets the server choose from the cores it may use.
    cpu_threads_bind: str | None = None
    extra_args: list[str] = Field(default_factory=list, description="appended verbatim to vLLM's arguments")


class ModelConfig(_Strict):
    """Which model to serve and how clients name it."""

    name: str = Field(..., description="hub id (e.g. Qwen/Qwen3-Reranker-0.6B) or a local directory")
    served_name: str = Field(
        ..., description="the `model` clients send; the model's own name is accepted too"
    )
    family: str = Field("auto", description="a family from reranker_server.profiles, or auto")
    revision: str | None = None
    max_model_len: int | None = Field(None, ge=16)
    instruction: str | None = Field(None, description="default instruction for instruction-aware rerankers")
    trust_remote_code: bool = False
    # Where the model lives locally when downloaded by `reranker-server download` (the operator's cache Job).
    download_dir: str | None = None
    # What `/ready` demands of the golden rerank run at startup: "ranking" (real models: the relevant document
    # ranks first) or "finite" (random-weight test models: finite scores that are not all equal).
    readiness_check: Literal["ranking", "finite"] = "ranking"


class LimitsConfig(_Strict):
    """Request limits enforced before anything reaches the engine."""

    max_documents: int = Field(1000, ge=1, description="more documents in one request -> 413")
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)


class AuthConfig(_Strict):
    """API key guarding every scoring route (health, readiness and metrics stay open)."""

    api_key_file: str | None = Field(None, description="file holding one key per line (a mounted Secret)")


class ShutdownConfig(_Strict):
    """Graceful termination: on SIGTERM the server finishes what it accepted, within a deadline."""

    drain_seconds: int = Field(
        KUBERNETES_DEFAULT_GRACE_SECONDS - SHUTDOWN_MARGIN_SECONDS,
        ge=0,
        description=(
            "after SIGTERM, how long accepted requests may still run; at the deadline the rest get 503 with "
            "Retry-After. The default fits Kubernetes' default 30 s grace period; the operator sets it from "
            "spec.rollout.drainSeconds"
        ),
    )


class ServerConfig(_Strict):
    """Everything one reranker pod needs to know."""

    model: ModelConfig
    engine: EngineConfig = Field(default_factory=EngineConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig)
    host: str = "0.0.0.0"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)

    def to_yaml(self) -> str:
        """Serialise exactly as the operator writes it into the ConfigMap."""
        # libyaml's emitter where installed: same text, a tenth of the pure-Python emitter's time (a tenth of the
        # operator's CPU while converging many new objects).
        return yaml.dump(
            self.model_dump(mode="json", exclude_none=True),
            Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
            sort_keys=True,
        )

    @classmethod
    def from_yaml(cls, text: str) -> ServerConfig:
        return cls.model_validate(yaml.safe_load(text) or {})

    @classmethod
    def load(cls, path: str | Path) -> ServerConfig:
        return cls.from_yaml(Path(path).read_text())


def build_config(path: str | Path | None, overrides: Mapping[str, Any]) -> ServerConfig:
    """The config file at `path` (none: only `overrides`), with `overrides` (same nesting, `None` = unset) on top.

    Without a served name anywhere, clients name the model as they would with `vllm serve`: by `model.name`.
    """
    data: Any = {}
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top, got {type(data).__name__}")
    merged = _merge(data, overrides)
    model = merged.get("model")
    if isinstance(model, dict) and model.get("name") and not model.get("served_name"):
        model["served_name"] = model["name"]
    return ServerConfig.model_validate(merged)


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            inner = merged.get(key)
            merged[key] = _merge(inner if isinstance(inner, dict) else {}, value)
        elif value is not None:
            merged[key] = value
    return merged
