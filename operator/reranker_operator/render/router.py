"""The router in front of the server pods: its ConfigMap, Deployment and PodDisruptionBudget, and the headless
Service through which it finds the ready server pods.

The router learns the replicas from the DNS name of the headless Service `<name>-pods` (one record per ready
pod), so it needs no Kubernetes API access: no ServiceAccount token, no RBAC. The one exception is scale to zero
(`autoscaling.minReplicas: 0`): the router then scales the server Deployment through its scale subresource, with
the ServiceAccount `<name>-router` and a Role that allows exactly that on exactly that Deployment. Clients keep
the Service `<name>` (service.py points it at the router), so `status.clients` does not change when the router
is switched on or off.
"""

from __future__ import annotations

from typing import Any

from reranker_router.config import (
    DEFAULT_CONFIG_PATH,
    AuthConfig,
    DiscoveryConfig,
    LimitsConfig,
    NoBackendConfig,
    RouterConfig,
    ScaleFromZeroConfig,
)

from reranker_operator.api import RerankerDeploymentSpec, RouterResourcesSpec
from reranker_operator.render import paths
from reranker_operator.render.labels import (
    ROUTER_COMPONENT,
    SERVER_COMPONENT,
    common_labels,
    router_selector_labels,
    selector_labels,
)
from reranker_operator.render.meta import object_meta

CONFIG_DIR, CONFIG_KEY = DEFAULT_CONFIG_PATH.rsplit("/", 1)
CONFIG_HASH_ANNOTATION = "reranker.dev/router-config-hash"
# The router image's user (router/Dockerfile); any non-root uid works, the root filesystem is read-only.
RUN_AS_USER = 65532
# Beyond the router's own drain: the kubelet's SIGKILL must not cut the last replies.
SHUTDOWN_GRACE_SECONDS = 10
# What the router may do to the server Deployment's scale subresource (read the count, set it 0 <-> 1). The
# operator must hold these itself to grant them (Kubernetes' RBAC escalation check), so its chart does.
ROUTER_SCALE_VERBS = ("get", "update", "patch")


def router_image(spec: RerankerDeploymentSpec) -> str:
    """The router image: explicit, or the operator-wide default."""
    return spec.router_or_default.image or paths.ROUTER_IMAGE


def pods_service_host(name: str, namespace: str) -> str:
    """DNS name of the headless Service; relative to the cluster domain, so it works whatever the domain is."""
    return f"{paths.pods_service_name(name)}.{namespace}.svc"


def build_router_config(name: str, namespace: str, spec: RerankerDeploymentSpec) -> RouterConfig:
    """The router's router.yaml: discovery through the headless Service, the spec's limits, shards and API key."""
    limits = spec.limits_or_default
    router = spec.router_or_default
    settings: dict[str, Any] = {
        "port": paths.CONTAINER_PORT,
        # Several routers each see only their own load: the lighter of two random replicas spreads better
        # than all of them picking the same "least loaded" one.
        "balancing": "power-of-two" if router.replicas > 1 else "least-loaded",
        "discovery": DiscoveryConfig(service=pods_service_host(name, namespace), port=paths.CONTAINER_PORT),
        "limits": LimitsConfig(
            max_documents=limits.max_documents, max_request_bytes=limits.max_request_bytes
        ),
    }
    if router.shard_documents is not None:
        settings["shard_documents"] = router.shard_documents
    if spec.auth is not None and spec.auth.api_key_secret_ref is not None:
        settings["auth"] = AuthConfig(api_key_file=paths.API_KEY_FILE)
    if (zero := spec.scale_to_zero) is not None:
        settings["scale_from_zero"] = ScaleFromZeroConfig(
            namespace=namespace, deployment=name, idle_seconds=zero.idle_seconds
        )
        settings["no_backend"] = NoBackendConfig(wait_seconds=zero.hold_seconds)
    return RouterConfig(**settings)


def render_router_config(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """ConfigMap `<name>-router` holding router.yaml, or None without a router."""
    if not spec.router_enabled:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(paths.router_name(name), namespace, name, ROUTER_COMPONENT, uid=uid),
        "data": {CONFIG_KEY: build_router_config(name, namespace, spec).to_yaml()},
    }


