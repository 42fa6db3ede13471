"""RBAC of the reranker-operator chart: least privilege, namespaced mode, and coverage of the operator's calls."""

from __future__ import annotations

import json

import pytest

from .helpers import OPERATOR_CHART, ROOT, by_kind, load_values, one, render, values_files

API_CALLS = ROOT / "tests" / "data" / "operator-api-calls.json"
CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings"}
WORKLOAD_RESOURCES = {"deployments", "services", "configmaps", "persistentvolumeclaims", "jobs", "pods"}


def grants(rules: list[dict], verb: str, group: str | None, resource: str) -> bool:
    """Whether RBAC rules allow `verb` on `resource` (plural, optionally `/subresource`) in API group `group`.

    `group=None` means the caller did not record the group; then any group carrying that resource counts.
    """
    return any(
        verb in rule["verbs"]
        and resource in rule["resources"]
        and (group is None or group in rule["apiGroups"])
        for rule in rules
    )


def all_rules(objects: list[dict]) -> list[dict]:
    """Every rule of every Role and ClusterRole."""
    return [rule for obj in objects if obj["kind"] in ("Role", "ClusterRole") for rule in obj["rules"]]


@pytest.mark.parametrize(
    "values_file", values_files(OPERATOR_CHART), ids=lambda p: "default" if p is None else p.name
)
def test_no_rule_uses_a_wildcard(values_file):
    values = load_values(values_file)
    for enabled in (False, True):
        values["peering"] = {"enabled": enabled}
        for rule in all_rules(render(OPERATOR_CHART, values)):
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], rule
            assert "resourceNames" not in rule or "*" not in rule["resourceNames"]
            assert "nonResourceURLs" not in rule, "the operator needs no non-resource URLs"


def test_default_is_cluster_wide_and_bound_to_the_service_account():
    objects = render(OPERATOR_CHART, namespace="ops")
    role = one(objects, "ClusterRole")
    binding = one(objects, "ClusterRoleBinding")
    assert by_kind(objects, "Role") == []
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": one(objects, "ServiceAccount")["metadata"]["name"],
            "namespace": "ops",
        }
    ]


def test_namespaced_mode_renders_roles_not_cluster_roles():
    objects = render(OPERATOR_CHART, {"watchNamespaces": ["team-a", "team-b"]}, namespace="ops")
    assert by_kind(objects, "ClusterRole") == [] and by_kind(objects, "ClusterRoleBinding") == []
    roles = by_kind(objects, "Role")
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == "ops"


def test_namespaced_roles_grant_the_same_rules_as_the_cluster_role():
    cluster_rules = one(render(OPERATOR_CHART), "ClusterRole")["rules"]
    for role in by_kind(render(OPERATOR_CHART, {"watchNamespaces": ["team-a"]}), "Role"):
        # The ClusterRole additionally holds the cluster-scoped observation rules (CRDs, namespaces).
        assert [r for r in cluster_rules if r not in role["rules"]] == [
            {
                "apiGroups": ["apiextensions.k8s.io"],
                "resources": ["customresourcedefinitions"],
                "verbs": ["list", "watch"],
            },
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        ]


def test_cluster_observation_in_namespaced_mode_is_read_only_and_touches_no_workloads():
    objects = render(OPERATOR_CHART, {"watchNamespaces": ["team-a"], "rbac": {"observeCluster": True}})
    (cluster_role,) = by_kind(objects, "ClusterRole")
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
        assert not WORKLOAD_RESOURCES & set(rule["resources"])


def test_the_operator_may_not_write_pods_replicasets_or_secrets():
    rules = one(render(OPERATOR_CHART), "ClusterRole")["rules"]
    for verb in ("create", "patch", "update", "delete"):
        assert not grants(rules, verb, "", "pods")
        assert not grants(rules, verb, "apps", "replicasets")
    for verb in ("get", "list", "watch", "create"):
        assert not grants(rules, verb, "", "secrets"), (
            "Secrets are mounted by the pod, never read by the operator"
        )
    assert grants(rules, "list", "", "pods") and grants(rules, "list", "apps", "replicasets")


