"""The two ConfigMaps: the pod's server.yaml and ready-to-use client settings."""

from __future__ import annotations

import yaml

from reranker_operator.api import (
    ClientSettings,
    DifySettings,
    LangchainSettings,
    RagflowSettings,
    RerankerDeploymentSpec,
)
from reranker_operator.render import paths
from reranker_operator.render.meta import object_meta
from reranker_operator.render.server_config import build_server_config, served_name


def render_server_config(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict:
    """ConfigMap `<name>-config` holding `server.yaml` (ServerConfig.to_yaml())."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(paths.config_name(name), namespace, name, "config", uid=uid),
        "data": {paths.CONFIG_KEY: build_server_config(spec).to_yaml()},
    }


def client_settings(name: str, namespace: str, spec: RerankerDeploymentSpec) -> ClientSettings:
    """How RAGFlow, Dify and LangChain reach this reranker from inside the cluster."""
    endpoint = f"http://{name}.{namespace}.svc:{spec.service_or_default.port}"
    model = served_name(spec)
    auth = spec.auth.api_key_secret_ref if spec.auth is not None else None
    return ClientSettings(
        endpoint=endpoint,
        model=model,
        rerank_url=f"{endpoint}/v1/rerank",
        api_key_secret_ref=auth,
        # RAGFlow 0.26+ appends /v1 to a VLLM base itself; older versions accept the root as well.
        ragflow=RagflowSettings(
            vllm_base_url=endpoint,
            openai_compatible_base_url=f"{endpoint}/v1",
            huggingface_base_url=endpoint,
            model_name=model,
        ),
        dify=DifySettings(endpoint_url=f"{endpoint}/v1", model_name=model),
        # cohere's ClientV2 posts to {base_url}/v2/rerank.
        langchain=LangchainSettings(base_url=endpoint, model=model),
    )


def render_client_config(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict:
    """ConfigMap `<name>-clients`: flat keys usable with envFrom, plus the whole settings as clients.yaml."""
    settings = client_settings(name, namespace, spec)
    data = {
        "RERANKER_ENDPOINT": settings.endpoint,
        "RERANKER_MODEL": settings.model,
        "RERANKER_RERANK_URL": settings.rerank_url,
        "RAGFLOW_VLLM_BASE_URL": settings.ragflow.vllm_base_url,
        "RAGFLOW_OPENAI_COMPATIBLE_BASE_URL": settings.ragflow.openai_compatible_base_url,
        "RAGFLOW_HUGGINGFACE_BASE_URL": settings.ragflow.huggingface_base_url,
        "DIFY_ENDPOINT_URL": settings.dify.endpoint_url,
        "LANGCHAIN_COHERE_BASE_URL": settings.langchain.base_url,
        "clients.yaml": yaml.safe_dump(
            settings.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False
        ),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(paths.clients_name(name), namespace, name, "clients", uid=uid),
        "data": data,
    }
