"""The real operator (kopf in its own thread) against the StampingEmulator served in pytest's loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes.config.kube_config
import pytest
from kopf.testing import KopfRunner
from reranker_operator import GROUP, KIND, PLURAL, VERSION
from reranker_operator.handlers import OperatorOptions, build_registry

from .emulator import StampingEmulator, declare_resources

RD = f"{GROUP}/{VERSION}/{PLURAL}"
NS = "team"
GOLDEN = Path(__file__).parent.parent / "data" / "operator-api-calls.json"
# Every (verb, resource, group) the operator called in this session. Each test checks its own calls against
# GOLDEN (the chart's RBAC is tested against it), in any order; the session end reports golden entries no
# longer called when every e2e test ran and passed, and rewrites GOLDEN with UPDATE_GOLDEN=1.
SESSION_CALLS: set[tuple[str, str, str]] = set()
FAST = OperatorOptions(resync_seconds=0.5, metrics_port=None, watch_server_timeout=60)


@pytest.fixture()
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": StampingEmulator}


@pytest.fixture()
def kubeconfig(kmock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig pointing at the emulator; patched where kubernetes read $KUBECONFIG at import."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                "users": [{"name": "kmock", "user": {"token": "e2e"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
                "current-context": "kmock",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path


@pytest.fixture()
def emulator(kmock, kubeconfig) -> StampingEmulator:
    """The emulator with builtin resources and the RerankerDeployment CRD declared.

    On teardown: every API call the operator made in the test must be in GOLDEN (and so granted by RBAC).
    """
    declare_resources(kmock)
    yield kmock
    SESSION_CALLS.update(kmock.api_calls)
    if not os.environ.get("UPDATE_GOLDEN"):
        golden = {(c["verb"], c["resource"], c["group"]) for c in json.loads(GOLDEN.read_text())}
        unexpected = sorted(set(kmock.api_calls) - golden)
        assert not unexpected, (
            f"API calls missing from {GOLDEN.name} (and so maybe from the chart's RBAC): {unexpected}; "
            "regenerate with UPDATE_GOLDEN=1 and review the diff"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """UPDATE_GOLDEN=1 rewrites GOLDEN; otherwise a full, green e2e run fails on golden calls no longer made."""
    e2e = [item for item in session.items if Path(str(item.fspath)).parent == Path(__file__).parent]
    if not SESSION_CALLS or not e2e:
        return
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(recorded_calls(), indent=2) + "\n")
        return
    collected = [p for p in Path(__file__).parent.glob("test_*.py")]
    ran_all = {Path(str(item.fspath)) for item in e2e} == set(collected) and not session.config.option.keyword
    if ran_all and exitstatus == 0 and session.testsfailed == 0:
        stale = [c for c in json.loads(GOLDEN.read_text()) if c not in recorded_calls()]
        if stale:
            session.config.get_terminal_writer().line(
                f"{GOLDEN.name} lists calls the operator no longer makes: {stale}; regenerate with UPDATE_GOLDEN=1",
                red=True,
            )
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@contextlib.asynccontextmanager
async def running_operator(options: OperatorOptions = FAST):
    """Start the operator in its own thread and loop (kmock keeps serving from pytest's loop)."""
    runner = KopfRunner(
        ["run", "--standalone", "--all-namespaces"], registry=build_registry(options), timeout=15
    )
    await asyncio.to_thread(runner.__enter__)
    try:
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)


@pytest.fixture()
async def operator(emulator):
    async with running_operator() as runner:
        yield runner


async def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy (returned) or raise with its last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not reached in {timeout}s; last value: {last!r}")


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """status.conditions by type."""
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def recorded_calls() -> list[dict[str, str]]:
    """The session's calls in the golden file's shape."""
    return [{"verb": v, "resource": r, "group": g} for v, r, g in sorted(SESSION_CALLS)]


async def create_rd(emulator: StampingEmulator, name: str, spec: dict[str, Any], namespace: str = NS) -> dict:
    """Create a RerankerDeployment as `kubectl apply` would."""
    return await emulator.put_object(
        RD,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        },
    )
