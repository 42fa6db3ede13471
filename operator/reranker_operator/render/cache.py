"""The model cache: which snapshot a spec needs and where on the cache PVC it lives."""

from __future__ import annotations

from reranker_server.download import MARKER as DOWNLOAD_MARKER

from reranker_operator.api import RerankerDeploymentSpec
from reranker_operator.render import paths


def uses_cache(spec: RerankerDeploymentSpec) -> bool:
    """True when a download Job fills a cache PVC that the server pods read."""
    return spec.model.cache is not None and spec.source.huggingface is not None


def cache_key(spec: RerankerDeploymentSpec) -> str:
    """Identifies the cached snapshot (model + revision); names its directory on the cache PVC."""
    huggingface = spec.source.huggingface
    revision = huggingface.revision if huggingface is not None and huggingface.revision else "main"
    return paths.short_hash(f"{spec.model.name}@{revision}")


def cache_dir(spec: RerankerDeploymentSpec) -> str:
    """Where the download Job puts this model (ServerConfig.model.download_dir): one directory per snapshot."""
    return f"{paths.MODELS_DIR}/{cache_key(spec)}"


def cache_marker(spec: RerankerDeploymentSpec) -> str:
    """The file `reranker-server download` writes last; its existence means the model is complete."""
    return f"{cache_dir(spec)}/{DOWNLOAD_MARKER}"
