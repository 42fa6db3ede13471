"""Scale to zero against the API emulator: who owns the Deployment's replicas when the router takes it to 0 and
back, what the operator creates for the router, and what status says at zero. The emulator models server-side
apply's managedFields and the scale subresource the router and the HPA write through."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import NS, RD, conditions, create_rd, eventually
from .test_caches import calls_since
from .test_lifecycle import DEP, make_router_ready, rd

pytestmark = pytest.mark.e2e

HPA = "autoscaling/v2/horizontalpodautoscalers"
SA, ROLE, BINDING = (
    "v1/serviceaccounts",
    "rbac.authorization.k8s.io/v1/roles",
    "rbac.authorization.k8s.io/v1/rolebindings",
)
ROUTER_MANAGER = "reranker-router"  # the field manager the router's /scale writes carry
SPEC = {
    "model": {"name": "BAAI/bge-reranker-v2-m3"},
    "autoscaling": {"minReplicas": 0, "maxReplicas": 4, "scaleToZero": {"idleSeconds": 600}},
}


async def server_status(emulator, replicas: int) -> None:
    """Play the Deployment controller for the server Deployment at `replicas`, all ready."""
    await emulator.deployment_ready(NS, "demo", replicas, manager="kube-controller-manager")


def replicas(emulator) -> int:
    return emulator.read(DEP, NS, "demo")["spec"]["replicas"]


def owners_of_replicas(emulator) -> list[str]:
    return [m for m, fields in emulator.managed_fields(DEP, NS, "demo").items() if ".spec.replicas" in fields]


async def started_at_zero(emulator) -> None:
    """A scale-to-zero RerankerDeployment that served, went idle and was scaled to 0 by its router."""
    await create_rd(emulator, "demo", SPEC)
    await eventually(lambda: emulator.read(BINDING, NS, "demo-router") and emulator.read(HPA, NS, "demo"))
    await eventually(lambda: emulator.read(DEP, NS, "demo-router"))
    await make_router_ready(emulator)
    await emulator.scale(DEP, NS, "demo", 0, manager=ROUTER_MANAGER)
    await server_status(emulator, 0)


async def test_created_with_one_pod_and_the_router_may_scale_only_its_deployment(emulator, operator):
    created = await create_rd(emulator, "demo", SPEC)
    await eventually(lambda: emulator.read(BINDING, NS, "demo-router") and emulator.read(HPA, NS, "demo"))
    # The first pod starts at once (Knative's initial scale 1): a bad image or model shows now, not at the
    # first request. No one applies spec.replicas: the Deployment default, free for the router and the HPA.
    assert replicas(emulator) == 1
    assert owners_of_replicas(emulator) == []
    assert emulator.read(HPA, NS, "demo")["spec"]["minReplicas"] == 1
    role = emulator.read(ROLE, NS, "demo-router")
    assert role["rules"][0]["resources"] == ["deployments/scale"] and role["rules"][0]["resourceNames"] == [
        "demo"
    ]
    for path in (SA, ROLE, BINDING):
        owner = emulator.read(path, NS, "demo-router")["metadata"]["ownerReferences"][0]
        assert owner["uid"] == created["metadata"]["uid"]
    pod = (await eventually(lambda: emulator.read(DEP, NS, "demo-router")))["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "demo-router" and pod["automountServiceAccountToken"] is True


async def test_the_routers_zero_survives_resyncs_and_is_ready(emulator, operator):
    await started_at_zero(emulator)
    ready = await eventually(
        lambda: (c := conditions(rd(emulator))["Ready"])["reason"] == "ScaledToZero" and c, timeout=10
    )
    assert ready["status"] == "True"
    assert "router starts a server pod on the first request" in ready["message"]
    start = len(emulator._requests)
    await asyncio.sleep(2.0)  # four resync periods of the test operator
    assert replicas(emulator) == 0, "a resync undid the router's scale to zero"
    assert owners_of_replicas(emulator) == [ROUTER_MANAGER]
    # The router's ServiceAccount, Role and RoleBinding are served from the caches like every other child.
    assert [call for call in calls_since(emulator, start) if call[0] != "watch"] == []

    # The first request: the router scales to 1, the HPA takes over from there; the operator still stays out.
    await emulator.scale(DEP, NS, "demo", 1, manager=ROUTER_MANAGER)
    await emulator.scale(DEP, NS, "demo", 3)  # the HPA (kube-controller-manager)
    await asyncio.sleep(1.5)
    assert replicas(emulator) == 3


async def test_raising_min_replicas_at_zero_brings_pods_back(emulator, operator):
    await started_at_zero(emulator)
    await emulator.edit_object(RD, NS, "demo", {"spec": {"autoscaling": {"minReplicas": 2}}})
    # The HPA does nothing while its target is at 0: the operator writes /scale itself.
    await eventually(lambda: replicas(emulator) == 2)
    await eventually(lambda: emulator.read(HPA, NS, "demo")["spec"]["minReplicas"] == 2)
    assert "reranker-operator" in owners_of_replicas(
        emulator
    )  # through /scale, not apply: the HPA may move it
    # No more scale to zero: the router's API access goes, its pods run without a token again.
    for path in (SA, ROLE, BINDING):
        await eventually(lambda path=path: emulator.read(path, NS, "demo-router") is None)
    pod = emulator.read(DEP, NS, "demo-router")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    await eventually(
        lambda: any(
            e.get("reason") == "Scaled" and "from 0 to 2" in e["message"]
            for e in emulator.live("v1/events", NS)
        )
    )
    # The HPA moves it from there and the operator leaves it.
    await emulator.scale(DEP, NS, "demo", 4)
    await asyncio.sleep(1.5)
    assert replicas(emulator) == 4


async def test_turning_autoscaling_off_at_zero_brings_one_pod_back(emulator, operator):
    await started_at_zero(emulator)
    await emulator.edit_object(RD, NS, "demo", {"spec": {"autoscaling": None}})
    await eventually(lambda: emulator.read(HPA, NS, "demo") is None)
    await eventually(lambda: replicas(emulator) == 1)
    await asyncio.sleep(1.5)
    assert replicas(emulator) == 1
