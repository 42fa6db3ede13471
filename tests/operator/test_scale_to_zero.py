"""Scale to zero (`autoscaling.minReplicas: 0`): the API rule, what the operator renders for the router, and the
status it reports at zero replicas. The router's half (holding requests, /scale writes) is tested in
tests/router; the operator against the API emulator in tests/e2e/test_scale_to_zero.py."""

from __future__ import annotations

from typing import Any

import pytest
from reranker_operator.errors import InvalidSpecError
from reranker_operator.render import load_spec, render_all
from reranker_operator.render.labels import router_selector_labels
from reranker_operator.render.router import ROUTER_SCALE_VERBS
from reranker_operator.status import Observed, compute_status
from reranker_router.config import NoBackendConfig, RouterConfig
from rrd_helpers import spec_cel_violations

NAME, NAMESPACE, UID = "rr", "ai", "3b1f7c52-0000-4000-8000-000000000009"
MODEL = {"name": "Qwen/Qwen3-Reranker-0.6B"}
ZERO = {"autoscaling": {"minReplicas": 0, "maxReplicas": 3}}
RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding"}
RULE = "autoscaling.minReplicas 0 (scale to zero) needs autoscaling.enabled and router.enabled"


def children(**fields: Any) -> dict[tuple[str, str], dict]:
    spec = load_spec({"model": dict(MODEL), **fields})
    return {(m["kind"], m["metadata"]["name"]): m for m in render_all(NAME, NAMESPACE, spec, uid=UID)}


def router_config(rendered: dict) -> RouterConfig:
    return RouterConfig.from_yaml(rendered[("ConfigMap", "rr-router")]["data"]["router.yaml"])


def router_pod_spec(rendered: dict) -> dict:
    return rendered[("Deployment", "rr-router")]["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    "fields",
    [
        {"autoscaling": {"minReplicas": 0, "enabled": False}},
        {**ZERO, "router": {"enabled": False}},
    ],
    ids=["autoscaling-off", "no-router"],
)
def test_min_replicas_zero_needs_autoscaling_and_the_router(fields):
    spec = {"model": dict(MODEL), **fields}
    with pytest.raises(InvalidSpecError, match="spec.autoscaling.minReplicas: 0 .scale to zero. needs"):
        load_spec(spec)
    # kubectl apply is refused too: the CRD carries the same rule in CEL.
    assert [m for m in spec_cel_violations(spec) if m.startswith(RULE)] != []


def test_min_replicas_zero_with_autoscaling_and_router_is_valid_in_both_checks():
    spec = {"model": dict(MODEL), **ZERO}
    load_spec(spec)
    assert spec_cel_violations(spec) == []
    assert spec_cel_violations({"model": dict(MODEL), "autoscaling": {"minReplicas": 1}}) == []


def test_scale_to_zero_defaults_and_bounds():
    zero = load_spec({"model": dict(MODEL), **ZERO}).scale_to_zero
    assert zero is not None and (zero.idle_seconds, zero.hold_seconds) == (600, 300)
    with pytest.raises(InvalidSpecError, match="idleSeconds"):
        load_spec(
            {"model": dict(MODEL), "autoscaling": {"minReplicas": 0, "scaleToZero": {"idleSeconds": 5}}}
        )
    # Settings without minReplicas 0 change nothing.
    assert load_spec({"model": dict(MODEL), "autoscaling": {"scaleToZero": {}}}).scale_to_zero is None


def test_the_hpa_never_goes_below_one_the_router_does_zero():
    hpa = children(**ZERO)[("HorizontalPodAutoscaler", NAME)]
    assert hpa["spec"]["minReplicas"] == 1
    assert hpa["spec"]["maxReplicas"] == 3
    assert (
        children(autoscaling={"minReplicas": 2})[("HorizontalPodAutoscaler", NAME)]["spec"]["minReplicas"]
        == 2
    )


def test_the_router_config_names_the_server_deployment_and_holds_requests_for_hold_seconds():
    rendered = children(
        autoscaling={"minReplicas": 0, "scaleToZero": {"idleSeconds": 900, "holdSeconds": 120}}
    )
    config = router_config(rendered)
    assert config.scale_from_zero is not None
    assert (config.scale_from_zero.namespace, config.scale_from_zero.deployment) == (NAMESPACE, NAME)
    assert config.scale_from_zero.idle_seconds == 900
    assert config.no_backend.wait_seconds == 120
    # The Deployment the router scales is the server's, and it leaves spec.replicas to others.
    assert "replicas" not in rendered[("Deployment", NAME)]["spec"]


