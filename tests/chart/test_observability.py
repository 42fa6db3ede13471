"""The Grafana dashboard and the PrometheusRule the operator chart ships: every query parses with a real PromQL
parser, and every metric (and label) it reads is exported by our code, added by the chart's monitors, or comes
from the documented kube-prometheus-stack components."""

from __future__ import annotations

import importlib.util
import json
import re
from types import SimpleNamespace

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from reranker_operator import metrics as operator_metrics
from reranker_operator import status as operator_status
from reranker_router.metrics import ReplicaCollector, RouterMetrics
from reranker_server.metrics import ServerMetrics

from .helpers import OPERATOR_CHART, ROOT, one, render, validate_object

promql = pytest.importorskip("promql_parser", reason="promql-parser (dev extra) is not installed")

DASHBOARD_JSON = OPERATOR_CHART / "dashboards" / "reranker.json"
DASHBOARD_CODE = ROOT / "deploy" / "grafana" / "dashboard.py"
MONITORING = {"rerankerPodMonitor": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}}}
# Series we read but do not export: kube-state-metrics (part of kube-prometheus-stack) and Prometheus itself.
EXTERNAL = {
    "kube_horizontalpodautoscaler_spec_target_metric": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_desired_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_current_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_spec_max_replicas": "kube-state-metrics",
    "up": "Prometheus (one per scrape target)",
}
# Grafana's variables, replaced by sample values so the expression is plain PromQL.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$namespace": "team-a",
    "$rerankerdeployment": "qwen3",
}
PAGE_WORTHY = {
    "RerankerNoReadyReplica",
    "RerankerErrorRatioHigh",
    "RerankerLatencyHigh",
    "RerankerAutoscalerAtMax",
    "RerankerDeploymentStalled",
    "RerankerDeploymentInvalidSpec",
    "RerankerOperatorDown",
    "RerankerRouterRejecting",
}


def sample_names(families) -> dict[str, set[str]]:
    """Exposed sample name -> label names, as Prometheus stores them (counter _total, histogram _bucket...)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names: dict[str, set[str]] = {}
    for family in families:
        for suffix in suffixes[family.type]:
            labels = set(family.labelnames)
            if suffix == "_bucket":
                labels.add("le")
            names[family.name + suffix] = labels
    return names


class _Family:
    def __init__(self, name: str, type_: str, labelnames) -> None:
        self.name, self.type, self.labelnames = name, type_, tuple(labelnames)


def server_exports() -> dict[str, set[str]]:
    registry = CollectorRegistry()
    server = ServerMetrics(registry)
    families = [
        _Family(m._name, m._type, m._labelnames)
        for m in vars(server).values()
        if isinstance(m, prometheus_client.metrics.MetricWrapperBase)
    ]
    # Collectors without a wrapper (reranker_pairs_waiting) announce themselves through describe().
    for family in registry.collect():
        if family.name not in {f.name for f in families}:
            families.append(_Family(family.name, family.type, ()))
    return sample_names(families)


class _OneReplica:
    """A replica set of one, enough for the router's collector to show every series with its labels."""

    waiting = 0
    replica = SimpleNamespace(url="http://10.0.0.1:8000", pending_pairs=0)

    def __iter__(self):
        return iter((self.replica,))

    def available(self) -> list:
        return [self.replica]


def router_exports() -> dict[str, set[str]]:
    registry = CollectorRegistry()
    router = RouterMetrics(registry)
    families = [
        _Family(m._name, m._type, m._labelnames)
        for m in vars(router).values()
        if isinstance(m, prometheus_client.metrics.MetricWrapperBase)
    ]
    for family in ReplicaCollector(_OneReplica(), lambda: 0).collect():
        labels = {label for sample in family.samples for label in sample.labels}
        families.append(_Family(family.name, family.type, labels))
    return sample_names(families)


def operator_exports() -> dict[str, set[str]]:
    families = [
        _Family(m._name, m._type, m._labelnames)
        for m in vars(operator_metrics).values()
        if isinstance(m, prometheus_client.metrics.MetricWrapperBase)
    ]
    return sample_names(families)


def dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable, Grafana variables substituted."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(<selector>, label) is Grafana's; the selector inside is PromQL.
            selector = re.fullmatch(r"label_values\((.*), \w+\)", variable["query"]).group(1)
            queries.append((f"variable {variable['name']}", selector))
    return [(where, _substitute(expr)) for where, expr in queries]


def _substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr.replace('"$1"', ""), f"unknown Grafana variable in {expr}"
    return expr


def prometheus_rule(values: dict | None = None) -> dict:
    return one(
        render(OPERATOR_CHART, {**MONITORING, "prometheusRule": {"enabled": True}, **(values or {})}),
        "PrometheusRule",
    )


def alerts() -> list[dict]:
    return [rule for group in prometheus_rule()["spec"]["groups"] for rule in group["rules"]]


def selectors(expr: str) -> list:
    """Every vector selector in a parsed expression (the real parser also type-checks the functions)."""
    found = []
    promql.walk(
        promql.parse(expr),
        pre_visit=lambda node: found.append(node) if isinstance(node, promql.VectorSelector) else None,
    )
    assert found, f"no series read by {expr}"
    return found


def every_query() -> list[tuple[str, str]]:
    return dashboard_queries() + [(f"alert {a['alert']}", a["expr"]) for a in alerts()]


