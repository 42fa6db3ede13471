"""Create, become ready, update, invalid edit, crash loop, drift, delete: the real operator against kmock."""

from __future__ import annotations

import asyncio

import pytest
from reranker_operator import API_VERSION, KIND
from reranker_operator.render.workload import CONFIG_HASH_ANNOTATION

from .conftest import NS, RD, conditions, create_rd, eventually

pytestmark = pytest.mark.e2e

SPEC = {"model": {"name": "BAAI/bge-reranker-v2-m3"}, "replicas": 2}
DEP, SVC, CM, HPA, PDB = (
    "apps/v1/deployments",
    "v1/services",
    "v1/configmaps",
    "autoscaling/v2/horizontalpodautoscalers",
    "policy/v1/poddisruptionbudgets",
)


def rd(emulator, name="demo"):
    return emulator.read(RD, NS, name)


async def make_ready(emulator, name="demo", replicas=2):
    """Play the Deployment controller: all replicas of the current generation are ready (the router's too)."""
    await emulator.deployment_ready(NS, name, replicas)
    await make_router_ready(emulator, name)


async def make_router_ready(emulator, name="demo"):
    """Play the Deployment controller for the router Deployment, when the spec asks for one."""
    if ((rd(emulator, name)["spec"].get("router") or {}).get("enabled")) is False:
        return
    await eventually(lambda: emulator.read(DEP, NS, f"{name}-router"))
    await emulator.deployment_ready(NS, f"{name}-router")


