"""Fixtures of the scale-from-zero tests: the API emulator holding the server Deployment at 0 replicas."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster import DEPLOYMENTS, StampingEmulator, deployment  # noqa: E402


@pytest.fixture()
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": StampingEmulator}


@pytest.fixture()
async def emulator(kmock) -> StampingEmulator:
    """The emulator (kube-apiserver's semantics, see tests/e2e/emulator.py) with the Deployment at 0."""
    kmock.resources.load_bundled()
    await kmock.put_object(DEPLOYMENTS, deployment(0))
    return kmock
