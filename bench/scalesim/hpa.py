"""The HorizontalPodAutoscaler's replica calculation, as Kubernetes documents and implements it.

Follows the autoscaling/v2 documentation ("Algorithm details", "Configurable scaling behavior") and the
controller's code paths for a `Pods` metric with an `AverageValue` target:

1. per-pod values -> `calc_plain_metric_replicas`: ratio = average / target; within the 10 % tolerance keep the
   current count; pods without a metric count as 0 on a scale-up and as exactly the target on a scale-down,
   and a recomputed ratio that flips direction or falls within tolerance keeps the current count; Pending and
   terminating pods are ignored;
2. `stabilize`: the highest recommendation of the scale-down window and the lowest of the scale-up window bound
   the change;
3. `rate_limit`: the scaling policies over their periods (Pods / Percent, selectPolicy Max / Min / Disabled),
   then minReplicas / maxReplicas.

Only the parts the operator's HPA uses are modelled (one Pods metric); times are plain seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

TOLERANCE = 0.1
# autoscaling/v2 defaults for a behavior that is absent or partly set.
DEFAULT_SCALE_UP = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15},
        {"type": "Pods", "value": 4, "periodSeconds": 15},
    ],
}
DEFAULT_SCALE_DOWN = {
    "stabilizationWindowSeconds": 300,
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a float ("64", "500m", "1k", "2Ki")."""
    if isinstance(value, int | float):
        return float(value)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * suffixes[suffix]
    return float(value)


def _rules(given: dict | None, default: dict) -> dict:
    rules = dict(default)
    rules.update({key: value for key, value in (given or {}).items() if value is not None})
    return rules


@dataclass
class ScaleEvent:
    time: float
    change: int  # replicas added (> 0) or removed (< 0), as a positive count in the matching list


