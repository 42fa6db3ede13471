"""Resource quantities as kube-apiserver stores them: parsed, then re-emitted in canonical string form.

Follows apimachinery `pkg/api/resource/quantity.go` (reference key Q): the value keeps its format (binary
suffix, decimal suffix or exponent) but is written with the largest suffix that keeps an integer mantissa,
so `1024Mi` reads back as `1Gi` and `0.5` as `500m`. CRs have no Quantity type: their strings stay verbatim
(docs "Extend the Kubernetes API with CustomResourceDefinitions").
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterator
from decimal import ROUND_UP, Decimal
from typing import Any

# The regular expression kube-apiserver names in its decoding error (quantity.go, splitREString).
UPSTREAM_PATTERN = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_GRAMMAR = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE]?)$")
_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_CONTEXT = decimal.Context(prec=60)  # far beyond int64 nano-units: no rounding while scaling


class QuantityError(ValueError):
    """Text that is not a Kubernetes quantity."""


def canonical_quantity(raw: Any, *, milli: bool = False) -> str:
    """The canonical string kube-apiserver stores for `raw` (a string or a JSON number).

    Parsing rounds up (away from zero) to 1n; `milli=True` also rounds up to 1m, as `SetDefaults_ResourceList`
    does for container requests and limits (pkg/apis/core/v1/defaults.go, key CD).
    """
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise QuantityError(f"invalid quantity {raw!r}")
    match = _GRAMMAR.match(str(raw))
    if not match:
        raise QuantityError(f"invalid quantity {raw!r}")
    with decimal.localcontext(_CONTEXT):
        number, suffix = Decimal(match.group(1)), match.group(2)
        if suffix in _BINARY[1:]:
            form, value = "binary", number * 1024 ** _BINARY.index(suffix)
        elif suffix[:1] in ("e", "E") and len(suffix) > 1:
            form, value = "exponent", number.scaleb(int(suffix[1:]))
        else:
            form, value = "decimal", number.scaleb(_DECIMAL[suffix])
        value = value.quantize(Decimal("1e-3" if milli else "1e-9"), rounding=ROUND_UP)
        if value == 0:
            return "0"
        if form == "binary" and abs(value) >= 1024 and value == value.to_integral_value():
            # The largest power of 1024 that divides the value; below 1024 binary falls back to decimal.
            mantissa, power = int(value), 0
            while power < len(_BINARY) - 1 and mantissa % 1024 == 0:
                mantissa, power = mantissa // 1024, power + 1
            return f"{mantissa}{_BINARY[power]}"
        sign, digits, exponent = value.normalize().as_tuple()
        mantissa = int("".join(map(str, digits))) * (-1 if sign else 1)
        while exponent % 3:  # decimal suffixes and remembered exponents step by 10^3
            mantissa, exponent = mantissa * 10, exponent - 1
        if form == "exponent" or exponent > 18:
            return f"{mantissa}e{exponent}" if exponent else str(mantissa)
        return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"


def _pod_specs(kind: str, obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = obj.get("spec") or {}
    if kind == "Pod":
        yield spec
    elif kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"):
        yield (spec.get("template") or {}).get("spec") or {}
    elif kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        yield (job.get("template") or {}).get("spec") or {}


def _quantity_maps(kind: str, obj: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, bool]]:
    """(map, key, milli) for every quantity-valued field of a built-in object (key Q, "Where")."""
    for pod in _pod_specs(kind, obj):
        for group in ("initContainers", "containers", "ephemeralContainers"):
            for container in pod.get(group) or ():
                for part in ("requests", "limits"):
                    values = (container.get("resources") or {}).get(part) or {}
                    yield from ((values, key, True) for key in values)
        for part in ("requests", "limits"):  # pod-level resources (beta since 1.34)
            values = (pod.get("resources") or {}).get(part) or {}
            yield from ((values, key, True) for key in values)
        for volume in pod.get("volumes") or ():
            empty_dir = volume.get("emptyDir")
            if isinstance(empty_dir, dict) and "sizeLimit" in empty_dir:
                yield empty_dir, "sizeLimit", False
    if kind == "PersistentVolumeClaim":
        for part in ("requests", "limits"):
            values = ((obj.get("spec") or {}).get("resources") or {}).get(part) or {}
            yield from ((values, key, False) for key in values)
        capacity = (obj.get("status") or {}).get("capacity") or {}
        yield from ((capacity, key, False) for key in capacity)
    if kind == "HorizontalPodAutoscaler" and obj.get("apiVersion") == "autoscaling/v2":
        for metric in (obj.get("spec") or {}).get("metrics") or ():
            for source in metric.values():
                target = source.get("target") if isinstance(source, dict) else None
                for key in ("value", "averageValue"):
                    if isinstance(target, dict) and key in target:
                        yield target, key, False
    if kind == "ResourceQuota":
        hard = (obj.get("spec") or {}).get("hard") or {}
        yield from ((hard, key, False) for key in hard)


def canonicalise_quantities(kind: str, obj: dict[str, Any]) -> list[tuple[str, Any]]:
    """Rewrite `obj`'s quantity fields in place; returns (field, value) for each malformed one."""
    bad = []
    for values, key, milli in _quantity_maps(kind, obj):
        if values[key] is None:
            continue
        try:
            values[key] = canonical_quantity(values[key], milli=milli)
        except QuantityError:
            bad.append((key, values[key]))
    return bad
