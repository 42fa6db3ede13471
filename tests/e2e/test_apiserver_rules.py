"""The emulator's kube-apiserver rules over HTTP (no operator): each test is a row of the checklist in
kube-apiserver-semantics.md, so that an operator bug that real clusters expose also fails against the emulator.

Uses its own emulator fixture: these calls are not the operator's and stay out of the RBAC golden file.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import NS
from .emulator import StampingEmulator, declare_resources  # conftest's kmock_options pick the class

pytestmark = pytest.mark.e2e

DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
SERVICES = f"/api/v1/namespaces/{NS}/services"
HPAS = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


@pytest.fixture()
def api(kmock) -> StampingEmulator:
    declare_resources(kmock)
    return kmock


async def call(
    api: StampingEmulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    **params: str,
) -> tuple[int, dict[str, Any]]:
    response = await api.request(
        method,
        path,
        params=params,
        data=None if body is None else json.dumps(body),
        headers={"Content-Type": content_type, "User-Agent": "rules-test/1.0"},
    )
    return response.status, await response.json()


async def apply(api, path: str, body: dict[str, Any], manager: str = "op", **params: str):
    return await call(
        api,
        "PATCH",
        f"{path}/{body['metadata']['name']}",
        body,
        content_type=APPLY,
        fieldManager=manager,
        **params,
    )


def deployment(name: str = "web", **spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    container = spec.pop("container", {"name": "server", "image": "repo/server:1.0"})
    pod = {"containers": [container], **spec.pop("pod", {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
            **spec,
        },
    }


# ---- quantities (key Q) -----------------------------------------------------------------------------


async def test_quantities_are_stored_canonical_and_crs_verbatim(api):
    container = {
        "name": "server",
        "image": "repo/server:1.0",
        "resources": {
            "requests": {"cpu": 0.5, "memory": "1024Mi"},
            "limits": {"memory": "1.5Gi", "nvidia.com/gpu": 1},
        },
    }
    status, stored = await apply(api, DEPLOYMENTS, deployment(container=container))
    assert status == 200, stored
    resources = stored["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "1536Mi", "nvidia.com/gpu": "1"},
    }
    rd = {
        "apiVersion": "reranker.dev/v1alpha1",
        "kind": "RerankerDeployment",
        "metadata": {"name": "rd", "namespace": NS},
        "spec": {"model": {"cache": {"size": "1024Mi"}}, "gpus": 1},
    }
    status, stored = await call(
        api, "POST", f"/apis/reranker.dev/v1alpha1/namespaces/{NS}/rerankerdeployments", rd
    )
    assert status == 200, stored
    assert stored["spec"] == rd["spec"]


async def test_malformed_quantity_is_a_bad_request(api):
    container = {"name": "server", "image": "x:1", "resources": {"limits": {"memory": "5Gb"}}}
    status, error = await apply(api, DEPLOYMENTS, deployment(container=container))
    assert status == 400
    assert error["reason"] == "BadRequest"
    assert (
        "cannot be handled as a Deployment: quantities must match the regular expression" in error["message"]
    )
    assert api.read("apps/v1/deployments", NS, "web") is None


# ---- defaulting (keys AD, CD, HD, BD, SS) -----------------------------------------------------------


async def test_deployment_defaults(api):
    probe = {"httpGet": {"port": 8000}}
    container = {
        "name": "server",
        "image": "repo/server",
        "ports": [{"containerPort": 8000}],
        "readinessProbe": probe,
    }
    status, stored = await apply(api, DEPLOYMENTS, deployment(container=container))
    assert status == 200, stored
    spec = stored["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (10, 600)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Always"
    assert pod["dnsPolicy"] == "ClusterFirst"
    assert pod["schedulerName"] == "default-scheduler"
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["securityContext"] == {}
    server = pod["containers"][0]
    assert server["terminationMessagePath"] == "/dev/termination-log"
    assert server["terminationMessagePolicy"] == "File"
    assert server["imagePullPolicy"] == "Always"  # no tag
    assert server["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
    assert server["resources"] == {}
    assert server["readinessProbe"] == {
        "httpGet": {"port": 8000, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert stored["metadata"]["generation"] == 1


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("repo/x", "Always"),
        ("repo/x:latest", "Always"),
        ("repo/x:1.0", "IfNotPresent"),
        ("registry:5000/x@sha256:" + "a" * 64, "IfNotPresent"),
    ],
)
async def test_image_pull_policy_default(api, image, policy):
    status, stored = await apply(api, DEPLOYMENTS, deployment(container={"name": "c", "image": image}))
    assert status == 200, stored
    assert stored["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == policy


async def test_service_defaults_and_cluster_ip_kept(api):
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8000}]},
    }
    status, stored = await apply(api, SERVICES, service)
    assert status == 200, stored
    spec = stored["spec"]
    assert (spec["type"], spec["sessionAffinity"], spec["internalTrafficPolicy"]) == (
        "ClusterIP",
        "None",
        "Cluster",
    )
    assert spec["ports"] == [{"name": "http", "port": 8000, "protocol": "TCP", "targetPort": 8000}]
    assert spec["clusterIPs"] == [spec["clusterIP"]] and spec["ipFamilies"] == ["IPv4"]
    assert "generation" not in stored["metadata"]
    _, again = await apply(api, SERVICES, service)
    assert again["spec"]["clusterIP"] == spec["clusterIP"]
    status, error = await call(
        api, "PATCH", f"{SERVICES}/web", {"spec": {"clusterIP": "10.0.0.1"}}, content_type=MERGE
    )
    assert status == 422 and error["details"]["causes"][0]["field"] == "spec.clusterIPs[0]"


async def test_hpa_behavior_is_filled_only_when_present(api):
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "maxReplicas": 4,
        },
    }
    _, stored = await apply(api, HPAS, hpa)
    assert stored["spec"]["minReplicas"] == 1
    assert stored["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
        }
    ]
    assert "behavior" not in stored["spec"]
    hpa["spec"]["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": 60}}
    _, stored = await apply(api, HPAS, hpa)
    behavior = stored["spec"]["behavior"]
    assert behavior["scaleDown"] == {
        "stabilizationWindowSeconds": 60,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert len(behavior["scaleUp"]["policies"]) == 2


async def test_job_defaults_selector_and_restart_policy(api):
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "dl", "namespace": NS},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}},
    }
    status, error = await apply(api, JOBS, job)
    assert status == 422
    assert error["details"]["causes"][0]["field"] == "spec.template.spec.restartPolicy"
    job["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    status, stored = await apply(api, JOBS, job)
    assert status == 200, stored
    spec = stored["spec"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (1, 1, 6)
    assert (spec["completionMode"], spec["suspend"], spec["podReplacementPolicy"]) == (
        "NonIndexed",
        False,
        "TerminatingOrFailed",
    )
    uid = stored["metadata"]["uid"]
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert spec["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "dl"
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "x:2"
    status, error = await apply(api, JOBS, job)
    assert status == 422
    assert "spec.template: Invalid value" in error["message"] and "field is immutable" in error["message"]


# ---- server-side apply and managedFields (keys SSA, MF) ------------------------------------------------


async def test_apply_twice_is_a_no_op(api):
    _, first = await apply(api, DEPLOYMENTS, deployment(replicas=2))
    _, second = await apply(api, DEPLOYMENTS, deployment(replicas=2))
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    entry = first["metadata"]["managedFields"][0]
    assert (entry["manager"], entry["operation"], entry["fieldsType"]) == ("op", "Apply", "FieldsV1")
    assert entry["fieldsV1"]["f:spec"]["f:replicas"] == {}
    assert "f:revisionHistoryLimit" not in entry["fieldsV1"]["f:spec"]  # defaults are nobody's


async def test_omitted_field_is_removed_and_defaulted(api):
    await apply(api, DEPLOYMENTS, deployment(replicas=3))
    _, stored = await apply(api, DEPLOYMENTS, deployment())
    assert stored["spec"]["replicas"] == 1  # the applier was its only owner


async def test_scale_then_apply_conflicts_unless_forced(api):
    await apply(api, DEPLOYMENTS, deployment(replicas=3))
    status, scale = await call(
        api,
        "PATCH",
        f"{DEPLOYMENTS}/web/scale",
        {"spec": {"replicas": 5}},
        content_type=MERGE,
        fieldManager="kube-controller-manager",
    )
    assert status == 200 and scale["kind"] == "Scale" and scale["spec"]["replicas"] == 5
    _, got = await call(api, "GET", f"{DEPLOYMENTS}/web/scale")
    assert got["status"]["selector"] == "app=web"
    assert api.managed_fields("apps/v1/deployments", NS, "web")["kube-controller-manager"] == {
        ".spec.replicas"
    }

    status, error = await apply(api, DEPLOYMENTS, deployment(replicas=3))
    assert status == 409
    assert error["reason"] == "Conflict"
    assert error["message"].startswith(
        'Apply failed with 1 conflict: conflict with "kube-controller-manager" with subresource "scale" using apps/v1:'
    )
    assert error["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "kube-controller-manager" with subresource "scale"',
            "field": ".spec.replicas",
        }
    ]
    assert api.read("apps/v1/deployments", NS, "web")["spec"]["replicas"] == 5

    status, stored = await apply(api, DEPLOYMENTS, deployment(replicas=3), force="true")
    assert status == 200 and stored["spec"]["replicas"] == 3
    assert "kube-controller-manager" not in api.managed_fields("apps/v1/deployments", NS, "web")


async def test_replicas_handed_over_to_a_private_manager_survive(api):
    # docs "Server-Side Apply", "Transferring ownership": apply replicas under a second manager, then drop them.
    await apply(api, DEPLOYMENTS, deployment(replicas=3))
    handover = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 3},
    }
    status, _ = await apply(api, DEPLOYMENTS, handover, manager="handover-to-hpa")
    assert status == 200
    _, stored = await apply(api, DEPLOYMENTS, deployment())
    assert stored["spec"]["replicas"] == 3
    await api.scale("apps/v1/deployments", NS, "web", 4)
    owners = api.managed_fields("apps/v1/deployments", NS, "web")
    assert "handover-to-hpa" not in owners  # owns nothing any more, so it is gone
    assert owners["kube-controller-manager"] == {".spec.replicas"}


async def test_keyed_lists_merge_per_manager(api):
    env_a = {"name": "server", "image": "x:1", "env": [{"name": "A", "value": "1"}]}
    env_b = {"name": "server", "image": "x:1", "env": [{"name": "B", "value": "2"}]}
    await apply(api, DEPLOYMENTS, deployment(container=env_a), manager="one")
    _, stored = await apply(api, DEPLOYMENTS, deployment(container=env_b), manager="two")
    env = stored["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    # Tolerations are atomic: the second applier's list replaces the first's, and a different value conflicts.
    one = deployment(container=env_a, pod={"tolerations": [{"key": "a", "operator": "Exists"}]})
    two = deployment(container=env_b, pod={"tolerations": [{"key": "b", "operator": "Exists"}]})
    await apply(api, DEPLOYMENTS, one, manager="one")
    status, error = await apply(api, DEPLOYMENTS, two, manager="two")
    assert status == 409 and error["details"]["causes"][0]["field"] == ".spec.template.spec.tolerations"


async def test_updates_take_ownership_of_what_they_change(api):
    await apply(api, DEPLOYMENTS, deployment(replicas=2))
    status, _ = await call(api, "PATCH", f"{DEPLOYMENTS}/web", {"spec": {"replicas": 4}}, content_type=MERGE)
    assert status == 200
    owners = api.managed_fields("apps/v1/deployments", NS, "web")
    assert owners["rules-test"] == {".spec.replicas"}  # manager from the user agent
    assert ".spec.replicas" not in owners["op"]
    assert "app" in json.dumps(api.read("apps/v1/deployments", NS, "web")["metadata"]["managedFields"])


async def test_put_replaces_and_takes_ownership(api):
    _, stored = await apply(api, DEPLOYMENTS, deployment(replicas=2))
    body = {k: v for k, v in stored.items() if k != "status"}
    body["spec"]["replicas"] = 5
    status, replaced = await call(api, "PUT", f"{DEPLOYMENTS}/web", body, fieldManager="kubectl-edit")
    assert status == 200, replaced
    assert replaced["spec"]["replicas"] == 5 and replaced["metadata"]["generation"] == 2
    assert api.managed_fields("apps/v1/deployments", NS, "web")["kubectl-edit"] == {".spec.replicas"}


# ---- validation (keys VAL, UV, OM, ERR) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (
            {"pod": {"tolerations": [{"key": "gpu", "operator": "Bogus"}]}},
            "spec.template.spec.tolerations[0].operator",
            "FieldValueNotSupported",
        ),
        (
            {"container": {"name": "c", "image": "x:1", "env": [{"name": "A=B", "value": "1"}]}},
            "spec.template.spec.containers[0].env[0].name",
            "FieldValueInvalid",
        ),
        (
            {"container": {"name": "c", "image": "x:1", "ports": [{"containerPort": 70000}]}},
            "spec.template.spec.containers[0].ports[0].containerPort",
            "FieldValueInvalid",
        ),
        (
            {
                "container": {
                    "name": "c",
                    "image": "x:1",
                    "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
                }
            },
            "spec.template.spec.containers[0].resources.requests",
            "FieldValueInvalid",
        ),
        (
            {"container": {"name": "Bad_Name", "image": "x:1"}},
            "spec.template.spec.containers[0].name",
            "FieldValueInvalid",
        ),
    ],
    ids=["toleration-operator", "env-name", "container-port", "requests-above-limits", "container-name"],
)
async def test_invalid_children_get_422_with_the_field(api, change, field, reason):
    status, error = await apply(api, DEPLOYMENTS, deployment(**change))
    assert status == 422, error
    assert error["kind"] == "Status" and error["reason"] == "Invalid"
    assert error["message"].startswith('Deployment.apps "web" is invalid: ' + field)
    assert error["details"]["kind"] == "Deployment" and error["details"]["group"] == "apps"
    cause = error["details"]["causes"][0]
    assert (cause["field"], cause["reason"]) == (field, reason)
    assert api.read("apps/v1/deployments", NS, "web") is None


async def test_invalid_metadata_and_schema_errors(api):
    body = deployment()
    body["metadata"]["annotations"] = {"bad key!": "x"}
    status, error = await apply(api, DEPLOYMENTS, body)
    assert status == 422 and error["details"]["causes"][0]["field"] == "metadata.annotations"
    body = deployment()
    del body["spec"]["selector"]
    status, error = await apply(api, DEPLOYMENTS, body)
    assert status == 422
    assert {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.selector"} in error[
        "details"
    ]["causes"]
    status, error = await apply(api, DEPLOYMENTS, deployment(replicas="3"))
    assert status == 400 and "cannot be handled as a Deployment" in error["message"]


async def test_selector_is_immutable(api):
    await apply(api, DEPLOYMENTS, deployment())
    patch = {
        "spec": {
            "selector": {"matchLabels": {"app": "web", "tier": "x"}},
            "template": {"metadata": {"labels": {"app": "web", "tier": "x"}}},
        }
    }
    status, error = await call(api, "PATCH", f"{DEPLOYMENTS}/web", patch, content_type=MERGE)
    assert (
        status == 422
        and "spec.selector: Invalid value" in error["message"]
        and "field is immutable" in error["message"]
    )


async def storage_class(api, name: str, expandable: bool) -> None:
    await api.put_object(
        "storage.k8s.io/v1/storageclasses",
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": "example.com/csi",
            "allowVolumeExpansion": expandable,
        },
    )


async def test_pending_claim_cannot_be_resized(api):
    await storage_class(api, "expandable", True)
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "cache", "namespace": NS},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "expandable",
            "resources": {"requests": {"storage": "10Gi"}},
        },
    }
    path = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
    status, stored = await apply(api, path, pvc)
    assert status == 200 and stored["status"] == {"phase": "Pending"}
    assert stored["spec"]["volumeMode"] == "Filesystem"
    pvc["spec"]["resources"]["requests"]["storage"] = "20Gi"
    status, error = await apply(api, path, pvc)
    assert status == 422 and error["details"]["causes"][0]["reason"] == "FieldValueForbidden"
    await api.edit_object(
        "v1/persistentvolumeclaims", NS, "cache", {"status": {"phase": "Bound"}}, subresource="status"
    )
    status, stored = await apply(api, path, pvc)
    assert status == 200 and stored["spec"]["resources"]["requests"]["storage"] == "20Gi"
    pvc["spec"]["resources"]["requests"]["storage"] = "5Gi"
    status, error = await apply(api, path, pvc)
    assert status == 422 and error["details"]["causes"][0]["field"] == "spec.resources.requests.storage"
    pvc["spec"]["resources"]["requests"]["storage"] = "20Gi"
    pvc["spec"]["accessModes"] = ["ReadWriteMany"]
    status, error = await apply(api, path, pvc)
    assert status == 422 and error["details"]["causes"][0]["field"] == "spec"


@pytest.mark.parametrize("class_name", ["fixed", "missing", None])
async def test_claim_grows_only_on_an_expandable_storage_class(api, class_name):
    await storage_class(api, "fixed", False)
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "cache", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
    }
    if class_name:
        pvc["spec"]["storageClassName"] = class_name
    path = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
    await apply(api, path, pvc)
    await api.edit_object(
        "v1/persistentvolumeclaims", NS, "cache", {"status": {"phase": "Bound"}}, subresource="status"
    )
    pvc["spec"]["resources"]["requests"]["storage"] = "20Gi"
    status, error = await apply(api, path, pvc)
    assert status == 403 and error["reason"] == "Forbidden"
    assert "storageclass that provisions the pvc must support resize" in error["message"]


# ---- generation, status, garbage collection (keys DS, CRS, GC) ----------------------------------------


async def test_generation_follows_spec_and_annotations_not_labels_or_status(api):
    _, stored = await apply(api, DEPLOYMENTS, deployment())
    path = f"{DEPLOYMENTS}/web"
    _, stored = await call(api, "PATCH", path, {"metadata": {"labels": {"x": "1"}}}, content_type=MERGE)
    assert stored["metadata"]["generation"] == 1
    _, stored = await call(api, "PATCH", path, {"metadata": {"annotations": {"x": "1"}}}, content_type=MERGE)
    assert stored["metadata"]["generation"] == 2
    _, stored = await call(api, "PATCH", f"{path}/status", {"status": {"replicas": 1}}, content_type=MERGE)
    assert stored["metadata"]["generation"] == 2 and stored["status"] == {"replicas": 1}
    _, stored = await call(
        api, "PATCH", path, {"spec": {"replicas": 2}, "status": {"replicas": 9}}, content_type=MERGE
    )
    assert stored["metadata"]["generation"] == 3 and stored["status"] == {"replicas": 1}


async def test_create_clears_status_of_builtins(api):
    body = {**deployment(), "status": {"readyReplicas": 3}}
    status, stored = await call(api, "POST", DEPLOYMENTS, body)
    assert status == 200 and "status" not in stored


async def test_garbage_collection_by_owner_references(api):
    _, owner = await call(api, "POST", CONFIGMAPS, {"metadata": {"name": "owner"}, "data": {}})
    _, other = await call(api, "POST", CONFIGMAPS, {"metadata": {"name": "other"}, "data": {}})

    def ref(obj):
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"],
        }

    await apply(
        api,
        DEPLOYMENTS,
        {**deployment("child"), "metadata": {"name": "child", "ownerReferences": [ref(owner)]}},
    )
    await call(
        api, "POST", CONFIGMAPS, {"metadata": {"name": "shared", "ownerReferences": [ref(owner), ref(other)]}}
    )
    status, _ = await call(api, "DELETE", f"{CONFIGMAPS}/owner", {"propagationPolicy": "Background"})
    assert status == 200
    assert api.read("apps/v1/deployments", NS, "child") is None
    shared = api.read("v1/configmaps", NS, "shared")
    assert shared["metadata"]["ownerReferences"] == [ref(other)]  # still owned by `other`

    await apply(
        api,
        DEPLOYMENTS,
        {**deployment("kept"), "metadata": {"name": "kept", "ownerReferences": [ref(other)]}},
    )
    await call(api, "DELETE", f"{CONFIGMAPS}/other", {"propagationPolicy": "Orphan"})
    assert api.read("apps/v1/deployments", NS, "kept") is not None