@dataclass
class HpaController:
    """The state one HPA keeps between syncs: past recommendations and past scale events."""

    min_replicas: int
    max_replicas: int
    target: float
    metric: str
    scale_up: dict
    scale_down: dict
    tolerance: float = TOLERANCE
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[ScaleEvent] = field(default_factory=list)
    down_events: list[ScaleEvent] = field(default_factory=list)

    @classmethod
    def from_manifest(cls, hpa: dict[str, Any]) -> HpaController:
        """The controller for a rendered `autoscaling/v2` HPA manifest with one Pods/AverageValue metric."""
        spec = hpa["spec"]
        (metric,) = spec["metrics"]
        behavior = spec.get("behavior") or {}
        return cls(
            min_replicas=spec.get("minReplicas", 1),
            max_replicas=spec["maxReplicas"],
            target=parse_quantity(metric["pods"]["target"]["averageValue"]),
            metric=metric["pods"]["metric"]["name"],
            scale_up=_rules(behavior.get("scaleUp"), DEFAULT_SCALE_UP),
            scale_down=_rules(behavior.get("scaleDown"), DEFAULT_SCALE_DOWN),
        )

    # -- step 1: the metric -------------------------------------------------------------------------------
    def _within(self, ratio: float) -> bool:
        # The controller's form (1.33+): bounds inclusive, so 0.9 and 1.1 are inside a 10 % tolerance.
        return 1.0 - self.tolerance <= ratio <= 1.0 + self.tolerance

    def calc_plain_metric_replicas(self, current: int, values: dict[str, float], missing: int) -> int:
        """Replicas the metric asks for: `values` of the pods that report it, `missing` pods that do not."""
        if not values:
            return current  # the controller reports an error and leaves the scale alone
        # Kubernetes works in integer milli-units (Quantity.MilliValue) and averages with integer division.
        target = round(self.target * 1000)
        milli = [round(v * 1000) for v in values.values()]
        ratio = (sum(milli) // len(milli)) / target
        if missing == 0:
            if self._within(ratio):
                return current
            return math.ceil(ratio * len(milli))
        filled = milli + [target if ratio < 1.0 else 0] * missing
        new_ratio = (sum(filled) // len(filled)) / target
        if self._within(new_ratio) or (ratio > 1.0 > new_ratio) or (ratio < 1.0 < new_ratio):
            return current
        proposed = math.ceil(new_ratio * len(filled))
        if (new_ratio < 1.0 and proposed > current) or (new_ratio > 1.0 and proposed < current):
            return current
        return proposed

    # -- step 2: stabilization ----------------------------------------------------------------------------
    def stabilize(self, now: float, current: int, desired: int) -> int:
        """Bound `desired` by the recommendations of the stabilization windows, then record it."""
        up_cutoff = now - self.scale_up["stabilizationWindowSeconds"]
        down_cutoff = now - self.scale_down["stabilizationWindowSeconds"]
        up, down = desired, desired
        for when, recommendation in self.recommendations:
            if when > up_cutoff:
                up = min(up, recommendation)
            if when > down_cutoff:
                down = max(down, recommendation)
        keep_after = min(up_cutoff, down_cutoff)
        self.recommendations = [(when, rec) for when, rec in self.recommendations if when >= keep_after]
        self.recommendations.append((now, desired))
        return min(max(current, up), down)

    # -- step 3: policies and bounds ----------------------------------------------------------------------
    @staticmethod
    def _changed_in(events: list[ScaleEvent], now: float, period: float) -> int:
        return sum(event.change for event in events if event.time > now - period)

    def _replicas_at_period_start(self, now: float, current: int, period: float) -> int:
        """The replica count `period` seconds ago, from the scale events since (what each policy limits from)."""
        return (
            current
            - self._changed_in(self.up_events, now, period)
            + self._changed_in(self.down_events, now, period)
        )

    def scale_up_limit(self, now: float, current: int) -> int:
        """Most replicas the scale-up policies allow now."""
        rules = self.scale_up
        if rules["selectPolicy"] == "Disabled":
            return current
        pick = min if rules["selectPolicy"] == "Min" else max
        result: int | None = None
        for policy in rules["policies"]:
            start = self._replicas_at_period_start(now, current, policy["periodSeconds"])
            if policy["type"] == "Pods":
                proposed = start + policy["value"]
            else:
                proposed = math.ceil(start * (1 + policy["value"] / 100))
            result = proposed if result is None else pick(result, proposed)
        return current if result is None else result

    def scale_down_limit(self, now: float, current: int) -> int:
        """Fewest replicas the scale-down policies allow now."""
        rules = self.scale_down
        if rules["selectPolicy"] == "Disabled":
            return current
        # The policy with the smallest change ("Min") leaves the most replicas.
        pick = max if rules["selectPolicy"] == "Min" else min
        result: int | None = None
        for policy in rules["policies"]:
            start = self._replicas_at_period_start(now, current, policy["periodSeconds"])
            if policy["type"] == "Pods":
                proposed = start - policy["value"]
            else:
                proposed = int(start * (1 - policy["value"] / 100))
            result = proposed if result is None else pick(result, proposed)
        return current if result is None else result

    def rate_limit(self, now: float, current: int, desired: int) -> int:
        """Apply the scaling policies and minReplicas/maxReplicas to a stabilized recommendation."""
        if desired > current:
            limit = max(self.scale_up_limit(now, current), current)
            return min(desired, self.max_replicas, limit)
        if desired < current:
            limit = min(self.scale_down_limit(now, current), current)
            return max(desired, self.min_replicas, limit)
        return desired

    def record(self, now: float, before: int, after: int) -> None:
        """Remember a scale change for the policies' periods."""
        if after > before:
            self.up_events.append(ScaleEvent(now, after - before))
        elif after < before:
            self.down_events.append(ScaleEvent(now, before - after))
        longest = max(
            [p["periodSeconds"] for p in self.scale_up["policies"] + self.scale_down["policies"]] or [0]
        )
        self.up_events = [e for e in self.up_events if e.time > now - longest]
        self.down_events = [e for e in self.down_events if e.time > now - longest]

    def sync(self, now: float, current: int, values: dict[str, float], missing: int = 0) -> int:
        """One reconcile of the HPA: the new replica count of the scale target (may equal `current`).

        `current` is the scale target's spec.replicas; with 0 replicas the HPA is inactive (it does not scale
        from zero without the alpha HPAScaleToZero gate), so 0 stays 0.
        """
        if current == 0 and self.min_replicas > 0:
            return 0
        # Out of bounds (someone edited the scale): back to the bound at once, no behavior applied.
        if current > self.max_replicas:
            new = self.max_replicas
        elif current < self.min_replicas:
            new = self.min_replicas
        else:
            desired = self.calc_plain_metric_replicas(current, values, missing)
            new = self.rate_limit(now, current, self.stabilize(now, current, desired))
        self.record(now, current, new)
        return new
