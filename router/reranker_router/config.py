"""The configuration contract between the operator and the router.

The operator renders a `RouterConfig` as YAML into a ConfigMap, mounts it at `DEFAULT_CONFIG_PATH` and starts
the router with `reranker-router serve --config DEFAULT_CONFIG_PATH`. Command-line flags (`--backend`,
`--port`, ...) override the file, for local use and tests.

Backends come from a static list (`backends`), from the DNS name of a headless Service (`discovery`), or both.
A headless Service's name resolves to the addresses of its *ready* pods only (unless it sets
`publishNotReadyAddresses`), so the router learns which replicas are ready without any RBAC: no API watch,
no ServiceAccount permissions, nothing but the cluster DNS every pod already reaches.

This module imports nothing heavier than pydantic and yaml: the operator imports it to render the ConfigMap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_CONFIG_PATH = "/etc/reranker-router/router.yaml"
DEFAULT_PORT = 8000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DiscoveryConfig(_Strict):
    """Replicas found by resolving a headless Service's DNS name (one A/AAAA record per ready pod)."""

    service: str = Field(
        ..., description="DNS name of the headless Service, e.g. <name>-pods.<namespace>.svc.cluster.local"
    )
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="the servers' port")
    interval_seconds: float = Field(
        2.0, gt=0, description="how often the name is resolved again (pods come and go with the HPA)"
    )


class LimitsConfig(_Strict):
    """What one request may carry (checked by the router before any shard leaves it)."""

    max_documents: int = Field(
        1000, ge=1, description="more documents (or score pairs) in one request -> 413"
    )
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)


class AdmissionConfig(_Strict):
    """Bounded work per router: beyond it clients get 429 with Retry-After instead of unbounded latency."""

    max_pending_pairs_per_replica: int = Field(
        2048,
        ge=1,
        description="pairs accepted by this router and not answered yet, per ready replica; a request that "
        "would pass the bound gets 429 (a request is always admitted when nothing is pending)",
    )
    retry_after_seconds: int = Field(1, ge=1, description="the Retry-After sent with 429 and 503")


class NoBackendConfig(_Strict):
    """What happens while no replica is ready (scale from zero, a rollout gone wrong)."""

    wait_seconds: float = Field(
        10.0, ge=0, description="how long a request waits for a ready replica before 503 with Retry-After"
    )
    max_waiting_requests: int = Field(
        256, ge=0, description="requests held at once while waiting; more get 503 at once"
    )


class ScaleFromZeroConfig(_Strict):
    """Scale to zero: the router starts the first server pod and stops the last one.

    The operator renders this section when `autoscaling.minReplicas` is 0. The HorizontalPodAutoscaler cannot
    go below one replica (its minReplicas is at least 1 unless the alpha HPAScaleToZero gate is on) and does
    nothing while its target has 0 replicas; the routers see the traffic, so they scale the server Deployment
    through its scale subresource: to 1 when a request arrives while no replica exists (the HPA takes over from
    there), to 0 once no replica has served a request for `idle_seconds`.
    """

    namespace: str = Field(..., description="namespace of the server Deployment")
    deployment: str = Field(..., description="name of the server Deployment (scaled via deployments/scale)")
    idle_seconds: float = Field(
        600.0, gt=0, description="no request served by any replica for this long -> scale to 0 replicas"
    )


class RetryConfig(_Strict):
    """Scoring is idempotent: a shard that failed on one replica is sent to another."""

    max_attempts: int = Field(3, ge=1, description="tries per shard, the first included")
    connect_timeout_seconds: float = Field(1.0, gt=0)


class EjectionConfig(_Strict):
    """Passive health: a replica that fails is left out for a while (DNS may still list it)."""

    consecutive_failures: int = Field(
        1, ge=1, description="connect errors or 5xx in a row before the replica is ejected"
    )
    seconds: float = Field(5.0, gt=0, description="how long an ejected replica gets no traffic")


class AuthConfig(_Strict):
    """API key checked at the router (the same file format as the server's; health and metrics stay open)."""

    api_key_file: str | None = Field(None, description="file holding one key per line (a mounted Secret)")


class RouterConfig(_Strict):
    """Everything one router pod needs to know."""

    host: str = "0.0.0.0"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    backends: list[str] = Field(
        default_factory=list, description="static server URLs, e.g. http://10.0.0.5:8000 (local use, tests)"
    )
    discovery: DiscoveryConfig | None = None
    balancing: Literal["least-loaded", "power-of-two"] = Field(
        "least-loaded",
        description="least-loaded for one router replica; power-of-two (the lighter of two random replicas) "
        "when several routers share the replicas and each sees only its own load",
    )
    shard_documents: int = Field(
        128,
        ge=1,
        description="a request with more documents is split into shards of at most this many, scored in "
        "parallel on different replicas",
    )
    request_timeout_seconds: float = Field(
        30.0, gt=0, description="the deadline of one client request, retries included (RAGFlow waits 30 s)"
    )
    drain_seconds: float = Field(
        20.0,
        ge=0,
        description="after SIGTERM, how long accepted requests may take before the rest get 503",
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    no_backend: NoBackendConfig = Field(default_factory=NoBackendConfig)
    scale_from_zero: ScaleFromZeroConfig | None = Field(
        None, description="set when the server Deployment may have 0 replicas (autoscaling.minReplicas 0)"
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)
    ejection: EjectionConfig = Field(default_factory=EjectionConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)

    @model_validator(mode="after")
    def _normalise_backends(self) -> RouterConfig:
        # "host:port" is accepted for convenience; a trailing slash would double in the forwarded path.
        self.backends = [
            (url if "://" in url else f"http://{url}").rstrip("/") for url in self.backends if url.strip()
        ]
        return self

    def to_yaml(self) -> str:
        """Serialise exactly as the operator writes it into the ConfigMap."""
        # libyaml's emitter where installed: same text, a tenth of the pure-Python emitter's time (a tenth of the
        # operator's CPU while converging many new objects).
        return yaml.dump(
            self.model_dump(mode="json", exclude_none=True),
            Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
            sort_keys=True,
        )

    @classmethod
    def from_yaml(cls, text: str) -> RouterConfig:
        return cls.model_validate(yaml.safe_load(text) or {})

    @classmethod
    def load(cls, path: str | Path) -> RouterConfig:
        return cls.from_yaml(Path(path).read_text())

    def with_overrides(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        backends: list[str] | None = None,
        shard_documents: int | None = None,
        api_key_file: str | None = None,
    ) -> RouterConfig:
        """A copy with the command line's values in place of the file's (None keeps the file's value)."""
        data = self.model_dump()
        for key, value in (("host", host), ("port", port), ("shard_documents", shard_documents)):
            if value is not None:
                data[key] = value
        if backends:
            data["backends"] = backends
        if api_key_file is not None:
            data["auth"]["api_key_file"] = api_key_file
        return RouterConfig.model_validate(data)
