"""reranker-operator: reconciles RerankerDeployment objects into served, scalable rerankers."""

# The one version string of a release: pyproject reads it, tests hold both charts' version/appVersion and the
# release workflow's tag to it, and the default images below carry it (`make version VERSION=x.y.z` bumps all).
__version__ = "0.1.0"
# Where .github/workflows/release.yaml publishes images and charts; chart defaults name the same path (tested).
REGISTRY = "ghcr.io/reranker-operator"

GROUP = "reranker.dev"
VERSION = "v1alpha1"
KIND = "RerankerDeployment"
PLURAL = "rerankerdeployments"
SINGULAR = "rerankerdeployment"
SHORT_NAMES = ["rrd"]
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "reranker-operator"
MANAGED_BY = "reranker-operator"
