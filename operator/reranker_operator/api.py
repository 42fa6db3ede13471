"""The RerankerDeployment API: pydantic models that are the single source of the CRD schema.

Field docs become CRD descriptions, `Field` bounds become schema bounds, and the cross-field rules that the
API server can check itself are attached as CEL `x-kubernetes-validations` next to the model they guard
(`crd.py` turns all of this into the CRD). Rules that need knowledge outside the object (the server's model
families) live in `render.validation`.

YAML uses camelCase (`gpusPerPod`); Python uses snake_case (`gpus_per_pod`).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

# Kubernetes resource.Quantity, e.g. "4", "500m", "24Gi".
# The grammar of k8s.io/apimachinery's ParseQuantity: the exponent of the `e` form is an integer ("1e3", never
# "1e0.5", which the looser OpenAPI pattern of the built-in types lets through and the API server then refuses).
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$"
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)


def _to_quantity(value: Any) -> Any:
    """Accept `cpu: 4` as well as `cpu: "4"` (YAML users write both), and refuse malformed strings."""
    if isinstance(value, bool):
        raise ValueError("a quantity must be a number or a string such as 500m or 24Gi")
    if isinstance(value, int | float):
        value = str(value)
    if isinstance(value, str) and not _QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (examples: 4, 500m, 24Gi)")
    if isinstance(value, str) and _out_of_range(value):
        raise ValueError(
            f"{value!r} is out of range for a Kubernetes quantity (|value| < 2^63, exponent ±36)"
        )
    return value


def _out_of_range(value: str) -> bool:
    """True beyond int64, the range every quantity the operator renders is read in (Quantity.Value())."""
    match = _QUANTITY_RE.match(value)
    assert match is not None
    sign, mantissa, suffix = match.group(1) or "", match.group(2), match.group(6) or ""
    if suffix[:1] in ("e", "E") and suffix[1:2] != "i" and len(suffix) > 1:
        exponent = int(suffix[1:])
        if abs(exponent) > 36:  # decide without building a number of a million digits
            return True
        scale = Fraction(10) ** exponent
    else:
        scale = _SUFFIX_SCALE[suffix]
    return len(mantissa) > 40 or abs(Fraction(sign + mantissa) * scale) >= 2**63


_SUFFIX_SCALE = {
    "": 1,
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    **{suffix: 1000 ** (i + 1) for i, suffix in enumerate("kMGTPE")},
    **{f"{suffix}i": 1024 ** (i + 1) for i, suffix in enumerate("KMGTPE")},
}


Quantity = Annotated[
    str,
    BeforeValidator(_to_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
        }
    ),
]
# Free-form Kubernetes objects (affinity, tolerations, env, ...): the API server validates them for the
# Deployment; the CRD keeps them with x-kubernetes-preserve-unknown-fields.
FreeForm = Annotated[
    dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
]
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SecretKeyRef(_Model):
    """A key inside a Secret in the RerankerDeployment's namespace."""

    name: str = Field(..., max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")
    key: str = Field(..., max_length=253, pattern=SECRET_KEY, description="Key inside the Secret.")


class HuggingFaceSource(_Model):
    """Download the model from the Hugging Face hub (into the cache PVC when `model.cache` is set)."""

    revision: str | None = Field(None, max_length=255, description="Branch, tag or commit; default: main.")
    token_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding an HF token (gated or private models); passed as HF_TOKEN."
    )


class PvcSource(_Model):
    """Serve a model that is already on a PersistentVolumeClaim (mounted read-only at /models)."""

    claim_name: str = Field(..., max_length=253, pattern=DNS_SUBDOMAIN, description="Existing PVC name.")
    path: str | None = Field(
        None,
        max_length=1024,
        description="Model directory relative to the claim's root; default: `model.name`.",
    )


