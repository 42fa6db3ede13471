"""Fixed paths and names inside server pods, shared by the Deployment, the download Job and ServerConfig."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from reranker_server.config import DEFAULT_CONFIG_PATH, DEFAULT_PORT

from reranker_operator import REGISTRY, __version__

CONFIG_PATH = DEFAULT_CONFIG_PATH
CONFIG_DIR = CONFIG_PATH.rsplit("/", 1)[0]
CONFIG_KEY = CONFIG_PATH.rsplit("/", 1)[1]
CONTAINER_PORT = DEFAULT_PORT
API_KEY_DIR = "/var/run/secrets/reranker"
API_KEY_FILE = f"{API_KEY_DIR}/api-key"
# HOME is an emptyDir (the root filesystem is read-only): vLLM, torch.compile and Triton write caches there.
HOME_DIR = "/home/reranker"
MODELS_DIR = "/models"
# One uid for every container: the image's user, and the owner (fsGroup) of the cache PVC.
RUN_AS_USER = 1000

# Published image names (release.yaml pushes them) and the operator-wide defaults for pods without
# spec.engine.image: the operator chart sets the environment variables (values serverImage.gpu/cpu), so one
# `helm install` chooses the server image of every RerankerDeployment; the built-in default is this release's.
GPU_IMAGE_NAME = f"{REGISTRY}/reranker-server"
CPU_IMAGE_NAME = f"{REGISTRY}/reranker-server-cpu"
GPU_IMAGE_ENV = "RERANKER_SERVER_IMAGE_GPU"
CPU_IMAGE_ENV = "RERANKER_SERVER_IMAGE_CPU"
GPU_IMAGE = os.environ.get(GPU_IMAGE_ENV) or f"{GPU_IMAGE_NAME}:{__version__}"
CPU_IMAGE = os.environ.get(CPU_IMAGE_ENV) or f"{CPU_IMAGE_NAME}:{__version__}"
# The same for the router pods (values routerImage).
ROUTER_IMAGE_NAME = f"{REGISTRY}/reranker-router"
ROUTER_IMAGE_ENV = "RERANKER_ROUTER_IMAGE"
ROUTER_IMAGE = os.environ.get(ROUTER_IMAGE_ENV) or f"{ROUTER_IMAGE_NAME}:{__version__}"


def config_name(name: str) -> str:
    return f"{name}-config"


def clients_name(name: str) -> str:
    return f"{name}-clients"


def cache_pvc_name(name: str) -> str:
    return f"{name}-model-cache"


def download_job_name(name: str) -> str:
    return f"{name}-download"


def router_name(name: str) -> str:
    """The router's Deployment, PodDisruptionBudget and ConfigMap."""
    return f"{name}-router"


def pods_service_name(name: str) -> str:
    """The headless Service whose DNS name lists the ready server pods (the router's discovery)."""
    return f"{name}-pods"


def short_hash(text: str) -> str:
    """A stable 16-hex-digit digest used in annotations and marker names."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def api_key_volume(spec: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The API-key Secret volume and its read-only mount (server and router pods alike), or None without a key."""
    if spec.auth is None or spec.auth.api_key_secret_ref is None:
        return None
    ref = spec.auth.api_key_secret_ref
    volume = {
        "name": "api-key",
        "secret": {
            "secretName": ref.name,
            "items": [{"key": ref.key, "path": API_KEY_FILE.rsplit("/", 1)[1]}],
            "defaultMode": 0o440,
        },
    }
    return volume, {"name": "api-key", "mountPath": API_KEY_DIR, "readOnly": True}