def render_pods_service(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """The headless Service `<name>-pods` over the server pods (ready ones only in DNS), or None."""
    if not spec.router_enabled:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(paths.pods_service_name(name), namespace, name, SERVER_COMPONENT, uid=uid),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(name),
            "ports": [
                {"name": "http", "port": paths.CONTAINER_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def _volumes(name: str, spec: RerankerDeploymentSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {
                "name": paths.router_name(name),
                "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}],
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if (api_key := paths.api_key_volume(spec)) is not None:
        volumes.append(api_key[0])
        mounts.append(api_key[1])
    return volumes, mounts


def _probe(path: str, *, failure_threshold: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": failure_threshold,
    }


def _spread(name: str) -> list[dict[str, Any]]:
    # ScheduleAnyway: spread when the cluster can, but never leave a router Pending on a one-node cluster.
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": router_selector_labels(name)},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]


def render_router_deployment(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """The router Deployment `<name>-router` (no GPU, non-root, read-only root), or None without a router."""
    if not spec.router_enabled:
        return None
    router = spec.router_or_default
    resources = router.resources or RouterResourcesSpec()
    config = build_router_config(name, namespace, spec)
    volumes, mounts = _volumes(name, spec)
    engine = spec.engine_or_default
    container: dict[str, Any] = {
        "name": "router",
        "image": router_image(spec),
        "imagePullPolicy": engine.image_pull_policy,
        "command": ["reranker-router", "serve", "--config", DEFAULT_CONFIG_PATH],
        "ports": [{"name": "http", "containerPort": config.port, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": resources.cpu, "memory": resources.memory},
            "limits": {"memory": resources.memory},
        },
        "volumeMounts": mounts,
        # /ready turns 503 as soon as the router drains (SIGTERM), so the Service stops sending it new clients.
        "readinessProbe": _probe("/ready", failure_threshold=2),
        "livenessProbe": _probe("/health", failure_threshold=6),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {}
    if _scales_from_zero(spec):
        # The only API call a router makes: scaling the server Deployment 0 <-> 1 (render_router_role).
        pod_spec.update({"serviceAccountName": paths.router_name(name), "automountServiceAccountToken": True})
    else:
        # Discovery is DNS: the router never calls the Kubernetes API.
        pod_spec["automountServiceAccountToken"] = False
    pod_spec.update(
        {
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_USER,
                "runAsGroup": RUN_AS_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationGracePeriodSeconds": int(config.drain_seconds) + SHUTDOWN_GRACE_SECONDS,
            "topologySpreadConstraints": _spread(name),
            "containers": [container],
            "volumes": volumes,
        }
    )
    if engine.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": secret} for secret in engine.image_pull_secrets]
    if spec.scheduling_or_default.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling_or_default.priority_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(paths.router_name(name), namespace, name, ROUTER_COMPONENT, uid=uid),
        "spec": {
            "replicas": router.replicas,
            "revisionHistoryLimit": spec.rollout_or_default.revision_history_limit,
            "selector": {"matchLabels": router_selector_labels(name)},
            # The router starts in a second: never drop below the wanted count during a rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": common_labels(name, ROUTER_COMPONENT),
                    "annotations": {
                        CONFIG_HASH_ANNOTATION: paths.short_hash(config.to_yaml()),
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(config.port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def render_router_pdb(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """PodDisruptionBudget `<name>-router` (one router pod at a time), or None for a single router."""
    if not spec.router_enabled or spec.router_or_default.replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(paths.router_name(name), namespace, name, ROUTER_COMPONENT, uid=uid),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": router_selector_labels(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _scales_from_zero(spec: RerankerDeploymentSpec) -> bool:
    """Whether the routers scale the server Deployment (and so get a ServiceAccount, Role and RoleBinding)."""
    return spec.router_enabled and spec.scale_to_zero is not None


def render_router_service_account(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """ServiceAccount `<name>-router` for scale to zero, or None (the routers then run with no token)."""
    if not _scales_from_zero(spec):
        return None
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(paths.router_name(name), namespace, name, ROUTER_COMPONENT, uid=uid),
        # The pods ask for the token (automountServiceAccountToken on the pod wins); nothing else uses it.
        "automountServiceAccountToken": False,
    }


def render_router_role(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """Role `<name>-router`: read and write the scale subresource of the server Deployment `<name>` and
    nothing else (the Deployment itself, its pods and every other object stay out of reach), or None."""
    if not _scales_from_zero(spec):
        return None
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": object_meta(paths.router_name(name), namespace, name, ROUTER_COMPONENT, uid=uid),
        "rules": [
            {
                "apiGroups": ["apps"],
                "resources": ["deployments/scale"],
                "resourceNames": [name],
                "verbs": list(ROUTER_SCALE_VERBS),
            }
        ],
    }


def render_router_role_binding(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """RoleBinding `<name>-router` of Role `<name>-router` to ServiceAccount `<name>-router`, or None."""
    if not _scales_from_zero(spec):
        return None
    router = paths.router_name(name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": object_meta(router, namespace, name, ROUTER_COMPONENT, uid=uid),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": router},
        "subjects": [{"kind": "ServiceAccount", "name": router, "namespace": namespace}],
    }