class ModelSource(_Model):
    """Where the weights come from: exactly one of `huggingface` or `pvc`."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.huggingface) ? 1 : 0) + (has(self.pvc) ? 1 : 0) == 1",
                    "message": "set exactly one of model.source.huggingface or model.source.pvc",
                }
            ]
        }
    )

    huggingface: HuggingFaceSource | None = Field(None, description="Hugging Face hub source.")
    pvc: PvcSource | None = Field(None, description="Pre-populated PersistentVolumeClaim source.")


class ModelCache(_Model):
    """Download the model before the server starts, so the startup probe never waits on the hub.

    Two shapes. Per pod (the default, no `storageClassName` or `accessMode`): an init container downloads into
    an ephemeral volume of `size`; it needs no StorageClass and works on every cluster, at the cost of one
    download per pod. Shared (opt-in, by naming a `storageClassName` or an `accessMode`): a Job downloads once
    into PVC `<name>-model-cache` that every replica mounts read-only; give it a class that provides the access
    mode (ReadWriteMany for replicas on several nodes).
    """

    size: Quantity = Field(
        "20Gi", description="Volume size; leave room for the weights plus tokenizer files."
    )
    storage_class_name: str | None = Field(
        None,
        max_length=253,
        description=(
            "Shared cache: StorageClass of PVC <name>-model-cache (one that offers accessMode, e.g. an NFS, "
            "Filestore or EFS class for ReadWriteMany). Unset with no accessMode: per-pod download instead."
        ),
    )
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] | None = Field(
        None,
        description=(
            "Shared cache: PVC access mode; default ReadWriteMany when storageClassName is set. "
            "ReadWriteOnce (with the cluster's default class) only when every replica runs on one node."
        ),
    )

    @property
    def shared(self) -> bool:
        """True for the shared PVC + download Job; False for the per-pod download."""
        return self.storage_class_name is not None or self.access_mode is not None


class ModelSpec(_Model):
    """Which reranker to serve and how clients name it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.cache) || !has(self.source) || !has(self.source.pvc)",
                    "message": "model.cache only applies to a huggingface source; a pvc source is already local",
                }
            ]
        }
    )

    name: str = Field(
        ...,
        min_length=1,
        max_length=1024,
        description=(
            "Hub id (e.g. Qwen/Qwen3-Reranker-0.6B), or with a pvc source the model directory relative to the "
            "claim's root."
        ),
    )
    served_name: str | None = Field(
        None,
        max_length=256,
        pattern=r"^\S+$",
        description=(
            "The `model` clients send. Default: the last part of `name`, lower-cased, with `-reranker` "
            "appended unless it already contains `rerank` (RAGFlow only lists models whose name does)."
        ),
    )
    family: str = Field(
        "auto",
        max_length=128,
        description="Model family from the server's profile table (prompt template, vLLM flags), or auto.",
    )
    max_model_len: int | None = Field(None, ge=16, description="Longest query+document pair in tokens.")
    instruction: str | None = Field(
        None, max_length=4096, description="Default instruction for instruction-aware rerankers (Qwen3)."
    )
    trust_remote_code: bool = Field(False, description="Allow the model repository's own Python code.")
    source: ModelSource | None = Field(None, description="Where the weights come from; default: huggingface.")
    cache: ModelCache | None = Field(
        None,
        description=(
            "Download before the server starts: per pod into an ephemeral volume (default), or once into a "
            "shared PVC when a storageClassName or accessMode is given."
        ),
    )


class ScaleToZero(_Model):
    """Scale to zero (with `minReplicas: 0`): the router stops the last server pod after `idleSeconds` without
    a request and starts one when a request arrives, holding it for up to `holdSeconds` (docs/scaling.md)."""

    idle_seconds: int = Field(
        600,
        ge=60,
        le=86400,
        description=(
            "No request for this long -> 0 server pods. Default 600 s, the HPA's default scale-down "
            "stabilization: a GPU pod costs minutes to start again, so short lulls keep it."
        ),
    )
    hold_seconds: int = Field(
        300,
        ge=10,
        le=3600,
        description=(
            "How long the router holds requests while the first pod starts (then 503 with Retry-After). "
            "Default 300 s: a GPU cold start (scheduling, image, model load) takes 60-180 s."
        ),
    )


