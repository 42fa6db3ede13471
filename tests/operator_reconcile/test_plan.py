"""Pure planning: quantities compared by value, the replicas hand-over, children checked against the schema."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from reranker_operator import FIELD_MANAGER
from reranker_operator.reconcile import (
    child_key,
    is_subset,
    owns_field,
    plan_changes,
    settle_replicas,
    wake_replicas,
)
from reranker_operator.render import load_spec, render_all
from reranker_operator.render.kube_schema import child_problems, schema_release
from reranker_operator.render.quantity import canonical_quantity, same_quantity

ROOT = Path(__file__).resolve().parents[2]
# Rows of the upstream table (apimachinery resource/quantity_test.go), as kube-apiserver stores them.
CANONICAL = [
    ("2", "2"),
    (2, "2"),
    ("0.5", "500m"),
    (0.5, "500m"),
    ("1000m", "1"),
    ("1000M", "1G"),
    ("1000", "1k"),
    ("1500", "1500"),
    ("1e3", "1e3"),
    (1e3, "1k"),
    ("1024Mi", "1Gi"),
    ("1.5Gi", "1536Mi"),
    ("2000Mi", "2000Mi"),
    ("0.5Gi", "512Mi"),
    ("0.5Ki", "512"),
    ("1.1Mi", "1153433600m"),
    ("0", "0"),
]


@pytest.mark.parametrize(("written", "stored"), CANONICAL, ids=[str(w) for w, _ in CANONICAL])
def test_canonical_quantity(written, stored):
    assert canonical_quantity(written) == stored


def test_resource_lists_round_up_to_milli_and_bad_text_is_refused():
    assert canonical_quantity("0.1m", resource_list=True) == "1m"
    with pytest.raises(ValueError):
        canonical_quantity("lots")
    assert same_quantity("1Gi", "1024Mi") and same_quantity(1, "1000m") and not same_quantity("1", "2")


def test_quantities_compare_by_value_only_where_they_are_quantities():
    want = {"resources": {"limits": {"nvidia.com/gpu": 1, "memory": "1024Mi"}}, "env": [{"value": "1000"}]}
    assert is_subset(
        want, {"resources": {"limits": {"nvidia.com/gpu": "1", "memory": "1Gi"}}, "env": [{"value": "1000"}]}
    )
    assert not is_subset(
        want, {"resources": {"limits": {"nvidia.com/gpu": "2", "memory": "1Gi"}}, "env": [{"value": "1000"}]}
    )
    # An env value is text: "1k" is a different value there.
    assert not is_subset(
        want, {"resources": {"limits": {"nvidia.com/gpu": "1", "memory": "1Gi"}}, "env": [{"value": "1k"}]}
    )


def deployment(replicas=None, owners=(FIELD_MANAGER,)):
    spec = {"template": {}} if replicas is None else {"replicas": replicas, "template": {}}
    managed = [
        {"manager": owner, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}}
        for owner in owners
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo", "namespace": "team", "managedFields": managed},
        "spec": spec,
    }


def test_enabling_autoscaling_hands_the_current_count_over_first():
    desired = [deployment()]  # rendered without replicas
    live = {("Deployment", "demo"): deployment(3)}
    _, hand_over, take_back, force = settle_replicas(desired, live, replicas_set=True)
    assert hand_over["spec"] == {"replicas": 3} and take_back is None
    assert force == {("Deployment", "demo")}  # re-applied without replicas even though nothing else changed
    # Once the operator no longer owns the field there is nothing to hand over.
    live = {("Deployment", "demo"): deployment(5, owners=("kube-controller-manager",))}
    assert settle_replicas(desired, live, replicas_set=True)[1:] == (None, None, frozenset())


def test_disabling_autoscaling_takes_replicas_back_at_the_current_count():
    live = {("Deployment", "demo"): deployment(4, owners=("kube-controller-manager",))}
    # spec.replicas unset: the current count stays.
    desired, hand_over, take_back, force = settle_replicas([deployment(1)], live, replicas_set=False)
    assert desired[0]["spec"]["replicas"] == 4 and hand_over is None and take_back is None and force
    # spec.replicas set: first taken back at 4, then moved to the spec's 3.
    desired, _, take_back, force = settle_replicas([deployment(3)], live, replicas_set=True)
    assert take_back["spec"]["replicas"] == 4 and desired[0]["spec"]["replicas"] == 3 and force
    plan = plan_changes(desired, live, take_back=take_back, force=force)
    assert [child_key(obj) for obj in plan.update] == [("Deployment", "demo")] and plan.take_back is take_back


def test_autoscaling_turned_off_at_zero_comes_back_at_one():
    # The router scaled the Deployment to 0 (scale to zero); autoscaling goes, and no router will wake it.
    live = {
        ("Deployment", "demo"): deployment(0, owners=("reranker-router",)),
        ("HorizontalPodAutoscaler", "demo"): {"kind": "HorizontalPodAutoscaler"},
    }
    desired, _, take_back, force = settle_replicas([deployment(1)], live, replicas_set=False)
    assert desired[0]["spec"]["replicas"] == 1 and take_back is None and force
    # Without an autoscaler in the picture, 0 is the spec's own count and stays.
    live.pop(("HorizontalPodAutoscaler", "demo"))
    desired, *_ = settle_replicas([deployment(1)], live, replicas_set=False)
    assert desired[0]["spec"]["replicas"] == 0


@pytest.mark.parametrize(
    ("autoscaling", "live_replicas", "wake"),
    [
        ({"minReplicas": 0}, 0, None),  # the router's zero: left alone
        ({"minReplicas": 2}, 0, 2),  # minReplicas rose while at zero: the HPA would not act
        ({"minReplicas": 2}, 1, None),  # running: the HPA's business
        ({"minReplicas": 2, "enabled": False}, 0, None),  # no autoscaling: settle_replicas decides
    ],
)
def test_wake_replicas(autoscaling, live_replicas, wake):
    spec = load_spec({"model": {"name": "m"}, "autoscaling": autoscaling})
    live = {("Deployment", "demo"): deployment(live_replicas, owners=("reranker-router",))}
    assert wake_replicas(spec, live, "demo") == wake
    plan = plan_changes([], {}, wake=wake)
    assert plan.empty is (wake is None) and plan.scaled == ((0, wake) if wake else None)


def test_router_replica_changes_are_not_announced_as_scaling():
    spec = load_spec({"model": {"name": "m"}, "replicas": 2})
    desired = render_all("demo", "team", spec)
    live = {child_key(obj): copy.deepcopy(obj) for obj in desired}
    live[("Deployment", "demo-router")]["spec"]["replicas"] = 3
    plan = plan_changes(desired, live)
    assert [child_key(obj) for obj in plan.update] == [("Deployment", "demo-router")]
    assert plan.scaled is None
    live[("Deployment", "demo")]["spec"]["replicas"] = 1
    assert plan_changes(desired, live).scaled == (1, 2)


def test_owns_field_reads_fields_v1():
    assert owns_field(deployment(2), FIELD_MANAGER, ("spec", "replicas"))
    assert not owns_field(deployment(2), "someone-else", ("spec", "replicas"))
    assert not owns_field(deployment(2), FIELD_MANAGER, ("spec", "paused"))


def test_children_are_checked_against_the_kubernetes_schema():
    children = render_all("demo", "team", load_spec({"model": {"name": "BAAI/bge-reranker-v2-m3"}}), uid="u")
    assert child_problems(children, "1.33") == []
    broken = copy.deepcopy(next(obj for obj in children if obj["kind"] == "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    (problem,) = child_problems([broken], "1.33")
    assert problem.startswith("Deployment demo: spec.template.spec.containers[0].ports[0].containerPort: ")
    assert "(Kubernetes 1.33 schema)" in problem
    assert schema_release("1.24") == schema_release("1.0")  # older than every bundled schema: the oldest


def _broken_variants(children):
    """Children each made invalid in one way the strict schema catches."""
    dep = next(obj for obj in children if obj["kind"] == "Deployment")
    svc = next(obj for obj in children if obj["kind"] == "Service")
    edits = {
        "wrong type": lambda d: d["spec"].__setitem__("replicas", "two"),
        "unknown field (strict)": lambda d: d["spec"]["template"]["spec"].__setitem__("containerz", []),
        "missing required": lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
        "list instead of map": lambda d: d["metadata"].__setitem__("labels", ["a"]),
    }
    for what, edit in edits.items():
        broken = copy.deepcopy(dep)
        edit(broken)
        yield what, broken
    broken = copy.deepcopy(svc)
    broken["spec"]["ports"][0]["port"] = {"value": 80}
    yield "service port", broken
    broken = copy.deepcopy(svc)
    broken["spec"]["ports"].append(7)
    yield "list item of the wrong type", broken


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_fast_schema_check_agrees_with_jsonschema(example):
    """The compiled check (fastjsonschema) passes what jsonschema passes and refuses what it refuses."""
    from reranker_operator.render import kube_schema

    body = yaml.safe_load(example.read_text())
    children = render_all("demo", "team", load_spec(body["spec"]), uid="u", generation=1)
    release = schema_release("1.33")
    for obj in children:
        assert kube_schema._valid(obj, release), child_key(obj)
    for what, broken in _broken_variants(children):
        assert not kube_schema._valid(broken, release), what
        (problem,) = child_problems([broken], "1.33")
        assert problem.startswith(f"{broken['kind']} demo"), (what, problem)


def test_own_writes_are_read_back_until_the_cache_moves_past_them():
    from reranker_operator.children import WATCHED_KINDS, ChildCache

    labels = {"app.kubernetes.io/instance": "demo"}

    def svc(rv):
        return {
            "kind": "Service",
            "metadata": {"name": "demo", "namespace": "team", "labels": labels, "resourceVersion": rv},
        }

    index: dict = {("team", "demo"): []}
    cache = ChildCache({"Service": index} | {kind: {} for kind in WATCHED_KINDS if kind != "Service"})
    cache.remember(svc("5"), replaced=None)  # created; its ADDED event has not arrived yet
    assert cache.children("team", "demo")[("Service", "demo")]["metadata"]["resourceVersion"] == "5"
    index[("team", "demo")] = [svc("5")]  # the echo
    assert cache.children("team", "demo")[("Service", "demo")]["metadata"]["resourceVersion"] == "5"
    cache.remember(svc("9"), replaced="5")  # updated; the cache still holds the replaced version
    assert cache.children("team", "demo")[("Service", "demo")]["metadata"]["resourceVersion"] == "9"
    index[("team", "demo")] = [svc("12")]  # someone changed it after our write: the cache wins
    assert cache.children("team", "demo")[("Service", "demo")]["metadata"]["resourceVersion"] == "12"
    assert cache.overlay == {}


def test_a_write_reply_arriving_after_the_objects_watched_deletion_is_not_overlaid():
    """Created, then deleted by someone at once: the watch can deliver the deletion before the pass that
    created it records the reply. That reply must not stand in for the object (for the overlay's 60 s the
    deleted child would count as present, and nothing would re-create it)."""
    from reranker_operator.children import WATCHED_KINDS, ChildCache

    labels = {"app.kubernetes.io/instance": "demo"}
    svc = {
        "kind": "Service",
        "metadata": {
            "name": "demo",
            "namespace": "team",
            "labels": labels,
            "resourceVersion": "5",
            "uid": "u-1",
        },
    }
    cache = ChildCache({kind: {} for kind in WATCHED_KINDS})
    cache.forget("team", "demo", ("Service", "demo"), uid="u-1")  # the watched DELETED event
    cache.remember(svc, replaced=None)  # the create's reply, recorded late
    assert ("Service", "demo") not in cache.children("team", "demo")
    # Another object of the same name (a new uid, e.g. the operator's re-creation) is overlaid as usual.
    cache.remember({**svc, "metadata": {**svc["metadata"], "uid": "u-2", "resourceVersion": "8"}}, None)
    assert cache.children("team", "demo")[("Service", "demo")]["metadata"]["uid"] == "u-2"
