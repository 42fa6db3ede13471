"""Table-driven tests of the pure status layer and the pure reconcile plan."""

from __future__ import annotations

import pytest
from reranker_operator.reconcile import is_subset, plan_changes
from reranker_operator.status import Observed, compute_conditions, set_condition

NOW, EARLIER = "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"


def dep(replicas=2, ready=0, updated=0, generation=1, observed=1):
    return {
        "metadata": {"name": "demo", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated},
    }


def pod(name, phase="Running", hash_="new", statuses=(), conds=()):
    return {
        "metadata": {"name": name, "labels": {"pod-template-hash": hash_}},
        "status": {"phase": phase, "containerStatuses": list(statuses), "conditions": list(conds)},
    }


RS = [
    {
        "metadata": {
            "labels": {"pod-template-hash": "old"},
            "annotations": {"deployment.kubernetes.io/revision": "1"},
        }
    },
    {
        "metadata": {
            "labels": {"pod-template-hash": "new"},
            "annotations": {"deployment.kubernetes.io/revision": "2"},
        }
    },
]
CRASH = {
    "name": "server",
    "restartCount": 3,
    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
    "lastState": {
        "terminated": {
            "exitCode": 1,
            "message": "tensor parallel size 2 does not divide the 3 attention heads\n",
        }
    },
}
UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu",
}

CASES = [
    # (id, observed, expected {type: (status, reason, message-substring)})
    (
        "no-deployment",
        Observed(),
        {"Ready": ("False", "DeploymentMissing", ""), "Progressing": ("True", "Creating", "")},
    ),
    (
        "all-ready",
        Observed(deployment=dep(ready=2, updated=2)),
        {
            "Ready": ("True", "ReplicasReady", "2/2"),
            "Progressing": ("False", "RolloutComplete", ""),
            "Degraded": ("False", "AsExpected", ""),
        },
    ),
    (
        "stale-generation",
        Observed(deployment=dep(ready=2, updated=2, generation=2, observed=1)),
        {"Ready": ("False", "RolloutPending", "")},
    ),
    (
        "pending-gpu",
        Observed(
            deployment=dep(ready=1, updated=1),
            replica_sets=RS,
            pods=[pod("a", hash_="old"), pod("b", phase="Pending", conds=[UNSCHEDULABLE])],
        ),
        {
            "Progressing": (
                "True",
                "PodsPending",
                "1 new pod Pending: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu",
            )
        },
    ),
    (
        "crash-new-pod",
        Observed(
            deployment=dep(ready=2, updated=0),
            replica_sets=RS,
            pods=[pod("a", hash_="old"), pod("b", statuses=[CRASH])],
        ),
        {
            "Degraded": (
                "True",
                "CrashLoopBackOff",
                "tensor parallel size 2 does not divide the 3 attention heads",
            )
        },
    ),
    (
        "crash-old-pod-ignored",
        Observed(
            deployment=dep(ready=2, updated=2),
            replica_sets=RS,
            pods=[pod("a", hash_="old", statuses=[CRASH])],
        ),
        {"Degraded": ("False", "AsExpected", "")},
    ),
    (
        "cache-downloading",
        Observed(deployment=dep(), job={"status": {"active": 1}}, cache_requested=True),
        {"ModelCached": ("False", "Downloading", "")},
    ),
    (
        "cache-failed",
        Observed(
            deployment=dep(),
            cache_requested=True,
            job={
                "status": {"conditions": [{"type": "Failed", "status": "True", "message": "401 gated repo"}]}
            },
        ),
        {"ModelCached": ("False", "DownloadFailed", "401 gated repo")},
    ),
    (
        "cache-done",
        Observed(deployment=dep(), cache_requested=True, job={"status": {"succeeded": 1}}),
        {"ModelCached": ("True", "Downloaded", "")},
    ),
]


@pytest.mark.parametrize("observed, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_conditions(observed, expected):
    conds = {c["type"]: c for c in compute_conditions(observed, now=NOW)}
    for type_, (status, reason, message) in expected.items():
        assert (conds[type_]["status"], conds[type_]["reason"]) == (status, reason)
        assert message in conds[type_]["message"]
    assert ("ModelCached" in conds) == observed.cache_requested


def test_invalid_spec_is_stalled_and_not_ready_while_old_pods_serve():
    conds = {
        c["type"]: c
        for c in compute_conditions(
            Observed(deployment=dep(ready=2, updated=2)), invalid_message="unknown family 'x'", now=NOW
        )
    }
    assert (
        conds["InvalidSpec"]["status"] == "True" and conds["InvalidSpec"]["message"] == "unknown family 'x'"
    )
    # kstatus: Ready must not claim the broken spec is rolled out; Stalled says why; old pods keep serving.
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "InvalidSpec")
    assert "2/2 replicas ready" in conds["Ready"]["message"]
    assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == ("True", "InvalidSpec")
    assert conds["Reconciling"]["status"] == "False"


