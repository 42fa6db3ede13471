"""The router the operator renders in front of the server pods, and the direct path with `router.enabled: false`."""

from __future__ import annotations

from typing import Any

import pytest
from reranker_operator.render import client_settings, load_spec, paths, render_all, selector_labels
from reranker_operator.render.labels import router_selector_labels
from reranker_operator.render.router import CONFIG_HASH_ANNOTATION, build_router_config
from reranker_router.config import DEFAULT_CONFIG_PATH, RouterConfig

NAME, NAMESPACE = "rr", "ai"
MODEL = {"name": "Qwen/Qwen3-Reranker-0.6B"}


def children(**fields: Any) -> dict[tuple[str, str], dict]:
    spec = load_spec({"model": dict(MODEL), **fields})
    return {(m["kind"], m["metadata"]["name"]): m for m in render_all(NAME, NAMESPACE, spec)}


def router_pod(rendered: dict) -> dict:
    return rendered[("Deployment", "rr-router")]["spec"]["template"]


def router_config(rendered: dict) -> RouterConfig:
    return RouterConfig.from_yaml(rendered[("ConfigMap", "rr-router")]["data"]["router.yaml"])


def test_the_client_service_points_at_the_router_and_the_servers_sit_behind_a_headless_service():
    rendered = children()
    service = rendered[("Service", "rr")]
    assert service["spec"]["selector"] == router_selector_labels(NAME)
    assert router_pod(rendered)["metadata"]["labels"].items() >= service["spec"]["selector"].items()
    headless = rendered[("Service", "rr-pods")]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == selector_labels(NAME)
    server_pod = rendered[("Deployment", "rr")]["spec"]["template"]
    assert server_pod["metadata"]["labels"].items() >= headless["spec"]["selector"].items()
    assert headless["spec"]["ports"][0]["targetPort"] == "http"
    # Routers are not server pods: the HPA, the PDB and status never count them.
    assert not router_pod(rendered)["metadata"]["labels"].items() >= selector_labels(NAME).items()


def test_the_router_discovers_the_ready_servers_through_the_headless_service_dns_name():
    rendered = children()
    config = router_config(rendered)
    assert config.discovery is not None
    assert config.discovery.service == f"rr-pods.{NAMESPACE}.svc"
    assert config.discovery.port == paths.CONTAINER_PORT
    assert config.backends == []
    container_ports = [p["containerPort"] for p in router_pod(rendered)["spec"]["containers"][0]["ports"]]
    assert container_ports == [config.port]


def test_direct_service_without_the_router():
    rendered = children(router={"enabled": False})
    assert rendered[("Service", "rr")]["spec"]["selector"] == selector_labels(NAME)
    assert not [key for key in rendered if key[1] in ("rr-router", "rr-pods")]


@pytest.mark.parametrize("router", [{}, {"enabled": False}], ids=["router", "direct"])
def test_clients_keep_the_same_url(router):
    spec = load_spec({"model": dict(MODEL), "router": router})
    assert client_settings(NAME, NAMESPACE, spec).endpoint == f"http://rr.{NAMESPACE}.svc:8000"


def test_router_deployment_shape():
    pod = router_pod(children())
    deployment = children()[("Deployment", "rr-router")]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["reranker-router", "serve", "--config", DEFAULT_CONFIG_PATH]
    assert container["image"] == paths.ROUTER_IMAGE
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert f"{mount['mountPath']}/router.yaml" == DEFAULT_CONFIG_PATH and mount["readOnly"]
    # Small, and no GPU: the router never lands on (or holds) a GPU node's accelerator.
    resources = container["resources"]
    assert resources == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}
    assert "nodeSelector" not in spec and "tolerations" not in spec
    # Spread across nodes (and zones) without ever blocking scheduling on a one-node cluster.
    spread = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["kubernetes.io/hostname"]["labelSelector"]["matchLabels"] == router_selector_labels(NAME)
    # Locked down: non-root, read-only root, no API token (discovery is DNS).
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["automountServiceAccountToken"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert spec["terminationGracePeriodSeconds"] > router_config(children()).drain_seconds


def test_router_settings_from_the_spec():
    rendered = children(
        router={"replicas": 3, "shardDocuments": 64, "image": "r.example/router:1", "resources": {"cpu": 1}},
        limits={"maxDocuments": 500},
        engine={"imagePullSecrets": ["regcred"]},
    )
    config = router_config(rendered)
    assert (config.shard_documents, config.limits.max_documents) == (64, 500)
    pod = router_pod(rendered)
    assert rendered[("Deployment", "rr-router")]["spec"]["replicas"] == 3
    assert pod["spec"]["containers"][0]["image"] == "r.example/router:1"
    assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_a_router_config_change_rolls_the_router_pods_only():
    before, after = children(), children(router={"shardDocuments": 32})
    hash_of = lambda rendered: router_pod(rendered)["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]  # noqa: E731
    assert hash_of(before) != hash_of(after)
    assert before[("Deployment", "rr")] == after[("Deployment", "rr")]


def test_router_pdb():
    pdb = children()[("PodDisruptionBudget", "rr-router")]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == router_selector_labels(NAME)
    assert ("PodDisruptionBudget", "rr-router") not in children(router={"replicas": 1})


def test_the_api_key_is_checked_at_the_router():
    rendered = children(auth={"apiKeySecretRef": {"name": "keys", "key": "api-key"}})
    assert router_config(rendered).auth.api_key_file == paths.API_KEY_FILE
    pod = router_pod(rendered)["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-key")
    assert volume["secret"]["secretName"] == "keys"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "api-key")
    assert paths.API_KEY_FILE.startswith(mount["mountPath"] + "/")
    assert router_config(children()).auth.api_key_file is None


def test_network_policies_admit_clients_at_the_router_and_only_routers_at_the_servers():
    allow = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ragflow"}}}]
    rendered = children(networkPolicy={"enabled": True, "allowFrom": allow})
    front = rendered[("NetworkPolicy", "rr")]
    assert front["spec"]["podSelector"]["matchLabels"] == router_selector_labels(NAME)
    assert front["spec"]["ingress"][0]["from"] == allow
    back = rendered[("NetworkPolicy", "rr-pods")]
    assert back["spec"]["podSelector"]["matchLabels"] == selector_labels(NAME)
    (routers, scrapers) = back["spec"]["ingress"]
    assert routers["from"] == [{"podSelector": {"matchLabels": router_selector_labels(NAME)}}]
    assert router_pod(rendered)["metadata"]["labels"].items() >= router_selector_labels(NAME).items()
    assert scrapers["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    direct = children(router={"enabled": False}, networkPolicy={"enabled": True, "allowFrom": allow})
    assert direct[("NetworkPolicy", "rr")]["spec"]["podSelector"]["matchLabels"] == selector_labels(NAME)
    assert ("NetworkPolicy", "rr-pods") not in direct


def test_router_config_is_the_contract_model():
    spec = load_spec({"model": dict(MODEL)})
    built = build_router_config(NAME, NAMESPACE, spec)
    assert RouterConfig.from_yaml(built.to_yaml()) == built