class Autoscaling(_Model):
    """Horizontal autoscaling on the server's load gauges (needs the Prometheus Adapter rules)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                    "message": "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
                }
            ]
        }
    )

    enabled: bool = Field(
        True, description="Create a HorizontalPodAutoscaler; spec.replicas is then ignored."
    )
    min_replicas: int = Field(
        1,
        ge=0,
        le=1000,
        description=(
            "Fewest server pods. 0: scale to zero (needs the router): the router starts the first pod when a "
            "request arrives and stops the last one when idle (see scaleToZero); the HPA works from 1 up."
        ),
    )
    max_replicas: int = Field(4, ge=1, le=1000, description="Most server pods (each takes gpusPerPod GPUs).")
    metric: Literal["pairsInFlight", "pairsWaiting", "tokensInFlight"] = Field(
        "tokensInFlight",
        description=(
            "tokensInFlight: reranker_tokens_in_flight, estimated prompt tokens being scored per pod (default: "
            "proportional to the engine's work whatever the chunk length). pairsInFlight: "
            "reranker_pairs_in_flight, pairs being scored per pod. pairsWaiting: reranker_pairs_waiting, pairs "
            "queued inside the engine (saturation only, not a latency signal). See docs/scaling.md."
        ),
    )
    target_average_value: Quantity | None = Field(
        None,
        description=(
            "Per-pod target of the metric; default: 16k for tokensInFlight, 48 for pairsInFlight, 1 for "
            "pairsWaiting (`reranker-operator plan` computes one for a measured pod and load)."
        ),
    )
    scale_to_zero: ScaleToZero | None = Field(
        None, description="Idle and hold times when minReplicas is 0 (ignored otherwise)."
    )
    behavior: FreeForm | None = Field(
        None,
        description=(
            "HPA behavior (autoscaling/v2). Default: scale up at most 4 pods a minute, scale down 1 pod every "
            "5 minutes after 10 minutes of lower load (GPU pods are slow to start)."
        ),
    )


class EngineSpec(_Model):
    """The server image and the engine knobs the server turns into vLLM flags."""

    device: Literal["gpu", "cpu"] | None = Field(
        None, description="gpu or cpu; default: cpu when gpusPerPod is 0, otherwise gpu."
    )
    image: str | None = Field(
        None,
        max_length=1024,
        description=(
            "Server image; default: the operator's default for the device (operator chart values "
            "serverImage.gpu / serverImage.cpu), which is ghcr.io/reranker-operator/reranker-server (GPU) or "
            "ghcr.io/reranker-operator/reranker-server-cpu (CPU) at the operator's version."
        ),
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Container image pull policy."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Names of Secrets used to pull the image."
    )
    dtype: str = Field("auto", max_length=32, description="Weights dtype (auto, float16, bfloat16, float32).")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="Fraction of GPU memory vLLM may use (of RAM on CPU)."
    )
    max_num_seqs: int | None = Field(None, ge=1, description="Most pairs the engine scores at once.")
    max_num_batched_tokens: int | None = Field(None, ge=1, description="Token budget of one engine step.")
    enforce_eager: bool = Field(
        False, description="Skip graph capture/compilation: faster start, lower speed."
    )
    cpu_kvcache_space_gib: int | None = Field(
        None,
        ge=1,
        description="CPU only: engine cache in GiB; default: the server's choice for the model kind.",
    )
    cpu_threads_bind: str | None = Field(
        None,
        max_length=256,
        description="CPU only: cores for the engine threads, e.g. 0-3; default: automatic.",
    )
    extra_args: list[str] = Field(
        default_factory=list, description="Extra vLLM arguments, appended verbatim by the server."
    )
    env: list[FreeForm] = Field(
        default_factory=list,
        description="Extra container environment variables (Kubernetes EnvVar objects).",
    )


class ResourcesSpec(_Model):
    """Per-pod CPU and memory (GPUs come from gpusPerPod)."""

    cpu: Quantity | None = Field(
        None, description="CPU request; default 4 on GPU, 2 on CPU (also the CPU limit)."
    )
    memory: Quantity | None = Field(
        None, description="Memory request and limit; default 24Gi on GPU, 4Gi on CPU. Includes /dev/shm."
    )
    shared_memory: Quantity | None = Field(
        None, description="Size of the memory-backed /dev/shm used between GPU workers; default 2Gi per GPU."
    )


class SchedulingSpec(_Model):
    """Where server pods may run."""

    node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    tolerations: list[FreeForm] = Field(
        default_factory=list,
        description="Pod tolerations; GPU pods also tolerate the nvidia.com/gpu taint.",
    )
    affinity: FreeForm | None = Field(None, description="Pod affinity (Kubernetes Affinity object).")
    topology_spread_constraints: list[FreeForm] = Field(
        default_factory=list, description="Pod topologySpreadConstraints."
    )
    priority_class_name: str | None = Field(None, max_length=253, description="Pod priorityClassName.")
    service_account_name: str | None = Field(
        None, max_length=253, description="Pod service account (the pod never calls the Kubernetes API)."
    )


class ServiceSpec(_Model):
    """The Service in front of the server pods."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field("ClusterIP", description="Service type.")
    port: int = Field(8000, ge=1, le=65535, description="Service port (named http).")
    annotations: dict[str, str] = Field(default_factory=dict, description="Service annotations.")