def test_refused_child_is_reported_with_its_own_reason():
    conds = {
        c["type"]: c
        for c in compute_conditions(
            Observed(deployment=dep(ready=2, updated=2)),
            invalid_message="refused by the API server: spec.template.spec.tolerations[0].operator: Unsupported",
            invalid_reason="RejectedByAPIServer",
            now=NOW,
        )
    }
    assert conds["InvalidSpec"]["reason"] == conds["Stalled"]["reason"] == "RejectedByAPIServer"
    assert "tolerations[0].operator" in conds["InvalidSpec"]["message"]


@pytest.mark.parametrize(
    "observed, ready, reconciling, stalled",
    [
        (Observed(deployment=dep(ready=2, updated=2)), "True", ("False", "Reconciled"), "False"),
        (Observed(deployment=dep(ready=1, updated=2)), "False", ("True", "ReplicasNotReady"), "False"),
        (Observed(deployment=dep(generation=2, observed=1)), "False", ("True", "RolloutPending"), "False"),
        (Observed(), "False", ("True", "DeploymentMissing"), "False"),
        (Observed(deployment=dep(replicas=0)), "False", ("False", "ScaledToZero"), "False"),
        (
            Observed(
                deployment=dep(ready=0, updated=2),
                job={"status": {"conditions": [{"type": "Failed", "status": "True", "message": "401"}]}},
                cache_requested=True,
            ),
            "False",
            ("False", "Stalled"),
            "True",
        ),
    ],
    ids=["rolled-out", "rolling", "controller-behind", "creating", "scaled-to-zero", "download-failed"],
)
def test_kstatus_conditions(observed, ready, reconciling, stalled):
    conds = {c["type"]: c for c in compute_conditions(observed, now=NOW)}
    assert conds["Ready"]["status"] == ready
    assert (conds["Reconciling"]["status"], conds["Reconciling"]["reason"]) == reconciling
    assert conds["Stalled"]["status"] == stalled


@pytest.mark.parametrize(
    "old, new_status, expected_time",
    [
        ([{"type": "Ready", "status": "True", "lastTransitionTime": EARLIER}], "True", EARLIER),
        ([{"type": "Ready", "status": "False", "lastTransitionTime": EARLIER}], "True", NOW),
        ([], "True", NOW),
    ],
)
def test_set_condition_keeps_time_unless_flipped(old, new_status, expected_time):
    new = {"type": "Ready", "status": new_status, "reason": "R", "message": ""}
    assert set_condition(old, new, NOW)["lastTransitionTime"] == expected_time


@pytest.mark.parametrize(
    "want, have, expected",
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": {"b": 1}}, {"a": {"b": 2}}, False),
        ({"l": [{"x": 1}]}, {"l": [{"x": 1, "default": True}]}, True),
        ({"l": [{"x": 1}]}, {"l": [{"x": 1}, {"x": 2}]}, False),
        ({"a": 1}, {}, False),
    ],
)
def test_is_subset(want, have, expected):
    assert is_subset(want, have) is expected


def _obj(kind, name, **spec):
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def test_plan_creates_updates_prunes_and_retains():
    desired = [_obj("Deployment", "d", replicas=3), _obj("Service", "d", port=80), _obj("ConfigMap", "c")]
    live = {
        ("Deployment", "d"): {**_obj("Deployment", "d", replicas=1), "status": {}},
        ("ConfigMap", "c"): _obj("ConfigMap", "c"),
        ("HorizontalPodAutoscaler", "d"): _obj("HorizontalPodAutoscaler", "d"),
        ("PersistentVolumeClaim", "d-model-cache"): _obj("PersistentVolumeClaim", "d-model-cache"),
    }
    plan = plan_changes(desired, live)
    assert [o["kind"] for o in plan.create] == ["Service"]
    assert [o["kind"] for o in plan.update] == ["Deployment"]
    assert plan.scaled == (1, 3)
    assert plan.delete == (("HorizontalPodAutoscaler", "d"),)
    assert plan.retain == (("PersistentVolumeClaim", "d-model-cache"),)
    assert plan_changes(desired[2:], {("ConfigMap", "c"): _obj("ConfigMap", "c")}).empty


