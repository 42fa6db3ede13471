"""Pure renderers: RerankerDeployment spec in, child manifests out (no I/O, no cluster).

`load_spec` validates, `render_all` produces every wanted child in a fixed order, `client_settings` is what
status reports. Children that are not wanted are absent: no HPA without autoscaling, no PDB for a fixed single
replica, no PVC or Job without a model cache, no NetworkPolicy unless enabled, no router objects with
`router.enabled: false` (the Service `<name>` then selects the server pods), no router ServiceAccount, Role or
RoleBinding unless the server scales to zero (`autoscaling.minReplicas: 0`).
"""

from __future__ import annotations

from reranker_operator.api import RerankerDeploymentSpec
from reranker_operator.render.configmaps import client_settings, render_client_config, render_server_config
from reranker_operator.render.labels import common_labels, selector_labels, selector_string
from reranker_operator.render.router import (
    build_router_config,
    render_pods_service,
    render_router_config,
    render_router_deployment,
    render_router_pdb,
    render_router_role,
    render_router_role_binding,
    render_router_service_account,
)
from reranker_operator.render.scaling import render_hpa, render_pdb
from reranker_operator.render.server_config import build_server_config, served_name
from reranker_operator.render.service import render_network_policy, render_pods_network_policy, render_service
from reranker_operator.render.validation import load_spec
from reranker_operator.render.workload import render_cache_pvc, render_deployment, render_download_job

__all__ = [
    "build_router_config",
    "build_server_config",
    "client_settings",
    "common_labels",
    "load_spec",
    "render_all",
    "render_cache_pvc",
    "render_client_config",
    "render_deployment",
    "render_download_job",
    "render_hpa",
    "render_network_policy",
    "render_pdb",
    "render_pods_network_policy",
    "render_pods_service",
    "render_router_config",
    "render_router_deployment",
    "render_router_pdb",
    "render_router_role",
    "render_router_role_binding",
    "render_router_service_account",
    "render_server_config",
    "render_service",
    "selector_labels",
    "selector_string",
    "served_name",
]

GENERATION_ANNOTATION = "reranker.dev/generation"

# Dependencies first (config and storage before the pods that mount them), so a plain in-order apply works.
_RENDERERS = (
    render_server_config,
    render_client_config,
    render_router_config,
    render_cache_pvc,
    render_download_job,
    render_router_service_account,
    render_router_role,
    render_router_role_binding,
    render_deployment,
    render_router_deployment,
    render_service,
    render_pods_service,
    render_hpa,
    render_pdb,
    render_router_pdb,
    render_network_policy,
    render_pods_network_policy,
)


def render_all(
    name: str,
    namespace: str,
    spec: RerankerDeploymentSpec,
    *,
    uid: str | None = None,
    generation: int | None = None,
) -> list[dict]:
    """Every desired child manifest of RerankerDeployment `name`, in a deterministic order.

    With `uid`, each child carries a controller ownerReference; with `generation`, the annotation
    `reranker.dev/generation` records which spec generation produced it.
    """
    manifests = []
    for render in _RENDERERS:
        manifest = render(name, namespace, spec, uid=uid)
        if manifest is None:
            continue
        if generation is not None:
            manifest["metadata"].setdefault("annotations", {})[GENERATION_ANNOTATION] = str(generation)
        manifests.append(manifest)
    return manifests
