"""Silent waits show in the Ready condition with Kubernetes' own reason and message (the real operator).

The pod, PVC and Event objects below have the shapes the kubelet, the scheduler, the Job controller and the
volume provisioners report (taken from `kubectl get -o yaml` of each situation), so the operator reads exactly
the fields it would read on a cluster.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from reranker_operator.render.labels import common_labels

from .conftest import NS, RD, conditions, create_rd, eventually

pytestmark = pytest.mark.e2e

PODS, EVENTS, PVCS = "v1/pods", "v1/events", "v1/persistentvolumeclaims"
SHARED_CACHE = {"model": {"name": "Qwen/Qwen3-Reranker-0.6B", "cache": {"storageClassName": "standard"}}}
PER_POD_CACHE = {"model": {"name": "Qwen/Qwen3-Reranker-0.6B", "cache": {"size": "20Gi"}}}
_serial = itertools.count()


def rd(emulator, name="demo"):
    return emulator.read(RD, NS, name)


def scheduled():
    return [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized"},
    ]


def waiting(name, reason, message=None, **extra):
    state = {"reason": reason, **({"message": message} if message else {})}
    return {
        "name": name,
        "image": "ghcr.io/reranker-operator/reranker-server:0.1.0",
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": extra.pop("restartCount", 0),
        "state": {"waiting": state},
        **extra,
    }


async def put_pod(emulator, name, labels, status):
    """A pod as its controller and the kubelet leave it."""
    meta = {"name": name, "namespace": NS, "labels": labels}
    await emulator.put_object(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status})


def rfc3339(ago: timedelta = timedelta()) -> str:
    return (datetime.now(timezone.utc) - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


async def put_warning(emulator, kind, name, reason, message, component):
    """A core/v1 Event as the kubelet or a provisioner posts it (repeated: count 3, refreshed just now)."""
    await emulator.put_object(
        EVENTS,
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{next(_serial):016x}", "namespace": NS},
            "involvedObject": {"apiVersion": "v1", "kind": kind, "name": name, "namespace": NS},
            "type": "Warning",
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "count": 3,
            "firstTimestamp": rfc3339(timedelta(minutes=4)),
            "lastTimestamp": rfc3339(),
        },
    )


async def ready_reason(emulator, reason):
    return await eventually(
        lambda: conditions(rd(emulator))["Ready"]["reason"] == reason and conditions(rd(emulator))["Ready"]
    )


async def test_download_pod_image_pull_backoff(emulator, operator):
    await create_rd(emulator, "demo", SHARED_CACHE)
    await eventually(lambda: emulator.read("batch/v1/jobs", NS, "demo-download"))
    message = (
        'Back-off pulling image "ghcr.io/reranker-operator/reranker-server:0.1.0": ErrImagePull: '
        "failed to pull and unpack image: 403 Forbidden"
    )
    labels = {**common_labels("demo", "download"), "batch.kubernetes.io/job-name": "demo-download"}
    await put_pod(
        emulator,
        "demo-download-x7k2p",
        labels,
        {
            "phase": "Pending",
            "conditions": scheduled(),
            "containerStatuses": [waiting("download", "ImagePullBackOff", message)],
        },
    )
    ready = await ready_reason(emulator, "ImagePullBackOff")
    assert ready["status"] == "False"
    assert ready["message"] == f"download pod demo-download-x7k2p container download: {message}"
    cached = conditions(rd(emulator))["ModelCached"]
    assert (cached["status"], cached["reason"]) == ("False", "ImagePullBackOff")


async def test_per_pod_download_init_container_crash_loop(emulator, operator):
    await create_rd(emulator, "demo", PER_POD_CACHE)
    await eventually(lambda: emulator.read("apps/v1/deployments", NS, "demo"))
    why = "reranker-server download: GatedRepoError: 401 Client Error: access to model is restricted"
    await put_pod(
        emulator,
        "demo-6d9f-abcde",
        common_labels("demo", "server"),
        {
            "phase": "Pending",
            "conditions": scheduled(),
            "initContainerStatuses": [
                waiting(
                    "download",
                    "CrashLoopBackOff",
                    "back-off 40s restarting failed container=download pod=demo-6d9f-abcde",
                    restartCount=3,
                    lastState={"terminated": {"exitCode": 1, "reason": "Error", "message": why + "\n"}},
                )
            ],
            "containerStatuses": [waiting("server", "PodInitializing")],
        },
    )
    ready = await ready_reason(emulator, "CrashLoopBackOff")
    assert ready["message"] == f"pod demo-6d9f-abcde init container download: {why}"


async def test_missing_hf_token_secret_in_an_init_container(emulator, operator):
    await create_rd(emulator, "demo", PER_POD_CACHE)
    await eventually(lambda: emulator.read("apps/v1/deployments", NS, "demo"))
    await put_pod(
        emulator,
        "demo-6d9f-fghij",
        common_labels("demo", "server"),
        {
            "phase": "Pending",
            "conditions": scheduled(),
            "initContainerStatuses": [
                waiting("download", "CreateContainerConfigError", 'secret "hf-token" not found')
            ],
            "containerStatuses": [waiting("server", "PodInitializing")],
        },
    )
    ready = await ready_reason(emulator, "CreateContainerConfigError")
    assert ready["message"].endswith('init container download: secret "hf-token" not found')


async def test_missing_api_key_secret_volume(emulator, operator):
    spec = {**PER_POD_CACHE, "auth": {"apiKeySecretRef": {"name": "reranker-api-key", "key": "api-key"}}}
    await create_rd(emulator, "demo", spec)
    await eventually(lambda: emulator.read("apps/v1/deployments", NS, "demo"))
    # The kubelet cannot set the volume up, so no container exists yet: only an Event says why.
    await put_pod(
        emulator,
        "demo-6d9f-klmno",
        common_labels("demo", "server"),
        {
            "phase": "Pending",
            "conditions": scheduled(),
            "initContainerStatuses": [waiting("download", "PodInitializing")],
            "containerStatuses": [waiting("server", "PodInitializing")],
        },
    )
    message = 'MountVolume.SetUp failed for volume "api-key" : secret "reranker-api-key" not found'
    await put_warning(emulator, "Pod", "demo-6d9f-klmno", "FailedMount", message, "kubelet")
    ready = await ready_reason(emulator, "FailedMount")
    assert ready["message"] == f"pod demo-6d9f-klmno: {message}"


@pytest.mark.parametrize(
    "why",
    [
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available: "
        "1 No preemption victims found for incoming pod.",
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: "
        "0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
    ],
    ids=["no-free-gpu", "no-matching-node"],
)
async def test_unschedulable_pod(emulator, operator, why):
    await create_rd(emulator, "demo", {"model": {"name": "Qwen/Qwen3-Reranker-0.6B"}})
    await eventually(lambda: emulator.read("apps/v1/deployments", NS, "demo"))
    await put_pod(
        emulator,
        "demo-6d9f-pqrst",
        common_labels("demo", "server"),
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": why,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    )
    ready = await ready_reason(emulator, "Unschedulable")
    assert ready["message"] == f"pod demo-6d9f-pqrst: {why}"


@pytest.mark.parametrize(
    "reason, message, component",
    [
        (
            "ProvisioningFailed",
            'failed to provision volume with StorageClass "standard": Only support ReadWriteOnce access mode',
            "rancher.io/local-path_local-path-provisioner-7577fdbbfb-5kq2x",
        ),
        (
            "ProvisioningFailed",
            'storageclass.storage.k8s.io "standard" not found',
            "persistentvolume-controller",
        ),
        (
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
            "persistentvolume-controller",
        ),
    ],
    ids=["access-mode", "no-such-class", "no-class"],
)
async def test_pending_cache_pvc(emulator, operator, reason, message, component):
    await create_rd(emulator, "demo", SHARED_CACHE)
    await eventually(lambda: emulator.read(PVCS, NS, "demo-model-cache"))
    await emulator.edit_object(
        PVCS, NS, "demo-model-cache", {"status": {"phase": "Pending"}}, subresource="status"
    )
    await put_warning(emulator, "PersistentVolumeClaim", "demo-model-cache", reason, message, component)
    ready = await ready_reason(emulator, reason)
    assert ready["message"] == f"cache PVC demo-model-cache is Pending: {message}"
    cached = conditions(rd(emulator))["ModelCached"]
    assert (cached["status"], cached["reason"], cached["message"]) == ("False", reason, ready["message"])

    # Bound (e.g. after the class was fixed and the claim re-created): the wait is gone.
    await emulator.edit_object(
        PVCS, NS, "demo-model-cache", {"status": {"phase": "Bound"}}, subresource="status"
    )
    await eventually(lambda: conditions(rd(emulator))["Ready"]["reason"] != reason)
