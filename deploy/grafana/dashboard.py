"""The reranker Grafana dashboard, built in code with grafana-foundation-sdk.

    python deploy/grafana/dashboard.py          # rewrite the committed JSON the operator chart ships
    python deploy/grafana/dashboard.py --check  # exit 1 when the committed JSON is stale

The chart puts the JSON in a ConfigMap labelled `grafana_dashboard: "1"`, which kube-prometheus-stack's Grafana
sidecar loads (values `grafanaDashboard.enabled`). Series carry `namespace` and `rerankerdeployment`: the
chart's PodMonitor adds the latter to every server and router series, and the operator exports its per-object
gauges with both (see docs/operations.md, "Dashboard and alerts"). HPA series come from kube-state-metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueGraphMode
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, VariableRefresh

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "charts" / "reranker-operator" / "dashboards" / "reranker.json"
UID = "reranker-operator"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every selector of a reranker panel: the object chosen in the variables at the top.
RRD = 'namespace="$namespace", rerankerdeployment="$rerankerdeployment"'
RATE = "[$__rate_interval]"


def _query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def _timeseries(title: str, unit: str, description: str, *queries: tuple[str, str]) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(8)
        .span(8)
        .fill_opacity(10)
        .legend(common.VizLegendOptions().show_legend(True).display_mode("list").placement("bottom"))
    )
    for expr, legend in queries:
        panel = panel.with_target(_query(expr, legend))
    return panel


def _quantile(metric: str, q: float, by: str = "") -> str:
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{RRD}}}{RATE})))"


def _variables() -> list:
    return [
        dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        dashboard.QueryVariable("namespace")
        .label("Namespace")
        .datasource(DATASOURCE)
        .query("label_values(reranker_operator_rerankerdeployment_replicas, namespace)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED),
        dashboard.QueryVariable("rerankerdeployment")
        .label("RerankerDeployment")
        .datasource(DATASOURCE)
        .query(
            'label_values(reranker_operator_rerankerdeployment_replicas{namespace="$namespace"}, rerankerdeployment)'
        )
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED),
    ]


def _overview() -> list:
    ready = stat.Panel().title("Ready replicas").datasource(DATASOURCE).height(4).span(6)
    ready = ready.with_target(
        _query(f'reranker_operator_rerankerdeployment_replicas{{{RRD}, state="ready"}}', "ready")
    ).graph_mode(BigValueGraphMode.NONE)
    requests = stat.Panel().title("Requests/s").unit("reqps").datasource(DATASOURCE).height(4).span(6)
    requests = requests.with_target(
        _query(f"sum(rate(reranker_requests_total{{{RRD}}}{RATE}))", "requests/s")
    )
    p95 = stat.Panel().title("p95 latency").unit("s").datasource(DATASOURCE).height(4).span(6)
    p95 = p95.with_target(_query(_quantile("reranker_request_duration_seconds", 0.95), "p95"))
    errors = stat.Panel().title("5xx ratio").unit("percentunit").datasource(DATASOURCE).height(4).span(6)
    errors = errors.with_target(
        _query(
            f'sum(rate(reranker_requests_total{{{RRD}, status=~"5.."}}{RATE})) '
            f"/ sum(rate(reranker_requests_total{{{RRD}}}{RATE}))",
            "5xx",
        )
    )
    return [ready, requests, p95, errors]


def _traffic() -> list:
    return [
        _timeseries(
            "Requests/s by dialect",
            "reqps",
            "Scoring requests answered by the server pods, by client dialect (cohere, jina, tei, ...).",
            (f"sum by (dialect) (rate(reranker_requests_total{{{RRD}}}{RATE}))", "{{dialect}}"),
        ),
        _timeseries(
            "Pairs/s",
            "ops",
            "(query, document) pairs scored per second: the unit of work of a reranker.",
            (f"sum(rate(reranker_documents_per_request_sum{{{RRD}}}{RATE}))", "pairs/s"),
        ),
        _timeseries(
            "Latency p50 / p95 / p99",
            "s",
            "Server time per request, from the body arriving to the reply being ready.",
            *[
                (_quantile("reranker_request_duration_seconds", q), f"p{round(q * 100)}")
                for q in (0.5, 0.95, 0.99)
            ],
        ),
        _timeseries(
            "4xx / 5xx by status",
            "reqps",
            "4xx: the client sent something the server refused (413 too many documents, 401 key); 5xx: failures.",
            (
                f'sum by (status) (rate(reranker_requests_total{{{RRD}, status=~"4..|5.."}}{RATE}))',
                "{{status}}",
            ),
        ),
        _timeseries(
            "Truncations/s",
            "ops",
            "Texts cut to fit the model's context: frequent document truncation means maxModelLen is too small.",
            (f"sum by (part) (rate(reranker_truncations_total{{{RRD}}}{RATE}))", "{{part}}"),
        ),
        _timeseries(
            "Documents per request p50 / p95",
            "short",
            "Request sizes (RAGFlow sends 64-126 documents per request).",
            *[(_quantile("reranker_documents_per_request", q), f"p{round(q * 100)}") for q in (0.5, 0.95)],
        ),
    ]


def _capacity() -> list:
    hpa = 'namespace="$namespace", horizontalpodautoscaler="$rerankerdeployment"'
    return [
        _timeseries(
            "Pairs in flight and waiting per pod vs HPA target",
            "short",
            "The autoscaling signal (average per server pod) against the HPA's target; waiting > 0 means the "
            "engine is saturated.",
            (f"avg(reranker_pairs_in_flight{{{RRD}}})", "in flight (avg per pod)"),
            (f"avg(reranker_pairs_waiting{{{RRD}}})", "waiting (avg per pod)"),
            (
                f'max(kube_horizontalpodautoscaler_spec_target_metric{{{hpa}, metric_name=~"reranker_pairs_.*"}})',
                "HPA target",
            ),
        ),
        _timeseries(
            "Replicas desired / ready",
            "short",
            "Server pods: desired by the HPA (kube-state-metrics), and as the RerankerDeployment's status reports.",
            (f"max(kube_horizontalpodautoscaler_status_desired_replicas{{{hpa}}})", "desired (HPA)"),
            (f"max(kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}})", "max (HPA)"),
            (f'max(reranker_operator_rerankerdeployment_replicas{{{RRD}, state="existing"}})', "existing"),
            (f'max(reranker_operator_rerankerdeployment_replicas{{{RRD}, state="ready"}})', "ready"),
        ),
        _timeseries(
            "Conditions",
            "short",
            "Conditions of the RerankerDeployment that are not in their healthy state (1 = reported now).",
            (
                f'max by (type, reason) (reranker_operator_rerankerdeployment_condition{{{RRD}, type=~"Ready|ModelCached", status!="True"}})'
                f' or max by (type, reason) (reranker_operator_rerankerdeployment_condition{{{RRD}, type=~"Degraded|InvalidSpec", status="True"}})',
                "{{type}}: {{reason}}",
            ),
        ),
    ]


def _router() -> list:
    return [
        _timeseries(
            "Router requests/s by dialect",
            "reqps",
            "Requests clients sent to the Service (the router pods), by dialect.",
            (f"sum by (dialect) (rate(reranker_router_requests_total{{{RRD}}}{RATE}))", "{{dialect}}"),
        ),
        _timeseries(
            "Router latency p50 / p95 / p99",
            "s",
            "What clients see: the router's time per request, shards and retries included.",
            *[
                (_quantile("reranker_router_request_duration_seconds", q), f"p{round(q * 100)}")
                for q in (0.5, 0.95, 0.99)
            ],
        ),
        _timeseries(
            "Router 4xx / 5xx by status",
            "reqps",
            "429: the router's queue is full (add replicas); 503: no ready replica or the router drains.",
            (
                f'sum by (status) (rate(reranker_router_requests_total{{{RRD}, status=~"4..|5.."}}{RATE}))',
                "{{status}}",
            ),
        ),
        _timeseries(
            "Pairs in flight per server replica (router view)",
            "short",
            "Pairs each router has sent to each replica and not had answered: how evenly the load spreads.",
            (f"sum by (replica) (reranker_router_replica_pairs_in_flight{{{RRD}}})", "{{replica}}"),
        ),
        _timeseries(
            "Router replicas available / ejected, pending pairs",
            "short",
            "Replicas the routers know (ejected: left out after failures), pairs admitted and not answered, "
            "and requests waiting for a replica to appear.",
            (f"max by (state) (reranker_router_replicas{{{RRD}}})", "{{state}}"),
            (f"sum(reranker_router_pending_pairs{{{RRD}}})", "pending pairs"),
            (f"sum(reranker_router_requests_waiting_for_replica{{{RRD}}})", "waiting for a replica"),
        ),
        _timeseries(
            "Router retries, ejections, rejections /s",
            "ops",
            "Shards retried on another replica, replicas ejected, and requests the router refused, by reason.",
            (f"sum by (reason) (rate(reranker_router_retries_total{{{RRD}}}{RATE}))", "retry {{reason}}"),
            (
                f"sum by (reason) (rate(reranker_router_ejections_total{{{RRD}}}{RATE}))",
                "ejection {{reason}}",
            ),
            (
                f"sum by (reason) (rate(reranker_router_rejections_total{{{RRD}}}{RATE}))",
                "rejection {{reason}}",
            ),
        ),
        _timeseries(
            "Shards per request p95",
            "short",
            "Large requests are split into shards scored in parallel on different replicas.",
            (_quantile("reranker_router_shards_per_request", 0.95), "p95"),
        ),
    ]


def _operator() -> list:
    return [
        _timeseries(
            "Operator reconcile errors/s",
            "ops",
            "Failed reconcile passes by reason (conflict, throttled, server_error, client_error, unreachable).",
            (
                "sum by (reason) (rate(reranker_operator_reconcile_errors_total[$__rate_interval]))",
                "{{reason}}",
            ),
        ),
        _timeseries(
            "Drift repairs",
            "short",
            "Children restored because someone changed or deleted them outside the spec.",
            ("sum by (kind) (increase(reranker_operator_drift_repairs_total[$__rate_interval]))", "{{kind}}"),
        ),
        _timeseries(
            "Reconcile passes/s by result",
            "ops",
            "ok, invalid_spec (the spec is refused, serving continues) and retry (an API error).",
            ("sum by (result) (rate(reranker_operator_reconcile_total[$__rate_interval]))", "{{result}}"),
        ),
        _timeseries(
            "Reconcile p95 duration",
            "s",
            "Wall time of one pass: list, plan, apply, prune, observe.",
            (
                "histogram_quantile(0.95, sum by (le) "
                "(rate(reranker_operator_reconcile_duration_seconds_bucket[$__rate_interval])))",
                "p95",
            ),
        ),
    ]


def build() -> dashboard.Dashboard:
    """The whole dashboard."""
    board = (
        dashboard.Dashboard("Reranker")
        .uid(UID)
        .description(
            "Rerankers served by reranker-operator: traffic, latency, capacity, errors, the operator."
        )
        .tags(["reranker", "reranker-operator"])
        .time("now-3h", "now")
        .refresh("30s")
        .tooltip(DashboardCursorSync.CROSSHAIR)
    )
    for variable in _variables():
        board = board.with_variable(variable)
    sections = (
        ("Overview", _overview()),
        ("Traffic", _traffic()),
        ("Capacity and health", _capacity()),
        ("Router", _router()),
        ("Operator", _operator()),
    )
    for title, panels in sections:
        board = board.with_row(dashboard.Row(title))
        for panel in panels:
            board = board.with_panel(panel)
    return board


def render() -> str:
    """The dashboard as the JSON the chart ships (stable key order, trailing newline)."""
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard JSON, or with --check report whether the committed file is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the committed JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(
                f"{OUTPUT.relative_to(ROOT)} is stale: run python deploy/grafana/dashboard.py",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
