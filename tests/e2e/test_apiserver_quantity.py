"""The emulator's quantity canonicaliser against the reference table (kube-apiserver-semantics.md §1, key Q)."""

from __future__ import annotations

import pytest
from kubernetes.utils import parse_quantity

from .apiserver.quantity import QuantityError, canonical_quantity, canonicalise_quantities

# (written, read back) rows of the reference table, plus the rounding rules of the bullet list below it.
TABLE = [
    ("2", "2"),
    (2, "2"),
    ("0.5", "500m"),
    (0.5, "500m"),
    ("0.1", "100m"),
    ("1000m", "1"),
    ("1000M", "1G"),
    ("1000", "1k"),
    ("1500", "1500"),
    ("1e3", "1e3"),
    (1e3, "1k"),  # json.dumps(1e3) sends 1000.0
    ("1024Mi", "1Gi"),
    ("1.5Gi", "1536Mi"),
    ("2000Mi", "2000Mi"),
    ("0.5Gi", "512Mi"),
    ("0.5Ki", "512"),
    ("1.1Mi", "1153433600m"),
    ("0", "0"),
    ("-1.5", "-1500m"),
    ("30Gi", "30Gi"),
    ("24Gi", "24Gi"),
    ("4", "4"),
    ("1E", "1E"),
]


@pytest.mark.parametrize(("written", "stored"), TABLE, ids=[repr(w) for w, _ in TABLE])
def test_canonical_form(written, stored):
    assert canonical_quantity(written) == stored
    # Same value, as the kubernetes client reads it.
    assert parse_quantity(stored) == parse_quantity(
        written if not isinstance(written, float) else str(written)
    )


def test_rounding_is_up_to_nano_and_for_resource_lists_to_milli():
    assert canonical_quantity("0.0001n") == "1n"
    assert canonical_quantity("-0.0001n") == "-1n"  # away from zero
    assert canonical_quantity("0.1m", milli=True) == "1m"
    assert canonical_quantity("0.1m") == "100u"


@pytest.mark.parametrize("bad", ["5Gb", "1.2.3", "", "abc", "1 Gi", True, None, [1]])
def test_malformed_is_refused(bad):
    with pytest.raises(QuantityError):
        canonical_quantity(bad)


def test_deployment_fields_are_rewritten_in_place():
    container = {"name": "c", "resources": {"requests": {"cpu": 0.5}, "limits": {"nvidia.com/gpu": 2}}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "spec": {
            "template": {
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2048Mi"}}],
                }
            }
        },
    }
    assert canonicalise_quantities("Deployment", deployment) == []
    assert container["resources"] == {"requests": {"cpu": "500m"}, "limits": {"nvidia.com/gpu": "2"}}
    assert deployment["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == "2Gi"


def test_hpa_targets_and_pvc_storage():
    hpa = {
        "apiVersion": "autoscaling/v2",
        "spec": {
            "metrics": [
                {"type": "Pods", "pods": {"metric": {"name": "x"}, "target": {"averageValue": "1000m"}}},
                {"type": "Resource", "resource": {"name": "cpu", "target": {"averageUtilization": 80}}},
            ]
        },
    }
    canonicalise_quantities("HorizontalPodAutoscaler", hpa)
    assert hpa["spec"]["metrics"][0]["pods"]["target"] == {"averageValue": "1"}
    assert hpa["spec"]["metrics"][1]["resource"]["target"] == {"averageUtilization": 80}
    pvc = {"spec": {"resources": {"requests": {"storage": "1024Gi"}}}}
    canonicalise_quantities("PersistentVolumeClaim", pvc)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Ti"
    assert canonicalise_quantities(
        "PersistentVolumeClaim", {"spec": {"resources": {"requests": {"storage": "5Gb"}}}}
    ) == [("storage", "5Gb")]
