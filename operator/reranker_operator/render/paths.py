"""Fixed paths and names inside server pods, shared by the Deployment, the download Job and ServerConfig."""

from __future__ import annotations

import hashlib

from reranker_server.config import DEFAULT_CONFIG_PATH, DEFAULT_PORT

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

GPU_IMAGE = "ghcr.io/reranker-operator/reranker-server:0.1.0"
CPU_IMAGE = "ghcr.io/reranker-operator/reranker-server-cpu:0.1.0"


def config_name(name: str) -> str:
    return f"{name}-config"


def clients_name(name: str) -> str:
    return f"{name}-clients"


def cache_pvc_name(name: str) -> str:
    return f"{name}-model-cache"


def download_job_name(name: str) -> str:
    return f"{name}-download"


def short_hash(text: str) -> str:
    """A stable 16-hex-digit digest used in annotations and marker names."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
