"""The operator under kube-apiserver semantics (issue 7, points 1-3): what a real cluster would show.

The emulator stores objects as kube-apiserver does (canonical quantities, server-side apply's removal of omitted
fields, 422 for invalid children; see tests/e2e/apiserver/). The assertions describe the fixed behaviour.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from .conftest import NS, RD, conditions, create_rd, eventually
from .test_lifecycle import make_router_ready

pytestmark = pytest.mark.e2e

DEP, HPA = "apps/v1/deployments", "autoscaling/v2/horizontalpodautoscalers"
SPEC = {"model": {"name": "BAAI/bge-reranker-v2-m3"}, "replicas": 3}


def rd(emulator, name="demo"):
    return emulator.read(RD, NS, name)


def deployment_patches(emulator, name="demo") -> int:
    return sum(
        1 for verb, res, obj in emulator.request_log if (verb, res, obj) == ("patch", "deployments", name)
    )


def drift_repairs() -> float:
    return REGISTRY.get_sample_value("reranker_operator_drift_repairs_total", {"kind": "Deployment"}) or 0.0


def events(emulator, reason=None, type_=None):
    return [
        e
        for e in emulator.live("v1/events", NS)
        if (reason is None or e.get("reason") == reason) and (type_ is None or e.get("type") == type_)
    ]


async def settled(emulator, name="demo") -> None:
    """Children applied and status written for the current generation."""
    await eventually(
        lambda: (
            rd(emulator, name)["status"].get("observedGeneration")
            == rd(emulator, name)["metadata"]["generation"]
            and emulator.read(DEP, NS, name)
        ),
        timeout=15,
    )


async def make_ready(emulator, name="demo"):
    """Play the Deployment controller: every replica of the current generation is ready."""
    await emulator.deployment_ready(NS, name, manager="kube-controller-manager")
    await make_router_ready(emulator, name)


def operator_owns_replicas(version) -> bool:
    return any(
        entry["manager"].startswith("reranker") and "f:replicas" in entry["fieldsV1"].get("f:spec", {})
        for entry in version["metadata"].get("managedFields") or ()
    )


@pytest.mark.parametrize(
    ("extra", "stored_limits"),
    [
        ({"gpusPerPod": 1}, {"nvidia.com/gpu": "1", "memory": "24Gi"}),
        # Quantities as users write them: compared by value, never as strings.
        (
            {"gpusPerPod": 2, "resources": {"cpu": "0.5", "memory": "1024Mi", "sharedMemory": "2048Mi"}},
            {"nvidia.com/gpu": "2", "memory": "1Gi"},
        ),
    ],
    ids=["gpu-count", "user-quantities"],
)
async def test_unchanged_gpu_reranker_is_not_drift(emulator, operator, extra, stored_limits):
    await create_rd(emulator, "gpu", {**SPEC, "replicas": 1, **extra})
    await settled(emulator, "gpu")
    limits = emulator.read(DEP, NS, "gpu")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == stored_limits  # the API server stores quantities as canonical strings
    repairs, patches = drift_repairs(), deployment_patches(emulator, "gpu")

    await asyncio.sleep(3)  # six resync periods of nothing changing
    assert events(emulator, reason="DriftRepaired") == []
    assert drift_repairs() == repairs
    assert deployment_patches(emulator, "gpu") == patches  # a resync of unchanged children writes nothing


async def test_enabling_autoscaling_keeps_the_running_replicas(emulator, operator):
    await create_rd(emulator, "demo", SPEC)
    await settled(emulator)
    assert emulator.read(DEP, NS, "demo")["spec"]["replicas"] == 3
    seen = len(emulator.versions(DEP, NS, "demo"))

    await emulator.edit_object(RD, NS, "demo", {"spec": {"autoscaling": {"enabled": True, "maxReplicas": 6}}})
    await eventually(lambda: emulator.read(HPA, NS, "demo"))
    await settled(emulator)
    await asyncio.sleep(1.5)
    replicas = [v["spec"]["replicas"] for v in emulator.versions(DEP, NS, "demo")[seen:]]
    assert min(replicas, default=3) == 3, f"replicas went {replicas} before the HPA acted"

    # The HPA acts through /scale; the operator leaves its count alone from then on.
    await emulator.scale(DEP, NS, "demo", 5)
    await asyncio.sleep(1.5)
    assert emulator.read(DEP, NS, "demo")["spec"]["replicas"] == 5
    owners = emulator.managed_fields(DEP, NS, "demo")
    assert [m for m, fields in owners.items() if ".spec.replicas" in fields] == ["kube-controller-manager"]


async def test_disabling_autoscaling_takes_replicas_back_at_the_current_count(emulator, operator):
    await create_rd(emulator, "demo", {**SPEC, "autoscaling": {"enabled": True, "maxReplicas": 6}})
    await eventually(lambda: emulator.read(HPA, NS, "demo"))
    await settled(emulator)
    await emulator.scale(DEP, NS, "demo", 4)  # the HPA's current count
    seen = len(emulator.versions(DEP, NS, "demo"))

    await emulator.edit_object(RD, NS, "demo", {"spec": {"autoscaling": None}})
    await eventually(lambda: emulator.read(HPA, NS, "demo") is None)
    taken = await eventually(
        lambda: next(
            (v for v in emulator.versions(DEP, NS, "demo")[seen:] if operator_owns_replicas(v)), None
        )
    )
    assert taken["spec"]["replicas"] == 4, "the operator took replicas back with a jump"
    assert min(v["spec"]["replicas"] for v in emulator.versions(DEP, NS, "demo")[seen:]) >= 3


async def test_child_refused_with_422_is_reported_and_backs_off(emulator, operator):
    await create_rd(emulator, "demo", SPEC)
    await settled(emulator)
    await make_ready(emulator)
    await eventually(lambda: conditions(rd(emulator))["Ready"]["status"] == "True")
    good = emulator.read(DEP, NS, "demo")

    # A free-form field the CRD schema lets through and kube-apiserver refuses.
    tolerations = [{"key": "example.com/gpu", "operator": "Bogus", "effect": "NoSchedule"}]
    await emulator.edit_object(RD, NS, "demo", {"spec": {"scheduling": {"tolerations": tolerations}}})
    field = "spec.template.spec.tolerations[0].operator"

    def reported():
        return next((c for c in conditions(rd(emulator)).values() if field in (c.get("message") or "")), None)

    condition = await eventually(reported, timeout=10)
    assert 'Unsupported value: "Bogus"' in condition["message"]  # the API server's words
    await eventually(lambda: [e for e in events(emulator, type_="Warning") if field in e.get("message", "")])

    # Backoff, not a hot loop (0.5 s retries made ~10 PATCHes in 5 s); the last good children are untouched.
    patches = deployment_patches(emulator)
    await asyncio.sleep(5)
    assert deployment_patches(emulator) - patches <= 4
    assert (
        emulator.read(DEP, NS, "demo")["metadata"]["resourceVersion"] == good["metadata"]["resourceVersion"]
    )
