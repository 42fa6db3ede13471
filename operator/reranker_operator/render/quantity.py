"""Resource quantities as kube-apiserver stores them.

The API server parses every built-in quantity field (resources, sizeLimit, storage, HPA targets) and writes it
back in canonical form (`2` -> "2", `0.5` -> "500m", "1024Mi" -> "1Gi"; the rules of
k8s.io/apimachinery/pkg/api/resource/quantity.go). The operator renders that form, so what it reads back equals
what it wrote, and compares quantities by value (`same_quantity`) so a textual difference is never drift.
"""

from __future__ import annotations

import re
from decimal import ROUND_UP, Decimal, localcontext
from typing import Any

from kubernetes.utils import parse_quantity

_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_SYNTAX = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE]?)$")
_NANO, _MILLI = Decimal("1e-9"), Decimal("1e-3")


def canonical_quantity(raw: Any, *, resource_list: bool = False) -> str:
    """The string kube-apiserver stores for quantity `raw` (a string or a JSON number).

    `resource_list`: a value of container requests/limits, which defaulting also rounds up to 1m
    (SetDefaults_ResourceList). Raises ValueError for text that is no quantity.
    """
    match = _SYNTAX.match(str(raw))
    if match is None:
        raise ValueError(f"{raw!r} is not a Kubernetes quantity")
    number, suffix = match.groups()
    with localcontext() as ctx:
        ctx.prec = 60
        if suffix in _BINARY[1:]:
            form, value = "binary", Decimal(number) * 1024 ** _BINARY.index(suffix)
        elif suffix[:1] in ("e", "E"):
            form, value = "exponent", Decimal(number).scaleb(int(suffix[1:]))
        else:
            form, value = "decimal", Decimal(number).scaleb(_DECIMAL[suffix])
        # Quantities keep nano precision; the parser rounds up (away from zero).
        value = value.quantize(_MILLI if resource_list else _NANO, rounding=ROUND_UP)
        if value == 0:
            return "0"
        if form == "binary" and abs(value) >= 1024 and value == value.to_integral_value():
            return _binary(int(value))
        # Binary values that are not whole multiples of 1024 fall back to the decimal form.
        sign, digits, exponent = value.normalize().as_tuple()
        mantissa = int("".join(map(str, digits))) * (-1 if sign else 1)
        while exponent % 3:  # decimal suffixes step by 10^3
            mantissa, exponent = mantissa * 10, exponent - 1
        if form == "exponent" or exponent > 18:
            return f"{mantissa}e{exponent}" if exponent else str(mantissa)
        return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"


def _binary(value: int) -> str:
    step = 0
    while step < len(_BINARY) - 1 and value % 1024 == 0:
        value, step = value // 1024, step + 1
    return f"{value}{_BINARY[step]}"


def same_quantity(a: Any, b: Any) -> bool:
    """True when `a` and `b` are the same amount ("1Gi" and "1024Mi", 1 and "1000m")."""
    try:
        return parse_quantity(a) == parse_quantity(b)
    except (ValueError, TypeError):
        return False
