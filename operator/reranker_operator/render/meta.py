"""Object metadata shared by every renderer."""

from __future__ import annotations

from typing import Any

from reranker_operator.render.labels import common_labels, owner_reference


def object_meta(
    obj_name: str,
    namespace: str,
    owner: str,
    component: str,
    *,
    uid: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """metadata for a child named `obj_name` of the RerankerDeployment `owner` (ownerReference when uid)."""
    meta: dict[str, Any] = {
        "name": obj_name,
        "namespace": namespace,
        "labels": common_labels(owner, component),
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    if uid:
        meta["ownerReferences"] = [owner_reference(owner, uid)]
    return meta
