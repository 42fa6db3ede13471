"""The HPA model against the worked examples of the Kubernetes documentation (Horizontal Pod Autoscaling:
"Algorithm details" and "Configurable scaling behavior"), so the simulation scales like a real cluster."""

from __future__ import annotations

import pytest
from scalesim.hpa import DEFAULT_SCALE_DOWN, DEFAULT_SCALE_UP, HpaController, parse_quantity


def controller(
    target: float = 100.0,
    minimum: int = 1,
    maximum: int = 100,
    up: dict | None = None,
    down: dict | None = None,
) -> HpaController:
    behavior = {}
    if up is not None:
        behavior["scaleUp"] = up
    if down is not None:
        behavior["scaleDown"] = down
    manifest = {
        "spec": {
            "minReplicas": minimum,
            "maxReplicas": maximum,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "m"},
                        "target": {"type": "AverageValue", "averageValue": target},
                    },
                }
            ],
            "behavior": behavior,
        }
    }
    return HpaController.from_manifest(manifest)


def pods(*values: float) -> dict[str, float]:
    return {f"pod-{i}": v for i, v in enumerate(values)}


def test_ratio_doubles_when_the_metric_is_twice_the_target() -> None:
    # "if the current metric value is 200m, and the desired value is 100m, the number of replicas will be
    # doubled, since 200.0 / 100.0 == 2.0"
    hpa = controller(target=parse_quantity("100m"))
    assert hpa.calc_plain_metric_replicas(3, pods(0.2, 0.2, 0.2), missing=0) == 6


def test_ratio_halves_when_the_metric_is_half_the_target() -> None:
    # "If the current value is instead 50m, you'll halve the number of replicas, since 50.0 / 100.0 == 0.5"
    hpa = controller(target=parse_quantity("100m"))
    assert hpa.calc_plain_metric_replicas(4, pods(0.05, 0.05, 0.05, 0.05), missing=0) == 2


def test_desired_replicas_is_the_ceiling_of_the_ratio_times_the_pods() -> None:
    # desiredReplicas = ceil[currentReplicas * (currentMetricValue / desiredMetricValue)]
    hpa = controller(target=64)
    assert hpa.calc_plain_metric_replicas(3, pods(100, 100, 100), missing=0) == 5  # ceil(3 * 1.5625)


@pytest.mark.parametrize("average", [91.0, 100.0, 109.0, 110.0, 90.0])
def test_no_scaling_within_the_ten_percent_tolerance(average: float) -> None:
    # "the control plane skips any scaling action if the ratio is sufficiently close to 1.0 (within a
    # configurable tolerance, 0.1 by default)"
    assert controller().calc_plain_metric_replicas(4, pods(*[average] * 4), missing=0) == 4


@pytest.mark.parametrize(("average", "expected"), [(111.0, 5), (89.0, 4)])
def test_scaling_just_outside_the_tolerance(average: float, expected: int) -> None:
    assert controller().calc_plain_metric_replicas(4, pods(*[average] * 4), missing=0) == expected


def test_missing_pods_count_as_zero_on_a_scale_up() -> None:
    # "assuming those pods were consuming ... 0% in case of a scale up": 2 pods at 300 with target 100 would
    # ask for 6; with 2 more pods without metrics the average is 150 over 4 pods -> 6 as well, not 2 * 3 + 2.
    assert controller().calc_plain_metric_replicas(4, pods(300, 300), missing=2) == 6


def test_missing_pods_count_as_the_target_on_a_scale_down() -> None:
    # 2 pods at 20 with target 100, 2 missing pods counted at 100 -> average 60 -> ceil(4 * 0.6) = 3
    assert controller().calc_plain_metric_replicas(4, pods(20, 20), missing=2) == 3


def test_no_action_when_the_missing_pods_reverse_the_direction() -> None:
    # "If ... the new ratio reverses the scale direction, or is within the tolerance, the controller doesn't
    # take any scaling action": 1 pod at 150, 3 missing at 0 -> ratio 0.375 < 1 after a 1.5 before.
    assert controller().calc_plain_metric_replicas(4, pods(150), missing=3) == 4


def test_no_metrics_at_all_leaves_the_scale_alone() -> None:
    assert controller().calc_plain_metric_replicas(3, {}, missing=3) == 3


def test_scale_down_stabilization_uses_the_highest_recommendation_of_the_window() -> None:
    # "the autoscaler considers all desired states in the past window and uses the highest value"
    hpa = controller(down={"stabilizationWindowSeconds": 300})
    assert hpa.stabilize(0, 5, 5) == 5
    assert hpa.stabilize(60, 5, 3) == 5
    assert hpa.stabilize(120, 5, 2) == 5
    # 301 s after the last recommendation of 5, the highest left in the window is 3.
    assert hpa.stabilize(301, 5, 2) == 3