def test_peering_rights_only_when_peering_is_enabled():
    def peering_rules(values):
        return [r for r in all_rules(render(OPERATOR_CHART, values)) if "kopf.dev" in r["apiGroups"]]

    assert peering_rules({}) == []
    assert {res for r in peering_rules({"peering": {"enabled": True}}) for res in r["resources"]} == {
        "kopfpeerings",
        "clusterkopfpeerings",
    }
    container = one(render(OPERATOR_CHART, {"peering": {"enabled": True}}), "Deployment")["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert "--peering=reranker-operator" in container["args"]


def _is_discovery(entry) -> bool:
    """API discovery (GET /apis/<group>/<version>) is recorded without a resource; it is a non-resource URL that
    the built-in system:discovery ClusterRole allows for every authenticated user, so the chart grants nothing."""
    resource = entry.get("resource") if isinstance(entry, dict) else entry[-1]
    return resource in (None, "", "None")


def _recorded_calls() -> list[tuple[str, str | None, str]]:
    """(verb, group or None, resource[/subresource]) from the operator's recorded e2e API calls."""
    data = json.loads(API_CALLS.read_text())
    entries = data.get("calls", data) if isinstance(data, dict) else data
    calls = []
    for entry in entries:
        if _is_discovery(entry):
            continue
        if isinstance(entry, dict):
            verb = entry["verb"]
            group = entry.get("group", entry.get("apiGroup"))
            resource = entry["resource"]
            if entry.get("subresource"):
                resource = f"{resource}/{entry['subresource']}"
        else:
            verb, resource = entry[0], entry[-1]
            group = entry[1] if len(entry) == 3 else None
        calls.append((verb, None if group is None else ("" if group in ("core", "v1") else group), resource))
    return calls


@pytest.mark.skipif(
    not API_CALLS.exists(),
    reason=f"{API_CALLS.relative_to(ROOT)} not recorded yet (the operator's e2e tests write it)",
)
@pytest.mark.parametrize(
    "values",
    [{}, {"watchNamespaces": ["team-a"], "rbac": {"observeCluster": True}}],
    ids=["cluster", "namespaced"],
)
def test_chart_grants_every_call_the_operator_makes(values):
    objects = render(OPERATOR_CHART, values)
    # In namespaced mode the Roles must cover namespaced calls; cluster-scoped observation comes from the
    # read-only ClusterRole. In cluster mode the ClusterRole covers everything.
    role_rules = all_rules(by_kind(objects, "Role")) or all_rules(objects)
    cluster_rules = all_rules(by_kind(objects, "ClusterRole"))
    calls = _recorded_calls()
    assert calls, "the recorded call list is empty"
    missing = [c for c in calls if not grants(cluster_rules if c[2] in CLUSTER_SCOPED else role_rules, *c)]
    assert missing == [], f"the chart does not grant these recorded calls: {missing}"


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a"]}], ids=["cluster", "namespaced"])
def test_the_operator_holds_every_permission_it_grants_the_router(values):
    """Kubernetes refuses a Role or RoleBinding that grants more than its creator holds (RBAC privilege-escalation
    prevention), so the router's Role for scale to zero must be covered by the operator's own rules."""
    from reranker_operator.render import load_spec, render_router_role

    spec = load_spec({"model": {"name": "m"}, "autoscaling": {"minReplicas": 0}})
    router_role = render_router_role("demo", "team-a", spec)
    assert router_role is not None
    rules = all_rules(by_kind(render(OPERATOR_CHART, values), "Role")) or all_rules(
        render(OPERATOR_CHART, values)
    )
    for rule in router_role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert grants(rules, verb, group, resource), (verb, group, resource)
    for kind in ("serviceaccounts", "roles", "rolebindings"):
        group = "" if kind == "serviceaccounts" else "rbac.authorization.k8s.io"
        for verb in ("list", "watch", "patch", "delete"):
            assert grants(rules, verb, group, kind), (verb, kind)
