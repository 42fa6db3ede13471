"""reranker-router: one endpoint in front of the reranker replicas (dialects, least-load, scatter-gather)."""

__version__ = "0.1.0"
