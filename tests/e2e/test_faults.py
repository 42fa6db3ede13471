"""Conflicts, server errors, slow responses, dropped watches and restarts: the operator still converges."""

from __future__ import annotations

import pytest

from .conftest import NS, RD, conditions, create_rd, eventually, running_operator
from .emulator import Fault

pytestmark = pytest.mark.e2e

SPEC = {"model": {"name": "BAAI/bge-reranker-v2-m3"}, "replicas": 2}
SVC, DEP = "v1/services", "apps/v1/deployments"


def converged(emulator, name="demo"):
    obj = emulator.read(RD, NS, name)
    return bool(obj and conditions(obj) and emulator.read(SVC, NS, name) and emulator.read(DEP, NS, name))


@pytest.mark.parametrize(
    "fault",
    [
        Fault(verb="patch", plural="services", status=409, times=2),
        Fault(verb="patch", plural="deployments", status=500, times=2),
        Fault(verb="list", plural="configmaps", status=429, times=1),
        Fault(verb="patch", plural="configmaps", delay=1.0, times=1),
    ],
    ids=["conflict", "server-error", "throttled", "slow"],
)
async def test_converges_despite_api_faults(emulator, operator, fault):
    emulator.faults.append(fault)
    await create_rd(emulator, "demo", SPEC)
    await eventually(lambda: converged(emulator), timeout=15)
    assert fault.times == 0  # the fault really fired


async def test_dropped_watch_does_not_lose_changes(emulator, operator):
    await create_rd(emulator, "demo", SPEC)
    await eventually(lambda: converged(emulator))
    await emulator.drop_watches()
    await emulator.edit_object(RD, NS, "demo", {"spec": {"replicas": 4}})
    await eventually(lambda: emulator.read(DEP, NS, "demo")["spec"]["replicas"] == 4)


async def test_restart_mid_reconcile(emulator):
    # The first operator stops after its first writes (the Service keeps failing); a new one finishes.
    outage = Fault(verb="patch", plural="services", status=503, times=10**6)
    emulator.faults.append(outage)
    async with running_operator():
        await create_rd(emulator, "demo", SPEC)
        await eventually(lambda: emulator.read("v1/configmaps", NS, "demo-config"))
    assert emulator.read(SVC, NS, "demo") is None  # really stopped half-way
    outage.times = 0
    async with running_operator():
        await eventually(lambda: converged(emulator))
