"""The per-RerankerDeployment gauges that dashboards and alerts read (conditions, replicas)."""

from __future__ import annotations

from prometheus_client import REGISTRY
from reranker_operator import metrics

OWNER = ("team-a", "qwen3")


def condition_value(type_: str, status: str, reason: str) -> float | None:
    labels = {"namespace": "team-a", "rerankerdeployment": "qwen3", "type": type_, "status": status}
    return REGISTRY.get_sample_value(
        "reranker_operator_rerankerdeployment_condition", {**labels, "reason": reason}
    )


def replicas(state: str) -> float | None:
    labels = {"namespace": "team-a", "rerankerdeployment": "qwen3", "state": state}
    return REGISTRY.get_sample_value("reranker_operator_rerankerdeployment_replicas", labels)


def status(ready: str, reason: str, ready_replicas: int) -> dict:
    return {
        "replicas": 2,
        "readyReplicas": ready_replicas,
        "conditions": [
            {"type": "Ready", "status": ready, "reason": reason, "message": "", "lastTransitionTime": "x"},
            {"type": "InvalidSpec", "status": "False", "reason": "SpecValid", "lastTransitionTime": "x"},
        ],
    }


def test_conditions_and_replicas_follow_the_latest_status():
    metrics.record_status(OWNER, status("False", "ReplicasNotReady", 0))
    assert condition_value("Ready", "False", "ReplicasNotReady") == 1
    assert condition_value("InvalidSpec", "False", "SpecValid") == 1
    assert (replicas("existing"), replicas("ready"), replicas("updated")) == (2, 0, 0)

    metrics.record_status(OWNER, status("True", "ReplicasReady", 2))
    assert condition_value("Ready", "True", "ReplicasReady") == 1
    assert condition_value("Ready", "False", "ReplicasNotReady") is None, "a stale series would keep alerting"
    assert replicas("ready") == 2


def test_a_deleted_rerankerdeployment_leaves_no_series():
    metrics.record_status(OWNER, status("True", "ReplicasReady", 2))
    metrics.forget_managed(OWNER)
    assert condition_value("Ready", "True", "ReplicasReady") is None
    assert replicas("ready") is None