async def test_create_renders_children_and_status(emulator, operator):
    created = await create_rd(emulator, "demo", SPEC)
    uid = created["metadata"]["uid"]
    await eventually(lambda: conditions(rd(emulator)))  # status is written after every child is applied
    for path, name in [
        (CM, "demo-config"),
        (CM, "demo-clients"),
        (DEP, "demo"),
        (SVC, "demo"),
        (PDB, "demo"),
    ]:
        obj = emulator.read(path, NS, name)
        assert obj is not None, (path, name)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "reranker-operator"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": "demo",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    assert emulator.read(HPA, NS, "demo") is None
    dep = emulator.read(DEP, NS, "demo")
    assert dep["spec"]["replicas"] == 2
    assert "server.yaml" in emulator.read(CM, NS, "demo-config")["data"]

    status = (await eventually(lambda: rd(emulator)["status"].get("conditions") and rd(emulator)))["status"]
    assert status["observedGeneration"] == 1
    assert status["endpoint"] == "http://demo.team.svc:8000"
    assert status["clients"]["rerankUrl"] == "http://demo.team.svc:8000/v1/rerank"
    conds = conditions(rd(emulator))
    assert conds["Ready"]["status"] == "False"
    assert conds["Progressing"]["status"] == "True"
    assert conds["InvalidSpec"]["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in conds.values())

    await make_ready(emulator)
    ready = await eventually(
        lambda: conditions(rd(emulator))["Ready"]["status"] == "True" and conditions(rd(emulator))
    )
    assert ready["Progressing"]["status"] == "False"
    assert rd(emulator)["status"]["readyReplicas"] == 2
    created = await eventually(
        lambda: [e["message"] for e in emulator.live("v1/events", NS) if e.get("reason") == "Created"]
    )
    # One Event for the whole first pass, naming every child it created.
    assert len(created) == 1, created
    assert created[0].startswith("Created ")
    assert {"Deployment demo", "Service demo"} <= set(created[0].removeprefix("Created ").split(", "))


async def test_updates_scale_model_and_autoscaling(emulator, operator):
    await create_rd(emulator, "demo", SPEC)
    await eventually(lambda: emulator.read(SVC, NS, "demo"))
    old_hash = emulator.read(DEP, NS, "demo")["spec"]["template"]["metadata"]["annotations"][
        CONFIG_HASH_ANNOTATION
    ]

    await emulator.edit_object(RD, NS, "demo", {"spec": {"replicas": 3}})
    await eventually(lambda: emulator.read(DEP, NS, "demo")["spec"]["replicas"] == 3)
    await eventually(lambda: any(e.get("reason") == "Scaled" for e in emulator.live("v1/events", NS)))

    await emulator.edit_object(RD, NS, "demo", {"spec": {"model": {"name": "Qwen/Qwen3-Reranker-0.6B"}}})
    await eventually(
        lambda: (
            emulator.read(DEP, NS, "demo")["spec"]["template"]["metadata"]["annotations"][
                CONFIG_HASH_ANNOTATION
            ]
            != old_hash
        )
    )
    assert "Qwen3-Reranker-0.6B" in emulator.read(CM, NS, "demo-config")["data"]["server.yaml"]

    await emulator.edit_object(RD, NS, "demo", {"spec": {"autoscaling": {"enabled": True, "maxReplicas": 5}}})
    hpa = await eventually(lambda: emulator.read(HPA, NS, "demo"))
    assert hpa["spec"]["maxReplicas"] == 5

    await emulator.edit_object(RD, NS, "demo", {"spec": {"autoscaling": None}})
    await eventually(lambda: emulator.read(HPA, NS, "demo") is None)
    await eventually(
        lambda: any(
            e.get("reason") == "Pruned" and "HorizontalPodAutoscaler demo" in e["message"]
            for e in emulator.live("v1/events", NS)
        )
    )

    await emulator.edit_object(RD, NS, "demo", {"spec": {"autoscaling": {"enabled": True}}})
    await eventually(lambda: emulator.read(HPA, NS, "demo"))
    await eventually(
        lambda: rd(emulator)["status"]["observedGeneration"] == rd(emulator)["metadata"]["generation"]
    )


async def test_invalid_edit_keeps_last_good_children(emulator, operator):
    await create_rd(emulator, "demo", SPEC)
    await eventually(lambda: emulator.read(SVC, NS, "demo"))
    await make_ready(emulator)
    await eventually(lambda: conditions(rd(emulator))["Ready"]["status"] == "True")
    dep_before = emulator.read(DEP, NS, "demo")

    await emulator.edit_object(RD, NS, "demo", {"spec": {"model": {"family": "no-such-family"}}})
    invalid = await eventually(
        lambda: (
            conditions(rd(emulator))["InvalidSpec"]["status"] == "True"
            and conditions(rd(emulator))["InvalidSpec"]
        )
    )
    assert "unknown family 'no-such-family'" in invalid["message"]
    assert invalid["observedGeneration"] == 2
    warnings = await eventually(
        lambda: [e for e in emulator.live("v1/events", NS) if e.get("type") == "Warning"]
    )
    assert any("no-such-family" in e["message"] for e in warnings)
    # Children untouched and still serving; no retry storm (one warning while the spec stays invalid).
    assert (
        emulator.read(DEP, NS, "demo")["metadata"]["resourceVersion"]
        == dep_before["metadata"]["resourceVersion"]
    )
    # kstatus: the broken generation is observed and Stalled, and Ready does not claim it is rolled out.
    conds = conditions(rd(emulator))
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "InvalidSpec")
    assert "2/2 replicas ready" in conds["Ready"]["message"]  # the last good spec keeps serving
    assert (conds["Stalled"]["status"], conds["Reconciling"]["status"]) == ("True", "False")
    assert rd(emulator)["status"]["observedGeneration"] == 2
    await asyncio.sleep(1.5)  # three resync periods
    assert len([e for e in emulator.live("v1/events", NS) if e.get("reason") == "InvalidSpec"]) == 1

    # Fixing the spec clears the condition and resumes rendering.
    await emulator.edit_object(RD, NS, "demo", {"spec": {"model": {"family": "auto"}}})
    await eventually(lambda: conditions(rd(emulator))["InvalidSpec"]["status"] == "False")
    await eventually(lambda: conditions(rd(emulator))["Stalled"]["status"] == "False")