def test_without_scale_to_zero_the_router_has_no_api_access_and_default_holding():
    for fields in ({}, {"autoscaling": {"minReplicas": 1}}):
        rendered = children(**fields)
        assert not {kind for kind, _ in rendered} & RBAC_KINDS
        config = router_config(rendered)
        assert config.scale_from_zero is None and config.no_backend == NoBackendConfig()
        pod = router_pod_spec(rendered)
        assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod


def test_the_router_may_scale_only_the_server_deployment():
    rendered = children(**ZERO)
    account = rendered[("ServiceAccount", "rr-router")]
    role = rendered[("Role", "rr-router")]
    binding = rendered[("RoleBinding", "rr-router")]
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": [NAME],
            "verbs": ["get", "update", "patch"],
        }
    ]
    assert list(ROUTER_SCALE_VERBS) == role["rules"][0]["verbs"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "rr-router",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rr-router", "namespace": NAMESPACE}]
    pod = router_pod_spec(rendered)
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True
    for obj in (account, role, binding):
        meta = obj["metadata"]
        assert meta["labels"].items() >= router_selector_labels(NAME).items()
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "reranker-operator"
        assert meta["ownerReferences"][0]["uid"] == UID and meta["ownerReferences"][0]["controller"] is True


def test_the_server_network_policy_admits_the_routers_on_the_port_that_serves_metrics_too():
    rendered = children(**ZERO, networkPolicy={"enabled": True})
    policy = rendered[("NetworkPolicy", "rr-pods")]
    routers = [
        rule
        for rule in policy["spec"]["ingress"]
        if {"podSelector": {"matchLabels": router_selector_labels(NAME)}} in rule["from"]
    ]
    # /metrics is served on the http port, so a router reading the servers' counters is admitted as well.
    assert routers and routers[0]["ports"] == [{"port": "http", "protocol": "TCP"}]


def deployment(desired: int, ready: int, name: str = NAME, generation: int = 1) -> dict:
    return {
        "metadata": {"name": name, "generation": generation},
        "spec": {"replicas": desired},
        "status": {"observedGeneration": generation, "readyReplicas": ready, "updatedReplicas": ready},
    }


def conditions(fields: dict, server: dict, router: dict | None) -> dict[str, dict]:
    spec = load_spec({"model": dict(MODEL), **fields})
    status = compute_status(
        spec, 1, Observed(deployment=server, router=router), name=NAME, now="2026-01-01T00:00:00Z"
    )
    return {c.type: c for c in status.conditions}


def test_zero_replicas_with_scale_to_zero_is_ready():
    conds = conditions(ZERO, deployment(0, 0), deployment(2, 2, "rr-router"))
    ready = conds["Ready"]
    assert (ready.status, ready.reason) == ("True", "ScaledToZero")
    assert "the router starts a server pod on the first request" in ready.message
    assert conds["Reconciling"].status == "False" and conds["Stalled"].status == "False"
    assert (conds["Progressing"].status, conds["Progressing"].reason) == ("False", "RolloutComplete")


def test_zero_replicas_without_scale_to_zero_is_not_ready():
    ready = conditions({"replicas": 0}, deployment(0, 0), deployment(2, 2, "rr-router"))["Ready"]
    assert (ready.status, ready.reason) == ("False", "ScaledToZero")


@pytest.mark.parametrize("router", [None, deployment(2, 1, "rr-router")], ids=["missing", "one-of-two"])
def test_ready_waits_for_the_router(router):
    for server in (deployment(2, 2), deployment(0, 0)):
        ready = conditions(ZERO, server, router)["Ready"]
        assert ready.status == "False"
        assert ready.reason == ("RouterMissing" if router is None else "RouterNotReady")


def test_without_a_router_only_the_server_counts():
    ready = conditions({"router": {"enabled": False}}, deployment(1, 1), None)["Ready"]
    assert (ready.status, ready.reason) == ("True", "ReplicasReady")