class AuthSpec(_Model):
    """API key guarding the scoring routes (health, readiness and metrics stay open)."""

    api_key_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding the API key(s), one per line; mounted as a file."
    )


class NetworkPolicySpec(_Model):
    """An optional NetworkPolicy restricting ingress to the server port."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.enabled) || !self.enabled || "
                    "(has(self.allowFrom) && size(self.allowFrom) > 0) || "
                    "(has(self.metricsFrom) && size(self.metricsFrom) > 0)",
                    "message": "an enabled networkPolicy needs allowFrom or metricsFrom peers",
                }
            ]
        }
    )

    enabled: bool = Field(False, description="Create a NetworkPolicy for the server pods.")
    allow_from: list[FreeForm] = Field(
        default_factory=lambda: [{"podSelector": {}}],
        description="NetworkPolicyPeers allowed to call the API; default: every pod in the namespace.",
        json_schema_extra={"default": [{"podSelector": {}}]},
    )
    metrics_from: list[FreeForm] = Field(
        default_factory=lambda: [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        description="NetworkPolicyPeers allowed to scrape /metrics; default: the monitoring namespace.",
        json_schema_extra={
            "default": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        },
    )


class RolloutSpec(_Model):
    """How new pods replace old ones."""

    strategy: Literal["Surge", "Replace"] = Field(
        "Surge",
        description=(
            "Surge (maxSurge 1, maxUnavailable 0): a new pod must be ready before an old one goes, so a bad "
            "spec never takes serving pods down, but it needs spare GPUs for one extra pod. Replace (maxSurge "
            "0, maxUnavailable 1): for clusters with no spare GPU; capacity drops by one pod during a rollout "
            "and a single-replica deployment is briefly down."
        ),
    )
    startup_timeout_seconds: int = Field(
        900, ge=30, le=7200, description="How long a pod may take to load the model before it is restarted."
    )
    drain_seconds: int = Field(
        30,
        ge=0,
        le=600,
        description=(
            "How long a stopping pod may still finish the requests it accepted (its drain deadline); at the "
            "deadline the rest get 503 with Retry-After. The default matches RAGFlow's 30 s client timeout: a "
            "request older than that has no one waiting for it. The pod's preStop pause and "
            "terminationGracePeriodSeconds are derived from it."
        ),
    )
    revision_history_limit: int = Field(3, ge=0, le=100, description="Old ReplicaSets kept for rollback.")


class LimitsSpec(_Model):
    """Request limits enforced by the server before anything reaches the engine."""

    max_documents: int = Field(1000, ge=1, description="More documents in one request are refused (413).")
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body in bytes.")


class RouterResourcesSpec(_Model):
    """CPU and memory of one router pod (no GPU)."""

    cpu: Quantity = Field("250m", description="CPU request (no CPU limit: throttling would add latency).")
    memory: Quantity = Field("256Mi", description="Memory request and limit.")


class RouterSpec(_Model):
    """The rerank-aware router in front of the server pods.

    It balances by pairs in flight per replica, splits large requests across replicas and retries a failed shard
    on another one. The Service `<name>` then points at the router; the server pods sit behind the headless
    Service `<name>-pods`, whose DNS name lists the ready replicas.
    """

    enabled: bool = Field(
        True,
        description="Route through the router; false: the Service `<name>` points at the server pods directly.",
    )
    replicas: int = Field(2, ge=1, le=100, description="Router pods, spread across nodes.")
    image: str | None = Field(
        None,
        max_length=1024,
        description=(
            "Router image; default: the operator's default (operator chart value routerImage), which is "
            "ghcr.io/reranker-operator/reranker-router at the operator's version."
        ),
    )
    shard_documents: int | None = Field(
        None,
        ge=1,
        le=100000,
        description="Requests with more documents are split into shards of this size; default 128.",
    )
    resources: RouterResourcesSpec | None = Field(None, description="CPU and memory per router pod.")


class RerankerDeploymentSpec(_Model):
    """Desired state of a served reranker model."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.engine) && has(self.engine.device) && self.engine.device == 'cpu' "
                    "&& has(self.gpusPerPod) && self.gpusPerPod > 0)",
                    "message": "a cpu engine takes no GPUs: set gpusPerPod to 0 or leave it out",
                },
                {
                    "rule": "!(has(self.engine) && has(self.engine.device) && self.engine.device == 'gpu' "
                    "&& has(self.gpusPerPod) && self.gpusPerPod == 0)",
                    "message": "a gpu engine needs gpusPerPod >= 1",
                },
                {
                    "rule": "!has(self.autoscaling) || !has(self.autoscaling.minReplicas) "
                    "|| self.autoscaling.minReplicas > 0 "
                    "|| ((!has(self.autoscaling.enabled) || self.autoscaling.enabled) "
                    "&& (!has(self.router) || !has(self.router.enabled) || self.router.enabled))",
                    "message": "autoscaling.minReplicas 0 (scale to zero) needs autoscaling.enabled and "
                    "router.enabled: the router starts the first pod",
                },
            ]
        }
    )

    model: ModelSpec = Field(..., description="The model to serve.")
    gpus_per_pod: int | None = Field(
        None,
        ge=0,
        le=16,
        description=(
            "GPUs per pod = tensor parallel size. 0 means a CPU deployment; default 1 on GPU, 0 on CPU."
        ),
    )
    replicas: int | None = Field(
        None,
        ge=0,
        le=1000,
        description=(
            "Server pods; ignored while autoscaling is enabled. Unset: 1 when the Deployment is created, "
            "afterwards its current count is kept (what the autoscaler reached when autoscaling is turned off)."
        ),
    )
    autoscaling: Autoscaling | None = Field(None, description="Horizontal autoscaling; off when absent.")
    engine: EngineSpec | None = Field(None, description="Image and engine settings.")
    resources: ResourcesSpec | None = Field(None, description="CPU and memory per pod.")
    scheduling: SchedulingSpec | None = Field(None, description="Node selection for server pods.")
    service: ServiceSpec | None = Field(None, description="Service settings.")
    auth: AuthSpec | None = Field(None, description="API key; open when absent.")
    network_policy: NetworkPolicySpec | None = Field(None, description="Optional ingress NetworkPolicy.")
    rollout: RolloutSpec | None = Field(None, description="Rollout strategy and timings.")
    limits: LimitsSpec | None = Field(None, description="Request limits.")
    router: RouterSpec | None = Field(
        None, description="The router in front of the server pods; on by default."
    )
    pod_annotations: dict[str, str] = Field(default_factory=dict, description="Extra server pod annotations.")

    # Optional sections read through these accessors so renderers never repeat the defaults.
    @property
    def device(self) -> Literal["gpu", "cpu"]:
        """The effective device: explicit engine.device, else cpu when gpusPerPod is 0."""
        if self.engine is not None and self.engine.device is not None:
            return self.engine.device
        return "cpu" if self.gpus_per_pod == 0 else "gpu"

    @property
    def gpus(self) -> int:
        """GPUs per pod after defaulting (0 on CPU)."""
        if self.device == "cpu":
            return 0
        return 1 if self.gpus_per_pod is None else self.gpus_per_pod

    @property
    def source(self) -> ModelSource:
        """The model source after defaulting (huggingface)."""
        return self.model.source or ModelSource(huggingface=HuggingFaceSource())

    @property
    def engine_or_default(self) -> EngineSpec:
        return self.engine or EngineSpec()

    @property
    def resources_or_default(self) -> ResourcesSpec:
        return self.resources or ResourcesSpec()

    @property
    def scheduling_or_default(self) -> SchedulingSpec:
        return self.scheduling or SchedulingSpec()

    @property
    def service_or_default(self) -> ServiceSpec:
        return self.service or ServiceSpec()

    @property
    def rollout_or_default(self) -> RolloutSpec:
        return self.rollout or RolloutSpec()

    @property
    def limits_or_default(self) -> LimitsSpec:
        return self.limits or LimitsSpec()

    @property
    def router_or_default(self) -> RouterSpec:
        return self.router or RouterSpec()

    @property
    def router_enabled(self) -> bool:
        return self.router_or_default.enabled

    @property
    def autoscaling_enabled(self) -> bool:
        return self.autoscaling is not None and self.autoscaling.enabled

    @property
    def scale_to_zero(self) -> ScaleToZero | None:
        """The scale-to-zero settings when the server may have 0 replicas (autoscaling with minReplicas 0)."""
        if not self.autoscaling_enabled or self.autoscaling is None or self.autoscaling.min_replicas > 0:
            return None
        return self.autoscaling.scale_to_zero or ScaleToZero()

    @property
    def network_policy_enabled(self) -> bool:
        return self.network_policy is not None and self.network_policy.enabled


