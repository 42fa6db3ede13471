"""Pods: the server Deployment, the shared model-cache PVC and the Job that fills it."""

from __future__ import annotations

import json
import math
from typing import Any

from reranker_server.config import SHUTDOWN_MARGIN_SECONDS

from reranker_operator.api import RerankerDeploymentSpec
from reranker_operator.render import paths
from reranker_operator.render.cache import cache_key, cache_marker, per_pod_cache, shared_cache, uses_cache
from reranker_operator.render.labels import SERVER_COMPONENT, common_labels, selector_labels
from reranker_operator.render.meta import object_meta
from reranker_operator.render.quantity import canonical_quantity
from reranker_operator.render.server_config import build_server_config

CONFIG_HASH_ANNOTATION = "reranker.dev/config-hash"
CACHE_KEY_ANNOTATION = "reranker.dev/cache-key"
# Jobs' pod templates are immutable: the apply layer recreates the Job when this annotation changes.
TEMPLATE_HASH_ANNOTATION = "reranker.dev/template-hash"
GPU_RESOURCE = "nvidia.com/gpu"
PROBE_PERIOD_SECONDS = 10
# preStop pause: the Service's endpoints drop a terminating pod at once, but kube-proxy on every node (and
# ingress controllers) apply that a few seconds later; the server keeps serving normally until then.
ENDPOINT_PROPAGATION_SECONDS = 5
DOWNLOAD_BACKOFF_LIMIT = 4
DOWNLOAD_DEADLINE_SECONDS = 4 * 3600
DEFAULTS = {
    "gpu": {"cpu": "4", "memory": "24Gi"},
    "cpu": {"cpu": "2", "memory": "4Gi"},
}
SHM_GIB_PER_GPU = 2
HOME_HF_HOME = f"{paths.HOME_DIR}/.cache/huggingface"


def server_image(spec: RerankerDeploymentSpec) -> str:
    """The server image: explicit, or the GPU/CPU default for the device."""
    engine = spec.engine_or_default
    if engine.image:
        return engine.image
    return paths.CPU_IMAGE if spec.device == "cpu" else paths.GPU_IMAGE


def config_hash(spec: RerankerDeploymentSpec) -> str:
    """Digest of server.yaml; in the pod template so that a config change rolls the pods."""
    return paths.short_hash(build_server_config(spec).to_yaml())


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": paths.RUN_AS_USER,
        "runAsGroup": paths.RUN_AS_USER,
        "fsGroup": paths.RUN_AS_USER,
        # Re-chowning a large model volume on every start would delay it by minutes.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _hf_token_env(spec: RerankerDeploymentSpec) -> list[dict[str, Any]]:
    huggingface = spec.source.huggingface
    if huggingface is None or huggingface.token_secret_ref is None:
        return []
    ref = huggingface.token_secret_ref
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def _home_env() -> list[dict[str, Any]]:
    return [
        {"name": "HOME", "value": paths.HOME_DIR},
        {"name": "VLLM_CACHE_ROOT", "value": f"{paths.HOME_DIR}/.cache/vllm"},
        {"name": "TRITON_CACHE_DIR", "value": f"{paths.HOME_DIR}/.triton/cache"},
        # Remote-code modules are written even when the weights come from a read-only cache.
        {"name": "HF_MODULES_CACHE", "value": f"{paths.HOME_DIR}/.cache/huggingface/modules"},
    ]


def server_env(spec: RerankerDeploymentSpec) -> list[dict[str, Any]]:
    """Environment of the server container: writable caches, hub settings, then the user's entries."""
    env = [*_home_env(), {"name": "HF_HOME", "value": HOME_HF_HOME}]
    if uses_cache(spec) or spec.source.pvc is not None:
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    else:
        # Only a pod that downloads the model itself needs the hub token.
        env.extend(_hf_token_env(spec))
    env.extend(dict(entry) for entry in spec.engine_or_default.env)
    return env


