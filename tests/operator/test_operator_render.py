"""Table-driven tests of the pure renderers: what each spec variant must (and must not) produce."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from reranker_operator import API_VERSION, KIND
from reranker_operator.render import (
    GENERATION_ANNOTATION,
    client_settings,
    load_spec,
    render_all,
    selector_labels,
    selector_string,
)
from reranker_operator.render.labels import common_labels
from reranker_operator.render.scaling import DEFAULT_TARGETS, METRICS
from reranker_operator.render.validation import RESERVED_ENV
from reranker_operator.render.workload import CONFIG_HASH_ANNOTATION
from reranker_server.config import SHUTDOWN_MARGIN_SECONDS, ServerConfig
from reranker_server.download import MARKER as DOWNLOAD_MARKER

ROOT_DIR = Path(__file__).resolve().parents[2]
NAME, NAMESPACE, UID = "rr", "ai", "0f6c2d9e-1111-4222-8333-444455556666"
MODEL = {"name": "Qwen/Qwen3-Reranker-0.6B"}
# These tests are about the server's children; the router's are in test_operator_router.py.
DIRECT = {"router": {"enabled": False}}
# Naming a StorageClass opts into the shared cache (PVC + download Job); without one the download is per pod.
SHARED = {"storageClassName": "rwx"}


def render(**fields: Any) -> dict[str, dict]:
    """render_all of a spec built from `fields` (no router), keyed by kind (ConfigMaps by name)."""
    spec = load_spec({"model": dict(MODEL), **DIRECT, **fields})
    manifests = render_all(NAME, NAMESPACE, spec, uid=UID)
    by_kind = {m["metadata"]["name"] if m["kind"] == "ConfigMap" else m["kind"]: m for m in manifests}
    assert len(by_kind) == len(manifests), "one child per kind besides the two ConfigMaps"
    return by_kind


def pod_spec(children: dict[str, dict]) -> dict:
    return children["Deployment"]["spec"]["template"]["spec"]


def server(children: dict[str, dict]) -> dict:
    return pod_spec(children)["containers"][0]


def env(container: dict) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def server_config(children: dict[str, dict]) -> ServerConfig:
    return ServerConfig.from_yaml(children[f"{NAME}-config"]["data"]["server.yaml"])


@pytest.mark.parametrize(
    ("fields", "kinds"),
    [
        ({}, ["ConfigMap", "Deployment", "Service"]),
        ({"replicas": 3}, ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]),
        (
            {"autoscaling": {}},
            ["ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"],
        ),
        ({"autoscaling": {"enabled": False}}, ["ConfigMap", "Deployment", "Service"]),
        ({"model": {**MODEL, "cache": {}}}, ["ConfigMap", "Deployment", "Service"]),
        (
            {"model": {**MODEL, "cache": SHARED}},
            ["ConfigMap", "PersistentVolumeClaim", "Job", "Deployment", "Service"],
        ),
        ({"networkPolicy": {"enabled": True}}, ["ConfigMap", "Deployment", "Service", "NetworkPolicy"]),
    ],
    ids=[
        "minimal",
        "replicas-3",
        "autoscaling",
        "autoscaling-disabled",
        "per-pod-cache",
        "shared-cache",
        "network-policy",
    ],
)
def test_wanted_children_only(fields: dict, kinds: list[str]) -> None:
    spec = load_spec({"model": dict(MODEL), **DIRECT, **fields})
    rendered = [m["kind"] for m in render_all(NAME, NAMESPACE, spec)]
    assert [kind for kind in rendered if kind != "ConfigMap"] == [
        kind for kind in kinds if kind != "ConfigMap"
    ]
    assert rendered.count("ConfigMap") == 2


def test_names_labels_namespace_and_owner_on_every_child() -> None:
    spec = load_spec(
        {"model": {**MODEL, "cache": SHARED}, "autoscaling": {}, "networkPolicy": {"enabled": True}}
    )
    manifests = render_all(NAME, NAMESPACE, spec, uid=UID, generation=7)
    names = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    assert names == {
        ("ConfigMap", "rr-config"),
        ("ConfigMap", "rr-clients"),
        ("PersistentVolumeClaim", "rr-model-cache"),
        ("Job", "rr-download"),
        ("Deployment", "rr"),
        ("Service", "rr"),
        ("HorizontalPodAutoscaler", "rr"),
        ("PodDisruptionBudget", "rr"),
        ("NetworkPolicy", "rr"),
        # The router (on by default) and the headless Service it discovers the server pods through.
        ("ConfigMap", "rr-router"),
        ("Deployment", "rr-router"),
        ("PodDisruptionBudget", "rr-router"),
        ("Service", "rr-pods"),
        ("NetworkPolicy", "rr-pods"),
    }
    for manifest in manifests:
        meta = manifest["metadata"]
        assert meta["namespace"] == NAMESPACE
        component = meta["labels"]["app.kubernetes.io/component"]
        assert meta["labels"] == common_labels(NAME, component)
        assert meta["ownerReferences"] == [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": NAME,
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["annotations"][GENERATION_ANNOTATION] == "7"


def test_no_owner_reference_or_generation_without_them() -> None:
    for manifest in render_all(NAME, NAMESPACE, load_spec({"model": MODEL})):
        assert "ownerReferences" not in manifest["metadata"]
        assert GENERATION_ANNOTATION not in manifest["metadata"].get("annotations", {})


def test_render_is_deterministic() -> None:
    spec = {"model": {**MODEL, "cache": {}}, "gpusPerPod": 2, "autoscaling": {}}
    first = yaml.safe_dump_all(render_all(NAME, NAMESPACE, load_spec(spec), uid=UID))
    second = yaml.safe_dump_all(render_all(NAME, NAMESPACE, load_spec(spec), uid=UID))
    assert first == second


@pytest.mark.parametrize(
    ("fields", "gpu_limit", "shm", "tp"),
    [
        ({}, "1", None, 1),
        ({"gpusPerPod": 2}, "2", "4Gi", 2),
        ({"gpusPerPod": 4, "resources": {"sharedMemory": "16384Mi"}}, "4", "16Gi", 4),
    ],
)
def test_gpu_pods(fields: dict, gpu_limit: str, shm: str | None, tp: int) -> None:
    children = render(**fields)
    container = server(children)
    # Quantities are rendered as kube-apiserver stores them (strings, canonical), so reading back is no drift.
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpu_limit
    assert container["image"] == "ghcr.io/reranker-operator/reranker-server:0.1.0"
    volumes = {v["name"]: v for v in pod_spec(children)["volumes"]}
    if shm is None:
        assert "dshm" not in volumes
    else:
        assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": shm}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    config = server_config(children)
    assert (config.engine.device, config.engine.tensor_parallel_size) == ("gpu", tp)
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(children)[
        "tolerations"
    ]


def test_cpu_pods() -> None:
    children = render(gpusPerPod=0, engine={"cpuThreadsBind": "0-1"})
    container = server(children)
    assert container["image"] == "ghcr.io/reranker-operator/reranker-server-cpu:0.1.0"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["resources"]["limits"]["cpu"] == container["resources"]["requests"]["cpu"] == "2"
    assert "tolerations" not in pod_spec(children)
    config = server_config(children)
    assert config.engine.device == "cpu"
    # Unset cache size: the server's own default for the model kind applies (not a fixed 1 GiB).
    assert (config.engine.cpu_kvcache_space_gib, config.engine.cpu_threads_bind) == (None, "0-1")
    sized = server_config(render(gpusPerPod=0, engine={"cpuKvcacheSpaceGib": 3}))
    assert sized.engine.cpu_kvcache_space_gib == 3


def test_server_command_ports_probes_and_drain() -> None:
    children = render(rollout={"startupTimeoutSeconds": 600, "drainSeconds": 20})
    container = server(children)
    assert container["command"] == ["reranker-server", "serve", "--config", "/etc/reranker/server.yaml"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # preStop covers endpoint propagation; the grace period covers preStop + the server's drain + engine stop.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pre_stop >= 5
    assert pod_spec(children)["terminationGracePeriodSeconds"] >= pre_stop + 20 + SHUTDOWN_MARGIN_SECONDS
    assert server_config(children).shutdown.drain_seconds == 20  # the server's drain deadline
    deployment = children["Deployment"]["spec"]
    assert deployment["progressDeadlineSeconds"] > 600
    assert deployment["revisionHistoryLimit"] == 3
    assert deployment["selector"]["matchLabels"] == selector_labels(NAME)
    assert children["Service"]["spec"]["selector"] == selector_labels(NAME)
    config_mount = {"name": "config", "mountPath": "/etc/reranker", "readOnly": True}
    assert config_mount in container["volumeMounts"]


def test_every_container_is_locked_down() -> None:
    children = render(model={**MODEL, "cache": SHARED})
    pod_security = pod_spec(children)["securityContext"]
    assert (
        pod_security["runAsNonRoot"] and pod_security["runAsUser"] == 1000 and pod_security["fsGroup"] == 1000
    )
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec(children)["automountServiceAccountToken"] is False
    job_pod = children["Job"]["spec"]["template"]["spec"]
    containers = [
        *pod_spec(children)["containers"],
        *pod_spec(children)["initContainers"],
        *job_pod["containers"],
    ]
    for container in containers:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in server(children)["volumeMounts"]}
    assert {"/tmp", "/home/reranker"} <= mounts
    assert env(server(children))["HOME"] == "/home/reranker"


@pytest.mark.parametrize(
    ("strategy", "surge", "unavailable"), [(None, 1, 0), ("Surge", 1, 0), ("Replace", 0, 1)]
)
def test_rollout_strategies(strategy: str | None, surge: int, unavailable: int) -> None:
    children = render(**({"rollout": {"strategy": strategy}} if strategy else {}))
    rolling = children["Deployment"]["spec"]["strategy"]
    assert rolling == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
    }


def test_autoscaling_owns_replicas_and_uses_the_server_gauge() -> None:
    children = render(replicas=5, autoscaling={"minReplicas": 2, "maxReplicas": 6})
    assert "replicas" not in children["Deployment"]["spec"]
    hpa = children["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "reranker_tokens_in_flight"},
                "target": {"type": "AverageValue", "averageValue": DEFAULT_TARGETS["tokensInFlight"]},
            },
        }
    ]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


@pytest.mark.parametrize("metric", ["pairsInFlight", "pairsWaiting", "tokensInFlight"])
def test_each_metric_has_its_own_default_target(metric: str) -> None:
    hpa = render(autoscaling={"metric": metric})["HorizontalPodAutoscaler"]["spec"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == METRICS[metric]
    assert hpa["metrics"][0]["pods"]["target"]["averageValue"] == DEFAULT_TARGETS[metric]


def test_autoscaling_on_waiting_pairs_with_own_behavior() -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 60}}
    hpa = render(autoscaling={"metric": "pairsWaiting", "targetAverageValue": 8, "behavior": behavior})
    spec = hpa["HorizontalPodAutoscaler"]["spec"]
    assert spec["metrics"][0]["pods"]["metric"]["name"] == "reranker_pairs_waiting"
    assert spec["metrics"][0]["pods"]["target"]["averageValue"] == "8"
    assert spec["behavior"] == behavior


def test_fixed_replicas_and_pdb() -> None:
    children = render(replicas=3)
    assert children["Deployment"]["spec"]["replicas"] == 3
    pdb = children["PodDisruptionBudget"]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"] == selector_labels(NAME)
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_hub_download_in_the_pod_without_cache() -> None:
    token = {"name": "hf-token", "key": "token"}
    children = render(model={**MODEL, "source": {"huggingface": {"revision": "v2", "tokenSecretRef": token}}})
    variables = env(server(children))
    assert variables["HF_TOKEN"] == {"secretKeyRef": token}
    assert "HF_HUB_OFFLINE" not in variables
    assert variables["HF_HOME"].startswith("/home/reranker/")
    assert server_config(children).model.revision == "v2"
    assert "initContainers" not in pod_spec(children)


def test_cache_pvc_job_and_wait() -> None:
    token = {"name": "hf-token", "key": "token"}
    cache = {"size": "50Gi", "storageClassName": "fast", "accessMode": "ReadWriteOnce"}
    children = render(model={**MODEL, "cache": cache, "source": {"huggingface": {"tokenSecretRef": token}}})
    pvc = children["PersistentVolumeClaim"]["spec"]
    assert pvc == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "50Gi"}},
        "storageClassName": "fast",
    }
    variables = env(server(children))
    assert variables["HF_HUB_OFFLINE"] == "1"
    assert "HF_TOKEN" not in variables, "server pods read the cache; only the Job needs the token"
    volumes = {v["name"]: v for v in pod_spec(children)["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "rr-model-cache", "readOnly": True}
    download_dir = server_config(children).model.download_dir
    assert download_dir is not None and download_dir.startswith("/models/")

    job = children["Job"]
    job_pod = job["spec"]["template"]["spec"]
    job_container = job_pod["containers"][0]
    assert job_container["command"] == [
        "reranker-server",
        "download",
        "--config",
        "/etc/reranker/server.yaml",
    ]
    assert env(job_container)["HF_TOKEN"] == {"secretKeyRef": token}
    assert {"name": "models", "mountPath": "/models"} in job_container["volumeMounts"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "rr-model-cache"}} in job_pod["volumes"]
    assert job["spec"]["backoffLimit"] > 0
    # A finished Job is the record ModelCached is observed from: a TTL would delete it and re-run the download.
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert job_pod["restartPolicy"] == "Never"
    wait = pod_spec(children)["initContainers"][0]
    assert f"[ -f {download_dir}/{DOWNLOAD_MARKER} ]" in wait["command"][-1]


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_per_pod_cache_downloads_in_an_init_container_without_any_storage_class(device: str) -> None:
    """The default cache works on any cluster: no PVC, an emptyDir of the cache size, offline server."""
    token = {"name": "hf-token", "key": "token"}
    model = {**MODEL, "cache": {"size": "30Gi"}, "source": {"huggingface": {"tokenSecretRef": token}}}
    children = render(model=model, **({"gpusPerPod": 0} if device == "cpu" else {}))
    assert "PersistentVolumeClaim" not in children and "Job" not in children
    pod = pod_spec(children)
    assert {v["name"]: v for v in pod["volumes"]}["models"] == {
        "name": "models",
        "emptyDir": {"sizeLimit": "30Gi"},
    }
    [download] = pod["initContainers"]
    assert download["command"] == ["reranker-server", "download", "--config", "/etc/reranker/server.yaml"]
    assert env(download)["HF_TOKEN"] == {"secretKeyRef": token}
    assert {"name": "models", "mountPath": "/models"} in download["volumeMounts"]
    assert download["resources"]["requests"]["ephemeral-storage"] == "30Gi"
    if device == "cpu":  # Guaranteed QoS needs limits == requests in every container, init ones included
        for key in ("cpu", "memory"):
            assert download["resources"]["limits"][key] == download["resources"]["requests"][key]
    variables = env(server(children))
    assert variables["HF_HUB_OFFLINE"] == "1" and "HF_TOKEN" not in variables
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in server(children)["volumeMounts"]
    download_dir = server_config(children).model.download_dir
    assert download_dir is not None and download_dir.startswith("/models/")


def test_shared_cache_defaults_to_read_write_many_on_the_named_class() -> None:
    pvc = render(model={**MODEL, "cache": SHARED})["PersistentVolumeClaim"]["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"] and pvc["storageClassName"] == "rwx"
    rwo = render(model={**MODEL, "cache": {"accessMode": "ReadWriteOnce"}})["PersistentVolumeClaim"]["spec"]
    assert rwo["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in rwo


def test_cache_directory_follows_model_and_revision() -> None:
    def download_dir(revision: str) -> str | None:
        source = {"huggingface": {"revision": revision}}
        return server_config(render(model={**MODEL, "cache": {}, "source": source})).model.download_dir

    assert download_dir("main") != download_dir("v2")
    assert server_config(render()).model.download_dir is None


def test_job_template_hash_changes_with_the_template() -> None:
    def template_hash(revision: str = "main", **fields: Any) -> str:
        model = {**MODEL, "cache": SHARED, "source": {"huggingface": {"revision": revision}}}
        return render(model=model, **fields)["Job"]["metadata"]["annotations"]["reranker.dev/template-hash"]

    assert template_hash() == template_hash(replicas=2, limits={"maxDocuments": 5})
    assert template_hash() != template_hash("v2"), "a new snapshot must replace a finished Job"
    assert template_hash() != template_hash(engine={"image": "example.com/reranker:2"})


def test_pvc_source() -> None:
    source = {"pvc": {"claimName": "models", "path": "BAAI/bge-reranker-v2-m3"}}
    children = render(model={"name": "bge", "source": source})
    volumes = {v["name"]: v for v in pod_spec(children)["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert env(server(children))["HF_HUB_OFFLINE"] == "1"
    assert server_config(children).model.name == "/models/BAAI/bge-reranker-v2-m3"
    assert "PersistentVolumeClaim" not in children and "Job" not in children


def test_auth_mounts_the_key_file() -> None:
    children = render(auth={"apiKeySecretRef": {"name": "reranker-key", "key": "key"}})
    volumes = {v["name"]: v for v in pod_spec(children)["volumes"]}
    assert volumes["api-key"]["secret"]["secretName"] == "reranker-key"
    assert volumes["api-key"]["secret"]["items"] == [{"key": "key", "path": "api-key"}]
    mount = next(m for m in server(children)["volumeMounts"] if m["name"] == "api-key")
    key_file = server_config(children).auth.api_key_file
    assert key_file == f"{mount['mountPath']}/api-key"
    assert server_config(render()).auth.api_key_file is None


def test_network_policy() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ragflow"}}}]
    policy = render(networkPolicy={"enabled": True, "allowFrom": peers})["NetworkPolicy"]["spec"]
    assert policy["podSelector"] == {"matchLabels": selector_labels(NAME)}
    assert policy["policyTypes"] == ["Ingress"]
    assert [rule["from"] for rule in policy["ingress"]] == [
        peers,
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    ]
    assert all(rule["ports"] == [{"port": "http", "protocol": "TCP"}] for rule in policy["ingress"])


def test_config_hash_rolls_pods_only_on_config_change() -> None:
    def config_hash(**fields: Any) -> str:
        return render(**fields)["Deployment"]["spec"]["template"]["metadata"]["annotations"][
            CONFIG_HASH_ANNOTATION
        ]

    assert config_hash() == config_hash(replicas=4)
    assert config_hash() != config_hash(limits={"maxDocuments": 10})


def test_server_config_passes_the_engine_through() -> None:
    config = server_config(
        render(
            model={**MODEL, "maxModelLen": 4096, "instruction": "find answers", "family": "qwen3-reranker"},
            engine={
                "gpuMemoryUtilization": 0.8,
                "maxNumSeqs": 64,
                "extraArgs": ["--seed", "1"],
                "dtype": "bfloat16",
            },
            limits={"maxDocuments": 200},
        )
    )
    assert config.model.max_model_len == 4096 and config.model.instruction == "find answers"
    assert config.model.family == "qwen3-reranker"
    assert (config.engine.gpu_memory_utilization, config.engine.max_num_seqs) == (0.8, 64)
    assert config.engine.extra_args == ["--seed", "1"] and config.engine.dtype == "bfloat16"
    assert config.limits.max_documents == 200
    assert config.port == 8000


def test_operator_env_names_are_reserved_for_users() -> None:
    token = {"name": "t", "key": "k"}
    for model in ({**MODEL, "cache": {}}, {**MODEL, "source": {"huggingface": {"tokenSecretRef": token}}}):
        children = render(model=model)
        assert set(env(server(children))) <= set(RESERVED_ENV)
    user = render(engine={"env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]})
    assert env(server(user))["VLLM_LOGGING_LEVEL"] == "DEBUG"


def test_scheduling_passthrough() -> None:
    scheduling = {
        "nodeSelector": {"gpu": "a100"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "priorityClassName": "high",
    }
    pod = pod_spec(render(scheduling=scheduling, engine={"imagePullSecrets": ["regcred"]}))
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert scheduling["tolerations"][0] in pod["tolerations"]
    assert pod["affinity"] == {"nodeAffinity": {}} and pod["priorityClassName"] == "high"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


@pytest.mark.parametrize(
    ("model", "served"),
    [
        ({"name": "Qwen/Qwen3-Reranker-0.6B"}, "qwen3-reranker-0.6b"),
        ({"name": "cross-encoder/ms-marco-MiniLM-L6-v2"}, "ms-marco-minilm-l6-v2-reranker"),
        ({"name": "BAAI/bge-reranker-v2-m3"}, "bge-reranker-v2-m3"),
        ({"name": "x", "servedName": "my-model"}, "my-model"),
    ],
)
def test_served_name(model: dict, served: str) -> None:
    assert server_config(render(model=model)).model.served_name == served


def test_client_settings_and_configmap() -> None:
    spec = load_spec({"model": {**MODEL, "servedName": "qwen3-reranker"}, "service": {"port": 9000}})
    settings = client_settings(NAME, NAMESPACE, spec)
    assert settings.endpoint == "http://rr.ai.svc:9000"
    assert settings.ragflow.vllm_base_url == "http://rr.ai.svc:9000"  # RAGFlow adds /v1 itself
    assert settings.ragflow.openai_compatible_base_url == "http://rr.ai.svc:9000/v1"
    assert settings.ragflow.huggingface_base_url == "http://rr.ai.svc:9000"
    assert settings.ragflow.model_name == settings.model == "qwen3-reranker"
    assert settings.dify.endpoint_url == "http://rr.ai.svc:9000/v1"
    assert settings.langchain.base_url == "http://rr.ai.svc:9000"
    clients = next(m for m in render_all(NAME, NAMESPACE, spec) if m["metadata"]["name"] == "rr-clients")
    assert clients["data"]["RAGFLOW_VLLM_BASE_URL"] == "http://rr.ai.svc:9000"
    assert yaml.safe_load(clients["data"]["clients.yaml"])["ragflow"]["modelName"] == "qwen3-reranker"


def test_selector_string_matches_selector_labels() -> None:
    pairs = dict(item.split("=") for item in selector_string(NAME).split(","))
    assert pairs == selector_labels(NAME)


def qos_class(pod: dict) -> str:
    """The QoS class the kubelet gives a pod, by the rules of
    https://kubernetes.io/docs/concepts/workloads/pods/pod-qos/ (every container, init containers included)."""
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    resources = [c.get("resources", {}) for c in containers]
    guaranteed = all(
        key in r.get("limits", {}) and r["limits"][key] == r.get("requests", {}).get(key, r["limits"][key])
        for r in resources
        for key in ("cpu", "memory")
    )
    if guaranteed:
        return "Guaranteed"
    if any(r.get("requests") or r.get("limits") for r in resources):
        return "Burstable"
    return "BestEffort"


