"""Defaulting of built-in kinds, as kube-apiserver does on every create and update.

Only the defaults that reference kube-apiserver-semantics.md §2 lists: `pkg/apis/core/v1/defaults.go` (key CD),
`pkg/apis/{apps/v1,autoscaling/v2,batch/v1,networking/v1}/defaults.go` (AD, HD, BD, ND) and what the REST
strategies set (DS, JS, SS). Values set by controllers (status, ReplicaSets) are not invented here.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

_SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
_next_ip = itertools.count(10)
MAX_INT32 = 2**31 - 1


def _image_pull_policy(image: str) -> str:
    # CD SetDefaults_Container + pkg/util/parsers: `latest` or no tag and no digest -> Always.
    name, _, digest = image.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    if digest and not tag:
        return "IfNotPresent"
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        probe.setdefault(key, value)
    http = probe.get("httpGet")
    if isinstance(http, dict):
        http.setdefault("path", "/")
        http.setdefault("scheme", "HTTP")


def _container(container: Any) -> None:
    if not isinstance(container, dict):
        return
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    if isinstance(container.get("image"), str):
        container.setdefault("imagePullPolicy", _image_pull_policy(container["image"]))
    container.setdefault("resources", {})  # a non-pointer struct: always serialised
    for port in container.get("ports") or ():
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(container.get(key))


def _volume(volume: Any) -> None:
    if not isinstance(volume, dict):
        return
    for source in ("secret", "configMap"):
        if isinstance(volume.get(source), dict):
            volume[source].setdefault("defaultMode", 0o644)  # 420
    if set(volume) <= {"name"}:
        volume["emptyDir"] = {}  # a volume without a source


def pod_template(template: Any) -> None:
    """Defaults of a pod template (not of a Pod: SetDefaults_Pod's extras are Pods-only)."""
    if not isinstance(template, dict):
        return
    spec = template.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or ():
            _container(container)
    for volume in spec.get("volumes") or ():
        _volume(volume)


def _deployment(obj: dict[str, Any]) -> None:
    # AD SetDefaults_Deployment.
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    pod_template(spec.get("template"))


def _service(obj: dict[str, Any]) -> None:
    # CD SetDefaults_Service; the cluster IP and IP families come from the registry (SS storage/alloc.go).
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or ():
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if port.get("targetPort") in (None, 0, ""):
                port["targetPort"] = port.get("port")
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        if not spec.get("clusterIP"):
            spec["clusterIP"] = str(_SERVICE_CIDR[next(_next_ip)])
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("ipFamilies", ["IPv4"])
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)


def _hpa(obj: dict[str, Any]) -> None:
    # HD SetDefaults_HorizontalPodAutoscaler and its behavior defaults.
    spec = obj.setdefault("spec", {})
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
            }
        ]
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):  # present, even empty: both directions are filled
        up = behavior.setdefault("scaleUp", {})
        up.setdefault("stabilizationWindowSeconds", 0)
        up.setdefault("selectPolicy", "Max")
        up.setdefault(
            "policies",
            [
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15},
            ],
        )
        down = behavior.setdefault("scaleDown", {})
        down.setdefault("selectPolicy", "Max")
        down.setdefault("policies", [{"type": "Percent", "value": 100, "periodSeconds": 15}])


def _job(obj: dict[str, Any]) -> None:
    # BD SetDefaults_Job; the selector and pod labels come from the registry (JS PrepareForCreate).
    spec = obj.setdefault("spec", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", MAX_INT32 if spec.get("backoffLimitPerIndex") is not None else 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("manualSelector", False)
    spec.setdefault(
        "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    template = spec.get("template")
    if isinstance(template, dict):
        template_labels = (template.get("metadata") or {}).get("labels") or {}
        meta = obj.setdefault("metadata", {})
        if not meta.get("labels") and template_labels:
            meta["labels"] = dict(template_labels)
        uid = meta.get("uid")
        if uid and not spec["manualSelector"]:
            name = meta.get("name")
            generated = {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
            template.setdefault("metadata", {}).setdefault("labels", {}).update(generated)
            spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    pod_template(template)


def _pvc(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def _network_policy(obj: dict[str, Any]) -> None:
    # ND SetDefaults_NetworkPolicy.
    spec = obj.setdefault("spec", {})
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for rule in (spec.get("ingress") or []) + (spec.get("egress") or []):
        for port in (rule or {}).get("ports") or ():
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


DEFAULTERS = {
    "Deployment": _deployment,
    "Service": _service,
    "HorizontalPodAutoscaler": _hpa,
    "Job": _job,
    "PersistentVolumeClaim": _pvc,
    "NetworkPolicy": _network_policy,
}


def apply_defaults(kind: str, obj: dict[str, Any]) -> None:
    """Fill `obj`'s defaults in place (kinds without a defaulter are left alone, e.g. ConfigMap, PDB)."""
    defaulter = DEFAULTERS.get(kind)
    if defaulter is not None:
        defaulter(obj)