async def test_crash_looping_new_pod_is_degraded(emulator, operator):
    await create_rd(emulator, "demo", {**SPEC, "replicas": 1})
    dep = await eventually(lambda: emulator.read(DEP, NS, "demo"))
    labels = dep["spec"]["template"]["metadata"]["labels"]  # pods and ReplicaSets carry the template labels
    for rs_name, revision, tmpl_hash in [("demo-old", "1", "aaa"), ("demo-new", "2", "bbb")]:
        await emulator.put_object(
            "apps/v1/replicasets",
            {
                "metadata": {
                    "name": rs_name,
                    "namespace": NS,
                    "labels": {**labels, "pod-template-hash": tmpl_hash},
                    "annotations": {"deployment.kubernetes.io/revision": revision},
                }
            },
        )
    await emulator.put_object(
        "v1/pods",
        {
            "metadata": {
                "name": "demo-old-1",
                "namespace": NS,
                "labels": {**labels, "pod-template-hash": "aaa"},
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "server", "ready": True, "state": {"running": {}}}],
            },
        },
    )
    message = "tensor parallel size 2 does not divide the 3 attention heads"
    await emulator.put_object(
        "v1/pods",
        {
            "metadata": {
                "name": "demo-new-1",
                "namespace": NS,
                "labels": {**labels, "pod-template-hash": "bbb"},
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "server",
                        "ready": False,
                        "restartCount": 4,
                        "state": {
                            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}
                        },
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}},
                    }
                ],
            },
        },
    )
    degraded = await eventually(
        lambda: (
            conditions(rd(emulator))["Degraded"]["status"] == "True" and conditions(rd(emulator))["Degraded"]
        )
    )
    assert degraded["reason"] == "CrashLoopBackOff"
    assert message in degraded["message"]


async def test_pending_pod_reports_scheduling_message(emulator, operator):
    await create_rd(emulator, "demo", {**SPEC, "replicas": 1})
    dep = await eventually(lambda: emulator.read(DEP, NS, "demo"))
    why = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    await emulator.put_object(
        "v1/pods",
        {
            "metadata": {
                "name": "demo-x",
                "namespace": NS,
                "labels": dep["spec"]["template"]["metadata"]["labels"],
            },
            "status": {
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}
                ],
            },
        },
    )
    progressing = await eventually(
        lambda: (
            conditions(rd(emulator))["Progressing"]["reason"] == "PodsPending"
            and conditions(rd(emulator))["Progressing"]
        )
    )
    assert progressing["message"] == f"1 new pod Pending: {why}"


async def test_drift_is_repaired(emulator, operator):
    await create_rd(emulator, "demo", SPEC)
    await eventually(lambda: emulator.read(SVC, NS, "demo"))
    image = emulator.read(DEP, NS, "demo")["spec"]["template"]["spec"]["containers"][0]["image"]

    await emulator.remove_object(SVC, NS, "demo")
    assert emulator.read(SVC, NS, "demo") is None
    await eventually(lambda: emulator.read(SVC, NS, "demo"))

    containers = emulator.read(DEP, NS, "demo")["spec"]["template"]["spec"]["containers"]
    edited = [{**containers[0], "image": "evil/image:latest"}, *containers[1:]]
    await emulator.edit_object(DEP, NS, "demo", {"spec": {"template": {"spec": {"containers": edited}}}})
    await eventually(
        lambda: emulator.read(DEP, NS, "demo")["spec"]["template"]["spec"]["containers"][0]["image"] == image
    )
    await eventually(
        lambda: (
            {e["message"] for e in emulator.live("v1/events", NS) if e.get("reason") == "DriftRepaired"}
            >= {"Created Service demo", "Restored Deployment demo"}
        )
    )


