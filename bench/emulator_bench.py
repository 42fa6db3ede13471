"""CPU cost of the e2e emulator's write path per RerankerDeployment, without HTTP or the operator.

For N RerankerDeployments (the reconcile benchmark's spec) the children the operator renders are written as the
operator writes them: server-side apply that creates, then an identical re-apply (a resync), then the Deployment
controller's status write. CPU time (time.process_time) is measured, so the figure holds on a shared machine
where wall-clock time does not. Not a test: `python bench/emulator_bench.py [--count 300] [--emulator DIR]`;
`--emulator` points at another checkout's tests/ directory to compare emulators side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from pathlib import Path

from reranker_operator.render import load_spec, render_all

SPEC = {"model": {"name": "BAAI/bge-reranker-v2-m3"}, "replicas": 2, "autoscaling": {"enabled": True}}
PLURALS = {
    "ConfigMap": "v1/configmaps",
    "Deployment": "apps/v1/deployments",
    "Service": "v1/services",
    "HorizontalPodAutoscaler": "autoscaling/v2/horizontalpodautoscalers",
    "PodDisruptionBudget": "policy/v1/poddisruptionbudgets",
}


async def measure(tests_dir: Path, count: int) -> dict[str, float]:
    sys.path.insert(0, str(tests_dir))
    emulator_module = importlib.import_module("e2e.emulator")
    references = importlib.import_module("kmock._internal.references")
    spec = load_spec(SPEC)
    rendered = [
        json.dumps(obj)
        for i in range(count)
        for obj in render_all(f"rr-{i:04d}", "bench", spec, uid=f"uid-{i}", generation=1)
    ]
    emulator = emulator_module.StampingEmulator(history_limit=2)
    emulator_module.declare_resources(emulator)
    ssa = hasattr(emulator, "managed_fields")  # the emulator with kube-apiserver rules

    async def write(text: str, create: bool) -> None:
        obj = json.loads(text)
        resource = references.resource(PLURALS[obj["kind"]])
        name = obj["metadata"]["name"]
        async with emulator._lock:
            if create and ssa:
                await emulator._create(resource, "bench", obj, manager="reranker-operator", apply=True)
            elif create:
                await emulator._create(resource, "bench", obj)
            elif ssa:
                await emulator.patch_object(
                    resource, "bench", name, obj, manager="reranker-operator", apply=True, force=True
                )
            else:
                await emulator.patch_object(resource, "bench", name, obj)

    phases = {}
    for phase, create in (("create_ms", True), ("reapply_ms", False)):
        started = time.process_time()
        for text in rendered:
            await write(text, create)
        phases[phase] = (time.process_time() - started) * 1000 / count
    started = time.process_time()
    for i in range(count):
        status = {"status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2}}
        await emulator.edit_object(
            "apps/v1/deployments", "bench", f"rr-{i:04d}", status, subresource="status"
        )
    phases["status_ms"] = (time.process_time() - started) * 1000 / count
    return {key: round(value, 2) for key, value in phases.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--emulator", type=Path, default=Path(__file__).resolve().parent.parent / "tests")
    args = parser.parse_args()
    result = asyncio.run(measure(args.emulator, args.count))
    print(
        json.dumps(
            {"emulator": str(args.emulator), "count": args.count, "cpu_per_rerankerdeployment": result}
        )
    )


if __name__ == "__main__":
    main()