def test_the_committed_dashboard_is_what_the_code_builds():
    pytest.importorskip(
        "grafana_foundation_sdk", reason="grafana-foundation-sdk (dev extra) is not installed"
    )
    spec = importlib.util.spec_from_file_location("reranker_dashboard", DASHBOARD_CODE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == DASHBOARD_JSON.read_text(), "run: python deploy/grafana/dashboard.py"


def test_dashboard_covers_what_the_team_watches():
    titles = {panel["title"] for panel in dashboard()["panels"] if panel["type"] != "row"}
    for wanted in (
        "Requests/s by dialect",
        "Pairs/s",
        "Latency p50 / p95 / p99",
        "Pairs in flight and waiting per pod vs HPA target",
        "Replicas desired / ready",
        "Truncations/s",
        "4xx / 5xx by status",
        "Operator reconcile errors/s",
        "Drift repairs",
        "Router requests/s by dialect",
        "Router latency p50 / p95 / p99",
        "Pairs in flight per server replica (router view)",
    ):
        assert wanted in titles


@pytest.mark.parametrize(
    ("where", "expr"), every_query(), ids=lambda v: v if " " in v and len(v) < 60 else ""
)
def test_every_query_parses_and_reads_only_exported_metrics(where, expr):
    exported = {**server_exports(), **operator_exports(), **router_exports()}
    for selector in selectors(expr):
        name = selector.name
        if name in EXTERNAL:
            continue
        assert name in exported, (
            f"{where}: {name} is exported by neither the server, the router nor the operator"
        )
        labels = {m.name for m in selector.matchers.matchers} - {"__name__"}
        # Labels our code sets, plus the ones the chart's monitors add to every series.
        known = exported[name] | {"namespace", "rerankerdeployment", "pod", "job", "instance"}
        assert labels <= known, f"{where}: {name} has no labels {labels - known}"


def test_label_values_in_matchers_exist():
    """`state`, `type` and `reason` values the queries match on are ones the code really reports."""
    states = set(operator_metrics._REPLICA_FIELDS)
    # Where each family's `reason` values are written.
    reason_sources = {
        "reranker_operator_": ROOT / "operator" / "reranker_operator" / "status.py",
        "reranker_router_": ROOT / "router" / "reranker_router" / "app.py",
    }
    for where, expr in every_query():
        for selector in selectors(expr):
            for matcher in selector.matchers.matchers:
                if matcher.op != promql.MatchOp.Equal:
                    continue
                if matcher.name == "state":
                    assert matcher.value in states, where
                elif matcher.name == "type":
                    assert matcher.value in operator_status.CONDITION_TYPES, where
                elif matcher.name == "reason":
                    (source,) = [
                        s for prefix, s in reason_sources.items() if selector.name.startswith(prefix)
                    ]
                    assert f'"{matcher.value}"' in source.read_text(), f"{where}: {source.name} never sets it"


def test_monitors_add_the_labels_the_queries_group_by():
    objects = render(OPERATOR_CHART, MONITORING)
    pod_monitor = one(objects, "PodMonitor")
    relabel = pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
        "targetLabel": "rerankerdeployment",
    } in relabel
    service_monitor = one(objects, "ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0]["honorLabels"] is True
    for name in (
        "reranker_operator_rerankerdeployment_condition",
        "reranker_operator_rerankerdeployment_replicas",
    ):
        assert {"namespace", "rerankerdeployment"} <= operator_exports()[name]


def test_dashboard_configmap_is_off_by_default_and_labelled_for_the_grafana_sidecar():
    assert not [o for o in render(OPERATOR_CHART) if o["kind"] == "ConfigMap"]
    configmap = one(
        render(OPERATOR_CHART, {"grafanaDashboard": {"enabled": True, "folder": "AI"}}), "ConfigMap"
    )
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "AI"}
    assert json.loads(configmap["data"]["reranker.json"]) == dashboard()
    # ConfigMaps hold at most 1 MiB.
    assert len(configmap["data"]["reranker.json"].encode()) < 1024 * 1024
    validate_object(configmap, "1.30")


def test_prometheus_rule_is_off_by_default_and_carries_the_page_worthy_alerts():
    assert not [o for o in render(OPERATOR_CHART, MONITORING) if o["kind"] == "PrometheusRule"]
    rule = prometheus_rule({"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}})
    assert rule["metadata"]["labels"]["release"] == "kps"
    validate_object(rule, "1.30")
    by_name = {a["alert"]: a for a in alerts()}
    assert set(by_name) == PAGE_WORTHY
    for alert in by_name.values():
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert alert["annotations"]["summary"] and re.fullmatch(r"\d+m", alert["for"])
    assert by_name["RerankerLatencyHigh"]["for"] == "10m"


def test_alert_thresholds_come_from_values():
    values = {"prometheusRule": {"enabled": True, "latencyP95Seconds": 0.5, "errorRatio": 0.01}}
    by_name = {r["alert"]: r for g in prometheus_rule(values)["spec"]["groups"] for r in g["rules"]}
    assert by_name["RerankerLatencyHigh"]["expr"].rstrip().endswith("> 0.5")
    assert ") > 0.01" in by_name["RerankerErrorRatioHigh"]["expr"]


def test_operator_down_watches_the_operator_metrics_service():
    objects = render(OPERATOR_CHART, {**MONITORING, "prometheusRule": {"enabled": True}})
    service = next(
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")
    )
    (down,) = [
        r
        for g in one(objects, "PrometheusRule")["spec"]["groups"]
        for r in g["rules"]
        if r["alert"] == "RerankerOperatorDown"
    ]
    # The Prometheus Operator names a ServiceMonitor's job after the Service it scrapes.
    assert f'job="{service["metadata"]["name"]}"' in down["expr"]
    assert f'namespace="{service["metadata"]["namespace"]}"' in down["expr"]


def test_alerts_need_the_monitors_that_feed_them():
    import helm_python as helm

    with pytest.raises(helm.HelmError, match="prometheusRule.enabled needs rerankerPodMonitor.enabled"):
        render(OPERATOR_CHART, {"prometheusRule": {"enabled": True}})