async def test_deleted_parent_is_not_recreated(emulator, operator):
    await create_rd(emulator, "demo", SPEC)
    await eventually(lambda: emulator.read(SVC, NS, "demo"))
    await eventually(lambda: conditions(rd(emulator)))
    # Nothing has to run before it goes (children go by ownerReferences): no finalizer, no PATCH for one.
    assert not rd(emulator)["metadata"].get("finalizers")
    await emulator.remove_object(RD, NS, "demo")
    await eventually(lambda: rd(emulator) is None)  # the operator releases it at once
    # The emulator's garbage collector removes the children by their ownerReferences; nothing brings them back.
    children = [(DEP, "demo"), (SVC, "demo"), (CM, "demo-config"), (PDB, "demo")]
    await eventually(lambda: all(emulator.read(path, NS, name) is None for path, name in children))
    with pytest.raises(AssertionError):
        await eventually(lambda: emulator.read(SVC, NS, "demo"), timeout=1.5)


async def test_cache_and_network_policy_on_then_off(emulator, operator):
    full = {
        **SPEC,
        "model": {**SPEC["model"], "cache": {"size": "30Gi", "storageClassName": "standard-rwx"}},
        "autoscaling": {"enabled": True},
        "networkPolicy": {"enabled": True},
    }
    await create_rd(emulator, "demo", full)
    await eventually(lambda: conditions(rd(emulator)))
    pvc, job, netpol = "v1/persistentvolumeclaims", "batch/v1/jobs", "networking.k8s.io/v1/networkpolicies"
    assert emulator.read(pvc, NS, "demo-model-cache")["spec"]["resources"]["requests"]["storage"] == "30Gi"
    assert emulator.read(netpol, NS, "demo") is not None
    assert conditions(rd(emulator))["ModelCached"]["reason"] == "Downloading"
    await emulator.edit_object(
        job,
        NS,
        "demo-download",
        {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
        subresource="status",
    )
    await eventually(lambda: conditions(rd(emulator))["ModelCached"]["status"] == "True")

    # A new model changes the Job's immutable pod template: the Job is replaced, not patched.
    old_uid = emulator.read(job, NS, "demo-download")["metadata"]["uid"]
    await emulator.edit_object(RD, NS, "demo", {"spec": {"model": {"name": "Qwen/Qwen3-Reranker-0.6B"}}})
    await eventually(
        lambda: (
            (emulator.read(job, NS, "demo-download") or {}).get("metadata", {}).get("uid")
            not in (None, old_uid)
        )
    )

    await emulator.edit_object(
        RD,
        NS,
        "demo",
        {"spec": {"model": {"cache": None}, "autoscaling": None, "networkPolicy": None, "replicas": 1}},
    )
    await eventually(lambda: emulator.read(job, NS, "demo-download") is None)
    await eventually(
        lambda: emulator.read(netpol, NS, "demo") is None and emulator.read(HPA, NS, "demo") is None
    )
    await eventually(lambda: emulator.read(PDB, NS, "demo") is None)
    assert emulator.read(pvc, NS, "demo-model-cache") is not None  # the cache is retained, see docs
    await eventually(lambda: "ModelCached" not in conditions(rd(emulator)))


async def _cached_rd(emulator, storage_class: str, expandable: bool) -> str:
    """A RerankerDeployment with a shared model cache of 30Gi on `storage_class`, its claim Bound."""
    await emulator.put_object(
        "storage.k8s.io/v1/storageclasses",
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": storage_class},
            "provisioner": "example.com/csi",
            "allowVolumeExpansion": expandable,
        },
    )
    spec = {**SPEC, "model": {**SPEC["model"], "cache": {"size": "30Gi", "storageClassName": storage_class}}}
    await create_rd(emulator, "demo", spec)
    pvc = "v1/persistentvolumeclaims"
    await eventually(lambda: emulator.read(pvc, NS, "demo-model-cache"))
    await emulator.edit_object(
        pvc, NS, "demo-model-cache", {"status": {"phase": "Bound"}}, subresource="status"
    )
    await eventually(lambda: conditions(rd(emulator)))
    return pvc


async def _pvc_writes_while(emulator, seconds: float) -> int:
    emulator.request_log.clear()
    await asyncio.sleep(seconds)
    return sum(
        1 for verb, res, _ in emulator.request_log if res == "persistentvolumeclaims" and verb != "watch"
    )


def _warnings(emulator, reason):
    return [e["message"] for e in emulator.live("v1/events", NS) if e.get("reason") == reason]


