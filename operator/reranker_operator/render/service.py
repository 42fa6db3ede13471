"""Traffic: the Service and the optional NetworkPolicy."""

from __future__ import annotations

from typing import Any

from reranker_operator.api import RerankerDeploymentSpec
from reranker_operator.render import paths
from reranker_operator.render.labels import (
    ROUTER_COMPONENT,
    SERVER_COMPONENT,
    router_selector_labels,
    selector_labels,
)
from reranker_operator.render.meta import object_meta


def render_service(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict:
    """The Service `<name>` (port named http) clients use: the router pods, or the server pods without a router."""
    service = spec.service_or_default
    component = ROUTER_COMPONENT if spec.router_enabled else SERVER_COMPONENT
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(name, namespace, name, component, uid=uid, annotations=service.annotations),
        "spec": {
            "type": service.type,
            "selector": router_selector_labels(name) if spec.router_enabled else selector_labels(name),
            "ports": [{"name": "http", "port": service.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _network_policy(
    obj_name: str, owner: str, namespace: str, component: str, selector: dict, peer_lists, uid: str | None
) -> dict:
    port = [{"port": "http", "protocol": "TCP"}]
    ingress: list[dict[str, Any]] = [
        {"from": [dict(peer) for peer in peers], "ports": port} for peers in peer_lists if peers
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(obj_name, namespace, owner, component, uid=uid),
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def render_network_policy(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """The NetworkPolicy `<name>` on the pods clients reach (the router's, or the servers' without a router):
    ingress to the http port from the allowed and the scraping peers; or None.

    Metrics are served on the same port as the API, so the scraper needs the same port.
    """
    if not spec.network_policy_enabled:
        return None
    policy = spec.network_policy
    assert policy is not None
    if spec.router_enabled:
        component, selector = ROUTER_COMPONENT, router_selector_labels(name)
    else:
        component, selector = SERVER_COMPONENT, selector_labels(name)
    return _network_policy(
        name, name, namespace, component, selector, (policy.allow_from, policy.metrics_from), uid
    )


def render_pods_network_policy(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """With a router, the NetworkPolicy `<name>-pods` on the server pods: only this reranker's router pods
    and the scraping peers reach them; or None."""
    if not spec.network_policy_enabled or not spec.router_enabled:
        return None
    policy = spec.network_policy
    assert policy is not None
    routers = [{"podSelector": {"matchLabels": router_selector_labels(name)}}]
    return _network_policy(
        paths.pods_service_name(name),
        name,
        namespace,
        SERVER_COMPONENT,
        selector_labels(name),
        (routers, policy.metrics_from),
        uid,
    )
