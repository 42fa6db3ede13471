"""The reranker's own Prometheus metrics, served from the same `/metrics` as vLLM's.

Names are part of the team contract (docs/design.md): the HPA and the Prometheus Adapter rules read them.
`reranker_tokens_in_flight` is the default autoscaling signal (docs/scaling.md); `reranker_pairs_in_flight` counts
pairs; `reranker_pairs_waiting` mirrors vLLM's queue.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

VLLM_WAITING = "vllm:num_requests_waiting"

# Per-request latency from a few ms (tiny models) to RAGFlow's 30 s client timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# RAGFlow sends windows of 64-126 documents; TEI clients batches of 8.
DOCUMENT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class PairsWaitingCollector(Collector):
    """`reranker_pairs_waiting`: vLLM's `vllm:num_requests_waiting`, read from the registry at scrape time.

    Each (query, document) pair is one vLLM engine request, so vLLM's waiting requests are our waiting pairs.
    The vLLM gauge appears only once the engine has started; until then the value is 0.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def describe(self) -> Iterator[Metric]:
        """Announce the metric name without collecting (registration must not need the engine)."""
        yield GaugeMetricFamily("reranker_pairs_waiting", self._help())

    def collect(self) -> Iterator[Metric]:
        """Sum every `vllm:num_requests_waiting` sample (one per engine / model label set)."""
        total = 0.0
        # Looking up the one collector by name avoids re-collecting the whole registry (and ourselves).
        source = self._registry._names_to_collectors.get(VLLM_WAITING)
        if source is not None:
            for family in source.collect():
                total += sum(sample.value for sample in family.samples if sample.name == VLLM_WAITING)
        yield GaugeMetricFamily("reranker_pairs_waiting", self._help(), value=total)

    @staticmethod
    def _help() -> str:
        return "(query, document) pairs queued inside vLLM, from vllm:num_requests_waiting"


class ServerMetrics:
    """The reranker metrics, registered once per registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.requests = Counter(
            "reranker_requests",
            "Rerank/score HTTP requests by client dialect and HTTP status",
            ["dialect", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "reranker_request_duration_seconds",
            "Time from the request body arriving to the reply being ready, by dialect",
            ["dialect"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.documents = Histogram(
            "reranker_documents_per_request",
            "Documents (pairs) in one accepted request",
            buckets=DOCUMENT_BUCKETS,
            registry=registry,
        )
        self.pairs_in_flight = Gauge(
            "reranker_pairs_in_flight",
            "(query, document) pairs submitted to the engine and not finished",
            registry=registry,
        )
        self.tokens_in_flight = Gauge(
            "reranker_tokens_in_flight",
            "Estimated prompt tokens (UTF-8 bytes / 4) of the pairs submitted to the engine and not finished",
            registry=registry,
        )
        self.truncations = Counter(
            "reranker_truncations",
            "Texts cut to fit the model's context, by part (query or document)",
            ["part"],
            registry=registry,
        )
        registry.register(PairsWaitingCollector(registry))

    def observe_request(self, dialect: str, status: int, seconds: float) -> None:
        """Count one finished request and its duration."""
        self.requests.labels(dialect=dialect, status=str(status)).inc()
        self.duration.labels(dialect=dialect).observe(seconds)

    def observe_truncations(self, documents: int, query: bool) -> None:
        """Count truncated documents and, when it was cut, the query."""
        if documents:
            self.truncations.labels(part="document").inc(documents)
        if query:
            self.truncations.labels(part="query").inc()


# English BPE and WordPiece vocabularies average about 4 bytes of UTF-8 per token. An estimate, because counting
# exactly would tokenise every document before the engine does (9-11 ms per 64 documents, server-analysis.md);
# the HPA only needs a signal proportional to the engine's work.
BYTES_PER_TOKEN = 4


def estimate_tokens(query: str, documents: list[str]) -> int:
    """Prompt tokens of the (query, document) pairs, estimated from their UTF-8 length."""
    query_bytes = len(query.encode())
    return sum(query_bytes + len(document.encode()) for document in documents) // BYTES_PER_TOKEN


_registered: dict[int, ServerMetrics] = {}


def metrics_for(registry: CollectorRegistry = REGISTRY) -> ServerMetrics:
    """The `ServerMetrics` of `registry`, created on first use (a registry refuses duplicate names)."""
    key = id(registry)
    if key not in _registered:
        _registered[key] = ServerMetrics(registry)
    return _registered[key]
