"""The only module that writes to the Kubernetes API.

One table maps each kind the operator touches to its REST path; every call goes through
`kubernetes.client.ApiClient.call_api` with raw JSON in and out (no typed models: the renderers already
produce plain dicts, and skipping model (de)serialisation keeps a reconcile cheap). Reads of children come from
the watch-fed caches in `children.py`, never from here.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import kubernetes.client
import urllib3.exceptions

from reranker_operator import FIELD_MANAGER, GROUP, PLURAL, VERSION
from reranker_operator.render.labels import label_selector

REQUEST_TIMEOUT = 30  # seconds; kopf retries the whole pass on a timeout


@dataclass(frozen=True)
class Resource:
    """Where one kind lives in the API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        """The REST path of the collection (name None) or of one object."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name)}"
        if subresource is not None:
            base += f"/{subresource}"
        return base


# kind -> API. The operator writes the first group (its children), watches ReplicaSets and Pods, and reads
# Warning Events to explain a wait.
RESOURCES: dict[str, Resource] = {
    "Deployment": Resource("apps", "v1", "deployments"),
    "Service": Resource("", "v1", "services"),
    "ConfigMap": Resource("", "v1", "configmaps"),
    "HorizontalPodAutoscaler": Resource("autoscaling", "v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": Resource("policy", "v1", "poddisruptionbudgets"),
    "PersistentVolumeClaim": Resource("", "v1", "persistentvolumeclaims"),
    "Job": Resource("batch", "v1", "jobs"),
    "NetworkPolicy": Resource("networking.k8s.io", "v1", "networkpolicies"),
    "ServiceAccount": Resource("", "v1", "serviceaccounts"),
    "Role": Resource("rbac.authorization.k8s.io", "v1", "roles"),
    "RoleBinding": Resource("rbac.authorization.k8s.io", "v1", "rolebindings"),
    "ReplicaSet": Resource("apps", "v1", "replicasets"),
    "Pod": Resource("", "v1", "pods"),
    "Event": Resource("", "v1", "events"),
}

OWNER = Resource(GROUP, VERSION, PLURAL)

# The kinds the operator may create, hence the kinds it lists when pruning. Order = apply order:
# configuration before the workloads that mount it, the Deployment before what points at it.
OWNED_KINDS: tuple[str, ...] = (
    "ConfigMap",
    "PersistentVolumeClaim",
    "Job",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
)


def resource_for(kind: str) -> Resource:
    """The API of `kind`; a clear error for a kind the operator does not manage."""
    try:
        return RESOURCES[kind]
    except KeyError:
        raise ValueError(f"reranker-operator does not manage objects of kind {kind!r}") from None


class KubeClient:
    """Raw-JSON access to the API through the process-wide kubernetes client configuration.

    The ApiClient is created on first use, i.e. after kopf's login handler has loaded the credentials,
    and re-created when that configuration points at another server (a restarted operator in tests).
    """

    def __init__(self, api_client: kubernetes.client.ApiClient | None = None) -> None:
        self._fixed = api_client
        self._api: kubernetes.client.ApiClient | None = api_client
        self._host: str | None = None
        self._lock = threading.Lock()

    def _client(self) -> kubernetes.client.ApiClient:
        if self._fixed is not None:
            return self._fixed
        host = kubernetes.client.Configuration.get_default().host
        with self._lock:
            if self._api is None or host != self._host:
                self._api = kubernetes.client.ApiClient(kubernetes.client.Configuration.get_default_copy())
                self._host = host
            return self._api

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        api = self._client()
        method, url, headers, body, _ = api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = api.call_api(
            method, url, header_params=headers, body=body, _request_timeout=REQUEST_TIMEOUT
        )
        data = response.read()
        if not 200 <= response.status <= 299:
            raise kubernetes.client.ApiException(http_resp=response, body=data.decode("utf-8", "replace"))
        return json.loads(data) if data else {}

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: create or update in one call, owning exactly the fields in `manifest`."""
        meta = manifest["metadata"]
        res = resource_for(manifest["kind"])
        return self._call(
            "PATCH",
            res.path(meta.get("namespace"), meta["name"]),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=manifest,
            content_type="application/apply-patch+yaml",
        )

    def hand_over(self, manifest: dict[str, Any], field_manager: str) -> dict[str, Any]:
        """Server-side apply of `manifest` under another field manager (no force): shares or passes on fields."""
        meta = manifest["metadata"]
        return self._call(
            "PATCH",
            resource_for(manifest["kind"]).path(meta.get("namespace"), meta["name"]),
            query=[("fieldManager", field_manager)],
            body=manifest,
            content_type="application/apply-patch+yaml",
        )

    def scale(self, namespace: str, name: str, replicas: int) -> dict[str, Any]:
        """Set Deployment `namespace/name`'s replicas through its scale subresource, as the HPA and the router
        do: an update that takes no server-side-apply ownership of spec.replicas away from anyone's apply."""
        return self._call(
            "PATCH",
            resource_for("Deployment").path(namespace, name, "scale"),
            query=[("fieldManager", FIELD_MANAGER)],
            body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the status subresource of RerankerDeployment `namespace/name`."""
        return self._call(
            "PATCH",
            OWNER.path(namespace, name, "status"),
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    def server_version(self) -> str | None:
        """The API server's `major.minor` (GET /version), or None when it does not say."""
        try:
            info = self._call("GET", "/version")
        except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, ValueError):
            return None
        major, minor = str(info.get("major", "")), str(info.get("minor", "")).rstrip("+")
        return f"{major}.{minor}" if major.isdigit() and minor.isdigit() else None

    def list(
        self, kind: str, namespace: str, labels: dict[str, str], *, fields: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Objects of `kind` in `namespace` carrying all of `labels` (and matching the field selector `fields`)."""
        query = [("labelSelector", label_selector(labels))]
        if fields:
            query.append(("fieldSelector", label_selector(fields)))
        data = self._call("GET", resource_for(kind).path(namespace), query=query)
        items = data.get("items") or []
        for item in items:  # list items carry no kind/apiVersion on the wire
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", resource_for(kind).api_version)
        return items

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete one object (dependents in the background); False when it was already gone."""
        try:
            self._call(
                "DELETE",
                resource_for(kind).path(namespace, name),
                body={"propagationPolicy": "Background"},
                content_type="application/json",
            )
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True
