"""Watch-fed caches: fresh status without polling, no API calls at rest, nothing written by a restart."""

from __future__ import annotations

import asyncio
import time

import pytest
from reranker_operator.handlers import OperatorOptions

from .conftest import NS, RD, conditions, create_rd, eventually, running_operator
from .emulator import Fault, verb_of
from .test_lifecycle import DEP, SPEC, make_ready, rd

pytestmark = pytest.mark.e2e

WRITES = ("create", "patch", "update", "delete")
# A resync period far beyond the test's waits: whatever happens, happens because of a watch event.
NO_RESYNC = OperatorOptions(resync_seconds=300, metrics_port=None, watch_server_timeout=60)


def calls_since(emulator, start: int) -> list[tuple[str, str]]:
    """(verb, resource[/subresource]) of every resource request the emulator served after `start`."""
    calls = []
    for request in emulator._requests[start:]:
        if request.resource is None or request.resource.plural is None:
            continue
        sub = f"/{request.subresource}" if request.subresource else ""
        calls.append((verb_of(request), f"{request.resource.plural}{sub}"))
    return calls


async def test_status_follows_the_deployment_without_waiting_for_a_resync(emulator):
    async with running_operator(NO_RESYNC):
        await create_rd(emulator, "demo", SPEC)
        await eventually(lambda: conditions(rd(emulator)).get("Ready"))
        assert conditions(rd(emulator))["Ready"]["status"] == "False"
        started = time.monotonic()
        await make_ready(emulator)
        # Well inside the 2 s budget on a quiet machine; the margin absorbs a shared CI runner.
        await eventually(lambda: conditions(rd(emulator))["Ready"]["status"] == "True", timeout=5)
        latency = time.monotonic() - started
        assert latency < 5, latency


async def test_deleted_child_is_recreated_from_its_watch_event(emulator):
    async with running_operator(NO_RESYNC):
        await create_rd(emulator, "demo", SPEC)
        await eventually(lambda: emulator.read("v1/services", NS, "demo"))
        await emulator.remove_object("v1/services", NS, "demo")
        await eventually(lambda: emulator.read("v1/services", NS, "demo"), timeout=5)


async def test_a_child_deleted_while_the_first_pass_still_runs_is_recreated_when_it_ends(emulator):
    """The deletion's own pass is skipped while the spec handler's pass runs (its spec not yet handled); a
    pass follows that one at once, rather than the resync sweep (5 minutes here) repairing it. Seen in CI
    when watch events began to arrive faster than kopf delivered them."""
    # The first pass stalls on its last child (PDBs are written after the Services) for 1.5 s.
    emulator.faults.append(Fault(verb="patch", plural="poddisruptionbudgets", delay=1.5, times=1))
    async with running_operator(NO_RESYNC):
        await create_rd(emulator, "demo", SPEC)
        await eventually(lambda: emulator.read("v1/services", NS, "demo"))
        # The pass writes the PDBs last (the first one delayed): without the router's PDB it has not ended.
        assert emulator.read("policy/v1/poddisruptionbudgets", NS, "demo-router") is None, (
            "the pass had ended"
        )
        await emulator.remove_object("v1/services", NS, "demo")
        await eventually(lambda: emulator.read("v1/services", NS, "demo"), timeout=5)


async def test_settled_objects_cost_no_api_calls(emulator, operator):
    await create_rd(emulator, "demo", SPEC)
    await eventually(lambda: emulator.read(DEP, NS, "demo"))
    await make_ready(emulator)
    await eventually(lambda: conditions(rd(emulator))["Ready"]["status"] == "True")
    await asyncio.sleep(1.0)  # let the last status write and its watch echo settle
    start = len(emulator._requests)
    await asyncio.sleep(2.0)  # four resync periods of the test operator (0.5 s)
    calls = [call for call in calls_since(emulator, start) if call[0] != "watch"]
    assert calls == [], "resyncs of unchanged objects must be served from the caches"


async def test_a_restarted_operator_writes_nothing_to_settled_children(emulator):
    async with running_operator():
        await create_rd(emulator, "demo", {**SPEC, "gpusPerPod": 2})
        await eventually(lambda: emulator.read(DEP, NS, "demo"))
        await make_ready(emulator)
        await eventually(lambda: conditions(rd(emulator))["Ready"]["status"] == "True")
        await asyncio.sleep(1.0)
    dep_before = emulator.read(DEP, NS, "demo")
    start = len(emulator._requests)
    async with running_operator():
        # The resume pass runs as soon as the caches are filled; give it and two resyncs time.
        await asyncio.sleep(3.0)
    writes = [call for call in calls_since(emulator, start) if call[0] in WRITES]
    assert writes == [], "an operator restart (or upgrade) must not rewrite children, status or annotations"
    assert (
        emulator.read(DEP, NS, "demo")["metadata"]["resourceVersion"]
        == dep_before["metadata"]["resourceVersion"]
    )
    assert any(call[0] == "list" for call in calls_since(emulator, start)), "the new operator did start"
    assert rd(emulator)["status"]["observedGeneration"] == 1


async def test_reverting_a_refused_field_is_reconciled_at_once(emulator):
    async with running_operator(NO_RESYNC):
        await create_rd(emulator, "demo", SPEC)
        await eventually(lambda: emulator.read(DEP, NS, "demo"))
        bad = [{"key": "example.com/gpu", "operator": "Bogus", "effect": "NoSchedule"}]
        await emulator.edit_object(RD, NS, "demo", {"spec": {"scheduling": {"tolerations": bad}}})
        refused = await eventually(
            lambda: (
                conditions(rd(emulator))["InvalidSpec"]["reason"] == "RejectedByAPIServer"
                and conditions(rd(emulator))
            )
        )
        assert refused["Stalled"]["status"] == "True" and refused["Ready"]["status"] == "False"
        assert "tolerations[0].operator" in refused["InvalidSpec"]["message"]
        # The fix is a new spec: reconciled now, not after the back-off or a resync (300 s here).
        await emulator.edit_object(RD, NS, "demo", {"spec": {"scheduling": {"tolerations": []}}})
        await eventually(lambda: conditions(rd(emulator))["InvalidSpec"]["status"] == "False", timeout=5)


async def test_a_refusal_stays_reported_while_backing_off(emulator, operator):
    await create_rd(emulator, "demo", SPEC)
    await eventually(lambda: emulator.read(DEP, NS, "demo"))
    bad = [{"key": "example.com/gpu", "operator": "Bogus", "effect": "NoSchedule"}]
    await emulator.edit_object(RD, NS, "demo", {"spec": {"scheduling": {"tolerations": bad}}})
    await eventually(lambda: conditions(rd(emulator))["InvalidSpec"]["reason"] == "RejectedByAPIServer")
    for _ in range(20):  # 2 s: four resync periods of the test operator, inside the first back-off delays
        await asyncio.sleep(0.1)
        conds = conditions(rd(emulator))
        assert (conds["InvalidSpec"]["status"], conds["Stalled"]["status"]) == ("True", "True")
