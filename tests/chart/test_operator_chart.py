"""The reranker-operator chart: lint, render, strict schema validation, hardening and values validation."""

from __future__ import annotations

import helm_python as helm
import pytest
import yaml

from .helpers import (
    KUBE_VERSIONS,
    LINT_WARNING,
    OPERATOR_CHART,
    ROOT,
    by_kind,
    load_values,
    one,
    render,
    render_notes,
    validate_object,
    values_files,
)

VALUES_FILES = values_files(OPERATOR_CHART)
VALUES_IDS = ["default" if p is None else p.name for p in VALUES_FILES]


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_lint_strict_is_clean(values_file):
    result = helm.lint(str(OPERATOR_CHART), load_values(values_file), strict=True, kube_version="v1.30.0")
    problems = [m for m in result["messages"] if m["severity"] >= LINT_WARNING]
    assert result["errors"] == [] and problems == [], problems or result["errors"]


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_every_rendered_object_validates_strictly(values_file):
    objects = render(OPERATOR_CHART, load_values(values_file))
    assert objects, "the chart rendered nothing"
    for kube_version in KUBE_VERSIONS:
        for obj in objects:
            validate_object(obj, kube_version)


def test_default_render_has_the_expected_objects():
    kinds = sorted(o["kind"] for o in render(OPERATOR_CHART))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]


def test_operator_deployment_is_single_recreate_and_hardened():
    deployment = one(render(OPERATOR_CHART), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"liveness": 8080, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert container["args"][0] == "run"
    assert not [a for a in container["args"] if a.startswith("--namespace")], "cluster mode: no --namespace"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert pod["serviceAccountName"] == one(render(OPERATOR_CHART), "ServiceAccount")["metadata"]["name"]


def test_namespaced_mode_passes_each_namespace_to_the_operator():
    deployment = one(render(OPERATOR_CHART, {"watchNamespaces": ["team-a", "team-b"]}), "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]


def test_metrics_service_selects_the_operator_pod_on_the_metrics_port():
    objects = render(OPERATOR_CHART, {"metrics": {"port": 9300}})
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9300, "targetPort": "metrics", "protocol": "TCP"}
    ]
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-port=9300" in container["args"]


def test_service_monitor_targets_the_metrics_service():
    objects = render(OPERATOR_CHART, {"metrics": {"serviceMonitor": {"enabled": True}}})
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_service_monitor_without_the_service_fails_with_a_reason():
    values = {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}
    with pytest.raises(helm.HelmError, match="metrics.serviceMonitor.enabled needs metrics.service.enabled"):
        render(OPERATOR_CHART, values)


def test_reranker_pod_monitor_selects_operator_managed_server_and_router_pods():
    objects = render(OPERATOR_CHART, {"rerankerPodMonitor": {"enabled": True}})
    monitor = one(objects, "PodMonitor")
    assert monitor["spec"]["selector"] == {
        "matchLabels": {"app.kubernetes.io/managed-by": "reranker-operator"},
        "matchExpressions": [
            {"key": "app.kubernetes.io/component", "operator": "In", "values": ["server", "router"]}
        ],
    }
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_reranker_pod_monitor_follows_the_watched_namespaces():
    values = {"watchNamespaces": ["team-a"], "rerankerPodMonitor": {"enabled": True}}
    monitor = one(render(OPERATOR_CHART, values), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


def test_image_tag_defaults_to_app_version():
    container = one(render(OPERATOR_CHART), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/reranker-operator/reranker-operator:0.1.0"
    container = one(render(OPERATOR_CHART, {"image": {"tag": "dev"}}), "Deployment")["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert container["image"] == "ghcr.io/reranker-operator/reranker-operator:dev"


def test_existing_service_account_is_used_and_not_created():
    objects = render(OPERATOR_CHART, {"serviceAccount": {"create": False, "name": "platform-sa"}})
    assert by_kind(objects, "ServiceAccount") == []
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-sa"
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "platform-sa"


def test_notes_tell_the_next_step():
    notes = render_notes(OPERATOR_CHART)
    assert "kubectl -n default get rrd" in notes
    assert "kubectl apply -n default -f examples/cpu-minilm.yaml" in notes
    assert "READY=True" not in notes, "READY is a number of ready replicas"
    namespaced = render_notes(OPERATOR_CHART, {"watchNamespaces": ["team-a"]})
    assert "kubectl apply -n team-a" in namespaced and "kubectl -n team-a get rrd" in namespaced
    # The example names no namespace, so -n decides (a hard-coded one would make kubectl refuse).
    example = yaml.safe_load((ROOT / "examples" / "cpu-minilm.yaml").read_text())
    assert "namespace" not in example["metadata"]
    assert f"get rrd {example['metadata']['name']} " in namespaced


# Each bad value and the words the user sees; validate_schema is what `helm install` runs before rendering.
BAD_VALUES = [
    ({"watchNamespaces": ["Team_A"]}, "'/watchNamespaces/0': 'Team_A' does not match pattern"),
    ({"watchNamespaces": "team-a"}, "got string, want array"),
    ({"watchNamespaces": ["a", "a"]}, "items at 0 and 1 are equal"),
    ({"logLevel": "debug"}, "'/logLevel': value must be one of 'info', 'verbose'"),
    ({"image": {"pullPolicy": "Sometimes"}}, "'/image/pullPolicy': value must be one of 'Always'"),
    ({"liveness": {"port": 0}}, "minimum: got 0, want 1"),
    ({"metrics": {"port": 70000}}, "maximum: got 70,000, want 65,535"),
    (
        {"metrics": {"serviceMonitor": {"interval": "often"}}},
        "'/metrics/serviceMonitor/interval': 'often' does not match",
    ),
    ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
    ({"securityContext": {"privileged": True}}, "'/securityContext/privileged': value must be false"),
    (
        {"podSecurityContext": {"runAsNonRoot": False}},
        "'/podSecurityContext/runAsNonRoot': value must be true",
    ),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_schema_rejects_bad_values_with_a_clear_message(values, message):
    with helm.Chart.load(str(OPERATOR_CHART)) as chart:
        with pytest.raises(helm.HelmValuesError) as excinfo:
            chart.validate_schema(chart.merge_values(values))
    assert message in str(excinfo.value)


def test_schema_accepts_every_example_values_file():
    with helm.Chart.load(str(OPERATOR_CHART)) as chart:
        for path in VALUES_FILES:
            chart.validate_schema(chart.merge_values(load_values(path)))


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_operator_accepts_the_arguments_the_chart_passes(values_file):
    runner = pytest.importorskip("reranker_operator.runner", reason="the operator's runner is not built yet")
    values = load_values(values_file)
    container = one(render(OPERATOR_CHART, values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "run"
    args = runner.parse_args(container["args"][1:])  # argparse exits (SystemExit) on an unknown flag
    assert args.namespace == values.get("watchNamespaces", [])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.metrics_port == ports["metrics"]
    assert args.liveness == f"http://0.0.0.0:{ports['liveness']}/healthz"
    assert args.verbose == (values.get("logLevel") == "verbose")
    assert args.peering is None
