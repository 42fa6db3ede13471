"""Capacity: the HorizontalPodAutoscaler and the PodDisruptionBudget."""

from __future__ import annotations

import copy
from typing import Any

from reranker_operator.api import RerankerDeploymentSpec
from reranker_operator.render.labels import SERVER_COMPONENT, selector_labels
from reranker_operator.render.meta import object_meta
from reranker_operator.render.quantity import canonical_quantity

METRICS = {
    "pairsInFlight": "reranker_pairs_in_flight",
    "pairsWaiting": "reranker_pairs_waiting",
    "tokensInFlight": "reranker_tokens_in_flight",
}
# From the scaling simulation (docs/scaling.md): the cheapest targets that keep p95 within 1 s on the diurnal
# day and on the chunk-size mix for Qwen3-Reranker-0.6B on an L4-class GPU; tokens need one target for every
# chunk length, pairs must be sized for the longest chunks (and cost ~15 % more GPU-minutes).
DEFAULT_TARGETS = {"pairsInFlight": "48", "pairsWaiting": "1", "tokensInFlight": "16k"}
# A new GPU pod takes minutes to load its model: add capacity quickly (up to 4 pods a minute: in the scaling
# simulation a 10x burst then refuses a third fewer requests than with 2 pods a minute), but give it back
# slowly so a short lull does not throw away pods that would have to load again (docs/scaling.md).
DEFAULT_BEHAVIOR: dict[str, Any] = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 600,
        "selectPolicy": "Min",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
    },
}


def render_hpa(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """The autoscaling/v2 HPA `<name>` on a per-pod server gauge, or None when autoscaling is off."""
    if not spec.autoscaling_enabled:
        return None
    scaling = spec.autoscaling
    assert scaling is not None
    target = canonical_quantity(scaling.target_average_value or DEFAULT_TARGETS[scaling.metric])
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(name, namespace, name, SERVER_COMPONENT, uid=uid),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            # The HPA cannot go below 1 (without the alpha HPAScaleToZero gate): with minReplicas 0 the router
            # takes the Deployment from 1 to 0 and back, and the HPA idles while it is at 0.
            "minReplicas": max(1, scaling.min_replicas),
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": METRICS[scaling.metric]},
                        "target": {"type": "AverageValue", "averageValue": target},
                    },
                }
            ],
            "behavior": dict(scaling.behavior) if scaling.behavior else copy.deepcopy(DEFAULT_BEHAVIOR),
        },
    }


def render_pdb(
    name: str, namespace: str, spec: RerankerDeploymentSpec, *, uid: str | None = None
) -> dict | None:
    """The PodDisruptionBudget `<name>` (maxUnavailable 1), or None for a fixed single replica.

    With one fixed replica a budget protects nothing and, were the pod unhealthy, would only get in the way of
    node drains, so none is made. Otherwise voluntary evictions take one pod at a time; unhealthy pods may
    always be evicted, so a crash-looping pod never blocks a drain.
    """
    if not spec.autoscaling_enabled and (spec.replicas or 1) <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(name, namespace, name, SERVER_COMPONENT, uid=uid),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