def test_scale_up_stabilization_uses_the_lowest_recommendation_of_the_window() -> None:
    hpa = controller(up={"stabilizationWindowSeconds": 120}, down={"stabilizationWindowSeconds": 0})
    assert hpa.stabilize(0, 2, 2) == 2
    assert hpa.stabilize(30, 2, 8) == 2  # the 2 of t=0 is still in the window
    assert hpa.stabilize(121, 2, 8) == 8


def test_default_behavior_matches_the_documented_defaults() -> None:
    # scaleUp: no window, 100 % or 4 pods per 15 s, Max; scaleDown: 300 s window, 100 % per 15 s.
    hpa = controller()
    assert hpa.scale_up == DEFAULT_SCALE_UP and hpa.scale_down == DEFAULT_SCALE_DOWN
    assert hpa.scale_up["stabilizationWindowSeconds"] == 0
    assert hpa.scale_down["stabilizationWindowSeconds"] == 300


def test_default_scale_up_adds_four_pods_or_doubles_every_15_seconds() -> None:
    # "4 pods or a 100% of the currently running replicas may at most be added every 15 seconds"
    hpa = controller()
    assert hpa.rate_limit(0, 2, 20) == 6  # max(2 + 4, 2 * 2)
    hpa.record(0, 2, 6)
    assert hpa.rate_limit(10, 6, 20) == 6  # the 4 pods added 10 s ago used up this period
    assert hpa.rate_limit(16, 6, 20) == 12  # a new period: max(6 + 4, 2 * 6)


def test_scale_down_policy_example_of_the_documentation() -> None:
    # "policies: Pods 4 per 60 s and Percent 10 per 60 s ... if there are 80 replicas and the target has to be
    # scaled down to 10 replicas then during the first step 8 replicas will be reduced. In the next iteration
    # when the number of replicas is 72, 10% of the pods is 7.2 but the number is rounded up to 8."
    down = {
        "stabilizationWindowSeconds": 0,
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 60},
            {"type": "Percent", "value": 10, "periodSeconds": 60},
        ],
    }
    hpa = controller(down=down)
    assert hpa.rate_limit(0, 80, 10) == 72
    hpa.record(0, 80, 72)
    assert hpa.rate_limit(30, 72, 10) == 72  # still inside the period of the first step
    assert hpa.rate_limit(61, 72, 10) == 64
    # "When the number of pods is more than 40 the second policy will be used": at 30 pods, 4 pods (Pods).
    assert controller(down=down).rate_limit(0, 30, 10) == 26


def test_select_policy_min_picks_the_smallest_change() -> None:
    down = {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Min",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 60},
            {"type": "Percent", "value": 10, "periodSeconds": 60},
        ],
    }
    assert controller(down=down).rate_limit(0, 80, 10) == 76


def test_select_policy_disabled_turns_a_direction_off() -> None:
    # "selectPolicy: Disabled" ... "to disable scale down"
    hpa = controller(down={"selectPolicy": "Disabled"})
    assert hpa.rate_limit(0, 5, 1) == 5
    assert hpa.rate_limit(0, 5, 9) == 9


def test_percent_scale_up_rounds_up() -> None:
    up = {"policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}], "selectPolicy": "Max"}
    assert controller(up=up).rate_limit(0, 3, 10) == 5  # ceil(3 * 1.5)


def test_min_and_max_replicas_bound_every_sync() -> None:
    hpa = controller(minimum=2, maximum=5)
    assert hpa.sync(0, 4, pods(1000, 1000, 1000, 1000)) == 5
    hpa = controller(minimum=2, maximum=5, down={"stabilizationWindowSeconds": 0})
    assert hpa.sync(0, 4, pods(1, 1, 1, 1)) == 2
    # Out of bounds (edited by hand) goes back to the bound at once.
    assert controller(minimum=2, maximum=5).sync(0, 9, {}) == 5
    assert controller(minimum=2, maximum=5).sync(0, 1, {}) == 2


def test_zero_replicas_disable_the_autoscaler() -> None:
    # With spec.replicas 0 and minReplicas > 0 the HPA does not act (scaling from zero needs HPAScaleToZero).
    assert controller().sync(0, 0, {}) == 0


def test_quantities_are_parsed_like_kubernetes() -> None:
    assert parse_quantity("100m") == pytest.approx(0.1)
    assert parse_quantity("16k") == 16000
    assert parse_quantity("64") == 64
    assert parse_quantity(32) == 32
