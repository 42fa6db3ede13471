"""The server Deployment in the API emulator, for the scale-from-zero tests (fixtures in conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))

from e2e.emulator import StampingEmulator  # noqa: E402

NS, NAME = "team", "reranker"
DEPLOYMENTS = "apps/v1/deployments"


def deployment(replicas: int) -> dict[str, Any]:
    """A minimal valid server Deployment with `replicas`."""
    labels = {"app.kubernetes.io/name": NAME}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "server", "image": "reranker-server:test"}]},
            },
        },
    }


def replicas_of(emulator: StampingEmulator) -> int:
    """The Deployment's spec.replicas now."""
    return emulator.read(DEPLOYMENTS, NS, NAME)["spec"]["replicas"]


def history(emulator: StampingEmulator) -> list[int]:
    """spec.replicas of every stored version, oldest first."""
    return [version["spec"]["replicas"] for version in emulator.versions(DEPLOYMENTS, NS, NAME)]