@pytest.mark.parametrize(
    "model",
    [
        MODEL,
        {**MODEL, "cache": {"size": "30Gi"}},
        {**MODEL, "cache": {**SHARED, "size": "30Gi"}},
        {**MODEL, "source": {"pvc": {"claimName": "weights"}}},
    ],
    ids=["no-cache", "per-pod-cache", "shared-cache", "pvc-source"],
)
def test_cpu_pods_are_guaranteed_qos_whatever_the_cache(model: dict) -> None:
    """CPU pods pin their threads to exclusive cores, which the static CPU manager grants Guaranteed pods only."""
    assert qos_class(pod_spec(render(model=model, gpusPerPod=0))) == "Guaranteed"


@pytest.mark.parametrize("example", sorted((ROOT_DIR / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_config_maps_are_the_same_text_with_either_yaml_emitter(example):
    """The server's and router's configs are written with libyaml's emitter (fast); the text (and so the config
    hash that rolls pods) must be what the pure-Python emitter writes."""
    from reranker_router.config import RouterConfig

    spec = load_spec(yaml.safe_load(example.read_text())["spec"])
    checked = 0
    for obj in render_all("demo", "team", spec, uid="u"):
        for key, text in (obj.get("data") or {}).items() if obj["kind"] == "ConfigMap" else ():
            model = {"server.yaml": ServerConfig, "router.yaml": RouterConfig}.get(key)
            if model is None:
                continue
            config = model.from_yaml(text)
            assert config.to_yaml() == text
            assert text == yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=True)
            checked += 1
    assert checked >= 1
