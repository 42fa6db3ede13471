"""reranker-operator: reconciles RerankerDeployment objects into served, scalable rerankers."""

__version__ = "0.1.0"

GROUP = "reranker.dev"
VERSION = "v1alpha1"
KIND = "RerankerDeployment"
PLURAL = "rerankerdeployments"
SINGULAR = "rerankerdeployment"
SHORT_NAMES = ["rrd"]
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "reranker-operator"
MANAGED_BY = "reranker-operator"
