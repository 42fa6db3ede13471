"""Labels and owner references shared by every child object (names as in docs/design.md)."""

from __future__ import annotations

from reranker_operator import API_VERSION, KIND, MANAGED_BY

APP_NAME = "reranker"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
SERVER_COMPONENT = "server"
ROUTER_COMPONENT = "router"


def common_labels(name: str, component: str) -> dict[str, str]:
    """Labels on every child of the RerankerDeployment `name`; pruning selects managed-by + instance."""
    return {
        NAME_LABEL: APP_NAME,
        INSTANCE_LABEL: name,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGED_BY,
        PART_OF_LABEL: MANAGED_BY,
    }


def selector_labels(name: str) -> dict[str, str]:
    """Labels selecting the server pods only (the component keeps the download Job's pod out of it)."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: name, COMPONENT_LABEL: SERVER_COMPONENT}


def owned_labels() -> dict[str, str]:
    """The labels every child (and every pod of a child) carries: the operator watches exactly these."""
    return {MANAGED_BY_LABEL: MANAGED_BY}


def label_selector(labels: dict[str, str]) -> str:
    """`{"a": "1", "b": "2"}` -> `a=1,b=2` (an equality-based label selector)."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def router_selector_labels(name: str) -> dict[str, str]:
    """Labels selecting the router pods of the RerankerDeployment `name`."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: name, COMPONENT_LABEL: ROUTER_COMPONENT}


def selector_string(name: str) -> str:
    """`selector_labels` as a label-selector string, for status.selector (the scale subresource)."""
    return label_selector(selector_labels(name))


def owner_reference(name: str, uid: str) -> dict[str, object]:
    """The controller ownerReference pointing at the RerankerDeployment, so children are garbage-collected."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