def _resources(spec: RerankerDeploymentSpec) -> dict[str, Any]:
    wanted = spec.resources_or_default
    defaults = DEFAULTS[spec.device]
    cpu = wanted.cpu or defaults["cpu"]
    memory = wanted.memory or defaults["memory"]
    requests = {"cpu": cpu, "memory": memory}
    limits: dict[str, Any] = {"memory": memory}
    if spec.device == "cpu":
        # A CPU limit equal to the request gives Guaranteed QoS, which the engine's thread pinning relies on.
        limits["cpu"] = cpu
    else:
        limits[GPU_RESOURCE] = spec.gpus
    return resource_requirements(requests, limits)


def resource_requirements(requests: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
    """Container resources in the canonical form the API server stores (so reading back is no drift)."""
    return {
        "requests": {key: canonical_quantity(value, resource_list=True) for key, value in requests.items()},
        "limits": {key: canonical_quantity(value, resource_list=True) for key, value in limits.items()},
    }


def shared_memory_size(spec: RerankerDeploymentSpec) -> str:
    """Size of the memory-backed /dev/shm for tensor-parallel workers."""
    return canonical_quantity(spec.resources_or_default.shared_memory or f"{SHM_GIB_PER_GPU * spec.gpus}Gi")


def _server_volumes(
    name: str, spec: RerankerDeploymentSpec
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {
                "name": paths.config_name(name),
                "items": [{"key": paths.CONFIG_KEY, "path": paths.CONFIG_KEY}],
            },
        },
        {"name": "home", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": paths.CONFIG_DIR, "readOnly": True},
        {"name": "home", "mountPath": paths.HOME_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if (api_key := paths.api_key_volume(spec)) is not None:
        volumes.append(api_key[0])
        mounts.append(api_key[1])
    claim = None
    if shared_cache(spec):
        claim = paths.cache_pvc_name(name)
    elif spec.source.pvc is not None:
        claim = spec.source.pvc.claim_name
    if claim is not None:
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    elif per_pod_cache(spec):
        # Node-local scratch space: needs no StorageClass; sizeLimit evicts a pod that outgrows it.
        assert spec.model.cache is not None
        volumes.append(
            {"name": "models", "emptyDir": {"sizeLimit": canonical_quantity(spec.model.cache.size)}}
        )
    if claim is not None or per_pod_cache(spec):
        mounts.append({"name": "models", "mountPath": paths.MODELS_DIR, "readOnly": True})
    if spec.gpus > 1:
        volumes.append(
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shared_memory_size(spec)}}
        )
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def _probe(path: str, *, failure_threshold: int, period: int = PROBE_PERIOD_SECONDS) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def _wait_for_cache_container(name: str, spec: RerankerDeploymentSpec) -> dict[str, Any]:
    marker = cache_marker(spec)
    script = (
        f"until [ -f {marker} ]; do echo 'waiting for Job {paths.download_job_name(name)} to cache the model'; "
        "sleep 5; done"
    )
    requests: dict[str, Any] = {"cpu": "10m", "memory": "32Mi"}
    limits: dict[str, Any] = {"memory": "64Mi"}
    if spec.device == "cpu":
        # Limits equal to requests in every container keep the CPU pod's Guaranteed QoS (thread pinning).
        requests = {"cpu": "10m", "memory": "64Mi"}
        limits = dict(requests)
    return {
        "name": "wait-for-model-cache",
        "image": server_image(spec),
        "imagePullPolicy": spec.engine_or_default.image_pull_policy,
        "command": ["sh", "-c", script],
        "resources": resource_requirements(requests, limits),
        "securityContext": _container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "models", "mountPath": paths.MODELS_DIR, "readOnly": True}],
    }


