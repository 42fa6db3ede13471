"""Traffic: the Service and the optional NetworkPolicy."""

from __future__ import annotations

from typing import Any

from reranker_operator.api import RerankerDeploymentSpec
from reranker_operator.render.labels import SERVER_COMPONENT, selector_labels
from reranker_operator.render.meta import object_meta


def render_service(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict:
    """The Service `<name>` (port named http) in front of the server pods."""
    service = spec.service_or_default
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(
            name, namespace, name, SERVER_COMPONENT, uid=uid, annotations=service.annotations
        ),
        "spec": {
            "type": service.type,
            "selector": selector_labels(name),
            "ports": [{"name": "http", "port": service.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render_network_policy(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """The NetworkPolicy `<name>` (ingress to the http port from the allowed and the scraping peers), or None.

    Metrics are served on the same port as the API, so the scraper needs the same port.
    """
    if not spec.network_policy_enabled:
        return None
    policy = spec.network_policy
    assert policy is not None
    port = [{"port": "http", "protocol": "TCP"}]
    ingress: list[dict[str, Any]] = [
        {"from": [dict(peer) for peer in peers], "ports": port}
        for peers in (policy.allow_from, policy.metrics_from)
        if peers
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(name, namespace, name, SERVER_COMPONENT, uid=uid),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
