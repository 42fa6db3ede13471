"""reranker-server: the program each reranker pod runs (vLLM plus every rerank client dialect at one port)."""

__version__ = "0.1.0"