def _download_container(spec: RerankerDeploymentSpec, *, init: bool) -> dict[str, Any]:
    """`reranker-server download`: the shared cache's Job container, or each pod's init container (per pod)."""
    requests: dict[str, Any] = {"cpu": "500m", "memory": "1Gi"}
    limits: dict[str, Any] = {"memory": "4Gi"}
    if init:
        assert spec.model.cache is not None
        if spec.device == "cpu":
            # Limits equal to requests in every container keep the CPU pod's Guaranteed QoS (thread pinning).
            requests = {"cpu": "500m", "memory": "2Gi"}
            limits = dict(requests)
        # The scheduler then places the pod on a node with room for the weights on its ephemeral storage.
        requests["ephemeral-storage"] = spec.model.cache.size
    resources = resource_requirements(requests, limits)
    return {
        "name": "download",
        "image": server_image(spec),
        "imagePullPolicy": spec.engine_or_default.image_pull_policy,
        # Idempotent: returns at once, offline, when the snapshot is already complete.
        "command": ["reranker-server", "download", "--config", paths.CONFIG_PATH],
        "env": [*_home_env(), {"name": "HF_HOME", "value": HOME_HF_HOME}, *_hf_token_env(spec)],
        "resources": resources,
        "securityContext": _container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "config", "mountPath": paths.CONFIG_DIR, "readOnly": True},
            {"name": "models", "mountPath": paths.MODELS_DIR},
            {"name": "home", "mountPath": paths.HOME_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _tolerations(spec: RerankerDeploymentSpec) -> list[dict[str, Any]]:
    tolerations = [dict(item) for item in spec.scheduling_or_default.tolerations]
    if spec.device == "gpu":
        gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        if gpu_toleration not in tolerations:
            tolerations.append(gpu_toleration)
    return tolerations


def _scheduling(spec: RerankerDeploymentSpec) -> dict[str, Any]:
    scheduling = spec.scheduling_or_default
    pod: dict[str, Any] = {}
    if scheduling.service_account_name:
        pod["serviceAccountName"] = scheduling.service_account_name
    if scheduling.node_selector:
        pod["nodeSelector"] = dict(scheduling.node_selector)
    tolerations = _tolerations(spec)
    if tolerations:
        pod["tolerations"] = tolerations
    if scheduling.affinity:
        pod["affinity"] = dict(scheduling.affinity)
    if scheduling.topology_spread_constraints:
        pod["topologySpreadConstraints"] = [dict(item) for item in scheduling.topology_spread_constraints]
    if scheduling.priority_class_name:
        pod["priorityClassName"] = scheduling.priority_class_name
    pull_secrets = spec.engine_or_default.image_pull_secrets
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": secret} for secret in pull_secrets]
    return pod


def termination_grace_seconds(spec: RerankerDeploymentSpec) -> int:
    """The pod's grace period: the preStop pause, then the server's drain, then stopping vLLM's engine.

    The kubelet counts the preStop hook inside the grace period and SIGKILLs at its end, so it must cover all
    three or the kill lands on requests the drain was still finishing.
    """
    return ENDPOINT_PROPAGATION_SECONDS + spec.rollout_or_default.drain_seconds + SHUTDOWN_MARGIN_SECONDS


def render_deployment(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict:
    """The server Deployment `<name>`."""
    rollout = spec.rollout_or_default
    engine = spec.engine_or_default
    volumes, mounts = _server_volumes(name, spec)
    container: dict[str, Any] = {
        "name": "server",
        "image": server_image(spec),
        "imagePullPolicy": engine.image_pull_policy,
        "command": ["reranker-server", "serve", "--config", paths.CONFIG_PATH],
        "ports": [{"name": "http", "containerPort": paths.CONTAINER_PORT, "protocol": "TCP"}],
        "env": server_env(spec),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        # Model loads can take many minutes; the startup probe holds off liveness until /health answers.
        "startupProbe": _probe(
            "/health", failure_threshold=math.ceil(rollout.startup_timeout_seconds / PROBE_PERIOD_SECONDS)
        ),
        # /ready only succeeds once the server has ranked a probe pair: traffic goes to pods that can serve.
        "readinessProbe": _probe("/ready", failure_threshold=3),
        "livenessProbe": _probe("/health", failure_threshold=4, period=15),
        "securityContext": _container_security_context(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(ENDPOINT_PROPAGATION_SECONDS)]}}}

    pod_annotations = {
        CONFIG_HASH_ANNOTATION: config_hash(spec),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(paths.CONTAINER_PORT),
        "prometheus.io/path": "/metrics",
        **spec.pod_annotations,
    }
    pod_spec: dict[str, Any] = {
        # The server never calls the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        **_scheduling(spec),
        "securityContext": _pod_security_context(),
        "terminationGracePeriodSeconds": termination_grace_seconds(spec),
    }
    if shared_cache(spec):
        pod_spec["initContainers"] = [_wait_for_cache_container(name, spec)]
    elif per_pod_cache(spec):
        pod_spec["initContainers"] = [_download_container(spec, init=True)]
    pod_spec["containers"] = [container]
    pod_spec["volumes"] = volumes

    if rollout.strategy == "Replace":
        rolling = {"maxSurge": 0, "maxUnavailable": 1}
    else:
        rolling = {"maxSurge": 1, "maxUnavailable": 0}
    deployment_spec: dict[str, Any] = {}
    if not spec.autoscaling_enabled:
        # With an HPA the replica count belongs to it; reconcile hands the field over (server-side apply).
        # Unset replicas: 1 here; reconcile keeps a running Deployment's count instead.
        deployment_spec["replicas"] = 1 if spec.replicas is None else spec.replicas
    deployment_spec.update(
        {
            "revisionHistoryLimit": rollout.revision_history_limit,
            "progressDeadlineSeconds": rollout.startup_timeout_seconds + 300,
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
            "template": {
                "metadata": {"labels": common_labels(name, SERVER_COMPONENT), "annotations": pod_annotations},
                "spec": pod_spec,
            },
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(name, namespace, name, SERVER_COMPONENT, uid=uid),
        "spec": deployment_spec,
    }


def render_cache_pvc(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """The model-cache PVC `<name>-model-cache`, or None without a cache.

    Owned by the RerankerDeployment, so deleting the RerankerDeployment deletes the cached weights too.
    """
    if not shared_cache(spec):
        return None
    cache = spec.model.cache
    assert cache is not None
    pvc_spec: dict[str, Any] = {
        "accessModes": [cache.access_mode or "ReadWriteMany"],
        "resources": {"requests": {"storage": canonical_quantity(cache.size, resource_list=True)}},
    }
    if cache.storage_class_name:
        pvc_spec["storageClassName"] = cache.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(paths.cache_pvc_name(name), namespace, name, "cache", uid=uid),
        "spec": pvc_spec,
    }


def render_download_job(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """The Job `<name>-download` that fills the cache PVC (`reranker-server download`), or None without a cache.

    The finished Job is kept (no TTL): it is the record from which ModelCached is observed, and deleting it
    would make the resync run the download again. The server writes its completion marker last and skips a
    complete snapshot, so a re-created Job costs little anyway.
    """
    if not shared_cache(spec):
        return None
    container = _download_container(spec, init=False)
    template = {
        # The snapshot is in the pod template so that a new model or revision replaces a finished Job.
        "metadata": {
            "labels": common_labels(name, "download"),
            "annotations": {CACHE_KEY_ANNOTATION: cache_key(spec)},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": _pod_security_context(),
            "containers": [container],
            "volumes": [
                {
                    "name": "config",
                    "configMap": {
                        "name": paths.config_name(name),
                        "items": [{"key": paths.CONFIG_KEY, "path": paths.CONFIG_KEY}],
                    },
                },
                {"name": "models", "persistentVolumeClaim": {"claimName": paths.cache_pvc_name(name)}},
                {"name": "home", "emptyDir": {}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }
    annotations = {
        CACHE_KEY_ANNOTATION: cache_key(spec),
        TEMPLATE_HASH_ANNOTATION: paths.short_hash(json.dumps(template, sort_keys=True)),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(
            paths.download_job_name(name), namespace, name, "download", uid=uid, annotations=annotations
        ),
        "spec": {
            "backoffLimit": DOWNLOAD_BACKOFF_LIMIT,
            "activeDeadlineSeconds": DOWNLOAD_DEADLINE_SECONDS,
            "template": template,
        },
    }