class Condition(_Model):
    """A metav1.Condition."""

    type: str = Field(
        ...,
        max_length=316,
        description="Ready, Reconciling, Stalled, Progressing, Degraded, ModelCached or InvalidSpec.",
    )
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    reason: str = Field(..., max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field("", max_length=32768, description="What happened and what to do about it.")
    last_transition_time: str = Field(
        ...,
        description="When status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(None, ge=0, description="The spec generation this reflects.")


class RagflowSettings(_Model):
    """What to type into RAGFlow's model provider dialogs."""

    vllm_base_url: str = Field(..., description="Provider VLLM: base URL (no /v1; RAGFlow adds it).")
    openai_compatible_base_url: str = Field(
        ..., description="Provider OpenAI-API-Compatible: base URL (…/v1)."
    )
    huggingface_base_url: str = Field(
        ..., description="Provider HuggingFace (TEI protocol): base URL; it never sends an API key."
    )
    model_name: str = Field(..., description="Model name for every provider (the served name).")


class DifySettings(_Model):
    """Dify's OpenAI-API-compatible rerank provider."""

    endpoint_url: str = Field(..., description="API endpoint URL (…/v1).")
    model_name: str = Field(..., description="Model name.")


class LangchainSettings(_Model):
    """LangChain/LlamaIndex CohereRerank (cohere ClientV2 → /v2/rerank)."""

    base_url: str = Field(..., description="base_url of the cohere client.")
    model: str = Field(..., description="model argument.")


class ClientSettings(_Model):
    """Ready-to-use client settings for this reranker (also in ConfigMap `<name>-clients`)."""

    endpoint: str = Field(..., description="In-cluster base URL, http://<name>.<namespace>.svc:<port>.")
    model: str = Field(..., description="The served model name clients send.")
    rerank_url: str = Field(..., description="Full Cohere/Jina-style rerank URL (…/v1/rerank).")
    api_key_secret_ref: SecretKeyRef | None = Field(
        None, description="Where the API key is, when one is set."
    )
    ragflow: RagflowSettings
    dify: DifySettings
    langchain: LangchainSettings


class RerankerDeploymentStatus(_Model):
    """Observed state, rebuilt from the children on every pass."""

    observed_generation: int | None = Field(None, ge=0, description="The spec generation last reconciled.")
    replicas: int | None = Field(None, ge=0, description="Server pods that exist.")
    ready_replicas: int | None = Field(None, ge=0, description="Server pods ready to serve.")
    updated_replicas: int | None = Field(None, ge=0, description="Server pods running the current spec.")
    selector: str | None = Field(None, description="Label selector of the server pods (scale subresource).")
    endpoint: str | None = Field(None, description="In-cluster base URL.")
    clients: ClientSettings | None = Field(None, description="Client settings (RAGFlow, Dify, LangChain).")
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Ready, Reconciling, Stalled (kstatus), Progressing, Degraded, ModelCached, InvalidSpec."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    kopf: FreeForm | None = Field(None, description="The operator framework's own bookkeeping.")
