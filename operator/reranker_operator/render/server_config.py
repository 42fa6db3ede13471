"""Turn the spec into the pod's `ServerConfig` (the operator → pod contract) and its ConfigMap."""

from __future__ import annotations

import re

from reranker_server.config import (
    AuthConfig,
    EngineConfig,
    LimitsConfig,
    ModelConfig,
    ServerConfig,
    ShutdownConfig,
)

from reranker_operator.api import RerankerDeploymentSpec
from reranker_operator.render import paths
from reranker_operator.render.cache import cache_dir, uses_cache


def served_name(spec: RerankerDeploymentSpec) -> str:
    """The model name clients send: explicit, or derived from the model name and containing "rerank".

    RAGFlow's provider discovery only offers a model as a reranker when its name contains "rerank".
    """
    if spec.model.served_name:
        return spec.model.served_name
    base = spec.model.name.rstrip("/").rsplit("/", 1)[-1].lower()
    base = re.sub(r"[^a-z0-9._-]+", "-", base).strip("-.") or "model"
    return base if "rerank" in base else f"{base}-reranker"


def model_location(spec: RerankerDeploymentSpec) -> str:
    """What the server loads: the hub id, or the directory on the mounted pvc source."""
    pvc = spec.source.pvc
    if pvc is None:
        return spec.model.name
    relative = pvc.path if pvc.path is not None else spec.model.name
    return f"{paths.MODELS_DIR}/{relative.strip('/')}" if relative.strip("/") else paths.MODELS_DIR


def build_server_config(spec: RerankerDeploymentSpec) -> ServerConfig:
    """The ServerConfig every server pod (and the download Job) reads."""
    engine = spec.engine_or_default
    cpu = spec.device == "cpu"
    huggingface = spec.source.huggingface
    limits = spec.limits_or_default
    return ServerConfig(
        model=ModelConfig(
            name=model_location(spec),
            served_name=served_name(spec),
            family=spec.model.family,
            revision=huggingface.revision if huggingface is not None else None,
            max_model_len=spec.model.max_model_len,
            instruction=spec.model.instruction,
            trust_remote_code=spec.model.trust_remote_code,
            download_dir=cache_dir(spec) if uses_cache(spec) else None,
        ),
        engine=EngineConfig(
            device=spec.device,
            tensor_parallel_size=max(spec.gpus, 1),
            dtype=engine.dtype,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            max_num_seqs=engine.max_num_seqs,
            max_num_batched_tokens=engine.max_num_batched_tokens,
            enforce_eager=engine.enforce_eager,
            # Unset: the server picks the size for the model kind (it knows encoders need less than decoders).
            cpu_kvcache_space_gib=engine.cpu_kvcache_space_gib if cpu else None,
            cpu_threads_bind=engine.cpu_threads_bind if cpu else None,
            extra_args=list(engine.extra_args),
        ),
        limits=LimitsConfig(max_documents=limits.max_documents, max_request_bytes=limits.max_request_bytes),
        auth=AuthConfig(api_key_file=paths.API_KEY_FILE if _has_api_key(spec) else None),
        shutdown=ShutdownConfig(drain_seconds=spec.rollout_or_default.drain_seconds),
        port=paths.CONTAINER_PORT,
    )


def _has_api_key(spec: RerankerDeploymentSpec) -> bool:
    return spec.auth is not None and spec.auth.api_key_secret_ref is not None