async def test_cache_grows_but_never_shrinks(emulator, operator):
    pvc = await _cached_rd(emulator, "standard-rwx", expandable=True)
    storage = lambda: emulator.read(pvc, NS, "demo-model-cache")["spec"]["resources"]["requests"]["storage"]  # noqa: E731

    await emulator.edit_object(RD, NS, "demo", {"spec": {"model": {"cache": {"size": "40Gi"}}}})
    await eventually(lambda: storage() == "40Gi")
    assert conditions(rd(emulator))["Stalled"]["status"] == "False"

    # A smaller cache cannot be had (the API server refuses to shrink a claim): the claim is left alone, the
    # rest of the edit (a new model) is applied, and the refusal is reported once, without retrying.
    edit = {"spec": {"model": {"name": "Qwen/Qwen3-Reranker-0.6B", "cache": {"size": "20Gi"}}}}
    await emulator.edit_object(RD, NS, "demo", edit)
    stalled = await eventually(
        lambda: (
            conditions(rd(emulator))["Stalled"]["status"] == "True" and conditions(rd(emulator))["Stalled"]
        )
    )
    assert stalled["reason"] == "CacheResizeRefused" and "20Gi" in stalled["message"], stalled
    await eventually(
        lambda: "Qwen/Qwen3-Reranker-0.6B" in emulator.read(CM, NS, "demo-config")["data"]["server.yaml"]
    )
    assert storage() == "40Gi"
    assert await _pvc_writes_while(emulator, 2.0) == 0
    await eventually(lambda: _warnings(emulator, "CacheResizeRefused"))

    await emulator.edit_object(RD, NS, "demo", {"spec": {"model": {"cache": {"size": "40Gi"}}}})
    await eventually(lambda: conditions(rd(emulator))["Stalled"]["status"] == "False")


async def test_cache_growth_refused_by_the_storage_class_is_reported_not_retried(emulator, operator):
    pvc = await _cached_rd(emulator, "fixed", expandable=False)

    await emulator.edit_object(
        RD, NS, "demo", {"spec": {"model": {"cache": {"size": "40Gi"}}, "replicas": 3}}
    )
    stalled = await eventually(
        lambda: (
            conditions(rd(emulator))["Stalled"]["status"] == "True" and conditions(rd(emulator))["Stalled"]
        )
    )
    assert stalled["reason"] == "CacheResizeRefused" and "must support resize" in stalled["message"], stalled
    assert emulator.read(pvc, NS, "demo-model-cache")["spec"]["resources"]["requests"]["storage"] == "30Gi"
    await eventually(lambda: emulator.read(DEP, NS, "demo")["spec"]["replicas"] == 3)  # the rest is applied
    assert await _pvc_writes_while(emulator, 2.0) == 0
    await eventually(lambda: _warnings(emulator, "CacheResizeRefused"))


async def test_the_resync_sweep_restores_a_lost_status(emulator, operator):
    await create_rd(emulator, "demo", SPEC)
    await eventually(lambda: conditions(rd(emulator)))
    # Not a spec change and no child moved: only the sweep (every 0.5 s here) can notice.
    await emulator.edit_object(RD, NS, "demo", {"status": {"conditions": None}}, subresource="status")
    assert not rd(emulator)["status"].get("conditions")
    await eventually(lambda: conditions(rd(emulator)).get("Ready"))


async def test_the_finalizer_of_earlier_versions_is_removed(emulator, operator):
    """Versions with per-object resync timers added `reranker.dev/finalizer`; left, it would only delay deletion
    until an operator removes it."""
    await emulator.put_object(
        RD,
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": "old", "namespace": NS, "finalizers": ["reranker.dev/finalizer"]},
            "spec": SPEC,
        },
    )
    await eventually(lambda: conditions(rd(emulator, "old")))
    await eventually(lambda: not rd(emulator, "old")["metadata"].get("finalizers"))
    await emulator.remove_object(RD, NS, "old")
    await eventually(lambda: rd(emulator, "old") is None)