def test_failed_attempts_of_a_finished_download_block_nothing():
    failed = {
        "metadata": {"name": "demo-download-a", "creationTimestamp": EARLIER},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "download",
                    "state": {
                        "terminated": {"exitCode": 1, "reason": "Error", "message": "connection reset"}
                    },
                }
            ],
        },
    }
    observed = Observed(
        deployment=dep(ready=0, updated=2),
        cache_requested=True,
        job={"status": {"succeeded": 1}},
        download_pods=[failed],
    )
    conds = {c["type"]: c for c in compute_conditions(observed, now=NOW)}
    assert conds["Ready"]["reason"] == "ReplicasNotReady"
    running = Observed(
        deployment=dep(), cache_requested=True, job={"status": {"active": 1}}, download_pods=[failed]
    )
    conds = {c["type"]: c for c in compute_conditions(running, now=NOW)}
    assert (conds["ModelCached"]["reason"], conds["Ready"]["reason"]) == ("Error", "Error")
    assert "connection reset" in conds["ModelCached"]["message"]


class _FakeKube:
    """Canned lists, as the API would answer them; records which kinds were listed."""

    def __init__(self, objects):
        self.objects, self.listed = objects, []

    def list(self, kind, namespace, labels, *, fields=None):
        self.listed.append(kind)
        return (
            [
                o
                for o in self.objects.get(kind, [])
                if all(o["metadata"]["labels"].get(k) == v for k, v in labels.items())
            ]
            if kind != "Event"
            else self.objects.get(kind, [])
        )


class _NoPods:
    """The operator's watch-fed cache of pods and ReplicaSets, empty."""

    def objects(self, kind, namespace, name):
        return []


def test_one_pass_reports_a_pending_pvc_with_its_event_message():
    from reranker_operator.reconcile import observe

    pvc = {"metadata": {"name": "demo-model-cache", "labels": {}}, "status": {"phase": "Pending"}}
    event = {
        "involvedObject": {"kind": "PersistentVolumeClaim", "name": "demo-model-cache"},
        "type": "Warning",
        "reason": "ProvisioningFailed",
        "message": 'storageclass.storage.k8s.io "standard-rwx" not found',
    }
    other = {**event, "involvedObject": {"kind": "PersistentVolumeClaim", "name": "someone-else"}}
    kube = _FakeKube({"Event": [event, other]})
    live = {("PersistentVolumeClaim", "demo-model-cache"): pvc, ("Job", "demo-download"): {"status": {}}}
    observed = observe(kube, _NoPods(), "demo", "team", live, cache_requested=True)
    assert observed.events == [event] and "Event" in kube.listed
    ready = {c["type"]: c for c in compute_conditions(observed, now=NOW)}["Ready"]
    assert ready["reason"] == "ProvisioningFailed" and "standard-rwx" in ready["message"]


def test_no_event_reads_while_nothing_waits_silently():
    from reranker_operator.reconcile import observe

    bound = {"metadata": {"name": "demo-model-cache", "labels": {}}, "status": {"phase": "Bound"}}
    kube = _FakeKube({})
    observe(
        kube,
        _NoPods(),
        "demo",
        "team",
        {("PersistentVolumeClaim", "demo-model-cache"): bound},
        cache_requested=True,
    )
    assert "Event" not in kube.listed


def test_a_mount_failure_that_cleared_long_ago_is_not_reported():
    """The kubelet refreshes a failing mount's Event every ~2 minutes; an old one is history, not the cause."""
    waiting_pod = {
        "metadata": {"name": "demo-a", "labels": {"pod-template-hash": "new"}},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "server", "state": {"waiting": {"reason": "ContainerCreating"}}}],
        },
    }

    def event(last):
        return {
            "involvedObject": {"kind": "Pod", "name": "demo-a"},
            "type": "Warning",
            "reason": "FailedMount",
            "message": 'MountVolume.SetUp failed for volume "api-key" : secret "k" not found',
            "lastTimestamp": last,
        }

    def ready(last):
        observed = Observed(deployment=dep(), replica_sets=RS, pods=[waiting_pod], events=[event(last)])
        return {c["type"]: c for c in compute_conditions(observed, now="2026-01-02T00:10:00Z")}["Ready"]

    assert ready("2026-01-02T00:09:00Z")["reason"] == "FailedMount"
    assert ready("2026-01-02T00:01:00Z")["reason"] == "ReplicasNotReady"
