"""Offline wiring across components: chart values -> RerankerDeployment -> the operator's children ->
RBAC, PodMonitor, Prometheus Adapter and the server's metric names."""

from __future__ import annotations

import pytest
import yaml
from prometheus_client import CollectorRegistry

from .helpers import OPERATOR_CHART, RERANKER_CHART, ROOT, load_values, one, render, selects, values_files
from .test_rbac import grants

ADAPTER_VALUES = ROOT / "deploy" / "prometheus-adapter" / "values.yaml"
# Plural resource names of the kinds the operator creates; an unknown kind fails the test on purpose (it needs RBAC).
PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Deployment": "deployments",
    "Job": "jobs",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "NetworkPolicy": "networkpolicies",
}
# list to find its children, patch (server-side apply) and create (apply of a new object), delete to prune.
OPERATOR_VERBS = ("list", "create", "patch", "delete")


def children_of_every_example() -> list[dict]:
    """What the operator renders for each reranker chart values file (the chart's CR, through render_all)."""
    render_pkg = pytest.importorskip("reranker_operator.render", reason="operator renderers not built yet")
    children = []
    for path in values_files(RERANKER_CHART):
        rrd = one(
            render(RERANKER_CHART, load_values(path), name="wiring", namespace="team-a"), "RerankerDeployment"
        )
        spec = render_pkg.load_spec(rrd["spec"])
        children.extend(
            render_pkg.render_all("wiring", "team-a", spec, uid="00000000-0000-0000-0000-000000000001")
        )
    return children


def adapter_rules() -> list[dict]:
    return yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]


def test_examples_exercise_every_optional_child():
    kinds = {child["kind"] for child in children_of_every_example()}
    assert kinds == set(PLURALS), f"the reranker chart's ci/ examples no longer cover: {set(PLURALS) - kinds}"


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a"]}], ids=["cluster", "namespaced"])
def test_chart_rbac_covers_every_child_the_operator_renders(values):
    objects = render(OPERATOR_CHART, values)
    rules = [r for o in objects if o["kind"] in ("Role", "ClusterRole") for r in o["rules"]]
    for child in children_of_every_example():
        group = child["apiVersion"].rpartition("/")[0]
        resource = PLURALS[child["kind"]]
        for verb in OPERATOR_VERBS:
            assert grants(rules, verb, group, resource), f"no {verb} on {group or 'core'}/{resource}"


def test_pod_monitor_scrapes_the_server_and_router_pods_the_operator_renders():
    monitor = one(render(OPERATOR_CHART, {"rerankerPodMonitor": {"enabled": True}}), "PodMonitor")
    deployments = [c for c in children_of_every_example() if c["kind"] == "Deployment"]
    components = set()
    for deployment in deployments:
        pod = deployment["spec"]["template"]
        assert selects(monitor["spec"]["selector"], pod["metadata"]["labels"])
        components.add(pod["metadata"]["labels"]["app.kubernetes.io/component"])
        port_names = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in port_names
    assert components == {"server", "router"}
    jobs = [c for c in children_of_every_example() if c["kind"] == "Job"]
    for job in jobs:
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert not selects(monitor["spec"]["selector"], labels), "download pods have no /metrics"


def test_adapter_serves_every_metric_the_operator_scales_on():
    scaling = pytest.importorskip(
        "reranker_operator.render.scaling", reason="operator renderers not built yet"
    )
    published = {rule["name"]["as"]: rule for rule in adapter_rules()}
    for metric in scaling.METRICS.values():
        rule = published[metric]
        assert rule["seriesQuery"].startswith(metric + "{")
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"]
    hpas = [c for c in children_of_every_example() if c["kind"] == "HorizontalPodAutoscaler"]
    assert hpas
    for hpa in hpas:
        for metric in hpa["spec"]["metrics"]:
            assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in published


def test_adapter_metrics_are_exported_by_the_server():
    server_metrics = pytest.importorskip("reranker_server.metrics", reason="server metrics not built yet")
    registry = CollectorRegistry()
    server_metrics.ServerMetrics(registry)
    exported = {family.name for family in registry.collect()}
    for rule in adapter_rules():
        assert rule["name"]["as"] in exported
