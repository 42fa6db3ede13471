"""The model cache: which shape (per pod or shared), which snapshot, and where on the volume it lives.

Per pod is the default because it works on any cluster (KServe's storage initializer does the same: an init
container downloads into an emptyDir). The shared ReadWriteMany PVC is opt-in, like KubeAI's cache profiles,
because most default StorageClasses (kind, GKE, EKS) cannot provision ReadWriteMany volumes.
"""

from __future__ import annotations

from reranker_server.download import MARKER as DOWNLOAD_MARKER

from reranker_operator.api import RerankerDeploymentSpec
from reranker_operator.render import paths


def uses_cache(spec: RerankerDeploymentSpec) -> bool:
    """True when the model is downloaded before the server starts (per pod or shared); the server is offline."""
    return spec.model.cache is not None and spec.source.huggingface is not None


def shared_cache(spec: RerankerDeploymentSpec) -> bool:
    """True when a download Job fills a cache PVC that every server pod reads."""
    return uses_cache(spec) and spec.model.cache is not None and spec.model.cache.shared


def per_pod_cache(spec: RerankerDeploymentSpec) -> bool:
    """True when each server pod's init container downloads into its own ephemeral volume."""
    return uses_cache(spec) and not shared_cache(spec)


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
