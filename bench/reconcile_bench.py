"""Reconcile benchmark: N RerankerDeployments against the kmock emulator, the real operator in a thread.

Measures the time until every object is reconciled (children applied and status written), per-object
latency (create -> status written, and the reconcile-pass histogram), and the process RSS. The emulator runs
in the same process (as in the e2e tests), so the RSS and CPU figures include it: an upper bound for the
operator alone. Not a test: `python bench/reconcile_bench.py [--count 1000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import kubernetes.config.kube_config
from kmock._internal import apps
from kopf.testing import KopfRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from e2e.emulator import StampingEmulator  # noqa: E402
from reranker_operator import GROUP, KIND, PLURAL, SINGULAR, VERSION, metrics  # noqa: E402
from reranker_operator.handlers import OperatorOptions, build_registry  # noqa: E402

RD = f"{GROUP}/{VERSION}/{PLURAL}"
SPEC = {"model": {"name": "BAAI/bge-reranker-v2-m3"}, "replicas": 2, "autoscaling": {"enabled": True}}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def histogram_quantile(q: float) -> float:
    """Upper bucket bound holding quantile q of the reconcile-pass histogram."""
    samples = metrics.RECONCILE_DURATION.collect()[0].samples
    buckets = [(float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")]
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


async def run(count: int, namespaces: int) -> dict:
    emulator = StampingEmulator(history_limit=2)
    async with emulator, apps.Server(emulator):
        emulator.resources.load_bundled()
        emulator.resources[RD] = emulator.ResourceInfo(
            kind=KIND,
            singular=SINGULAR,
            namespaced=True,
            subresources={"status"},
            verbs={"list", "watch", "patch", "get", "create", "update", "delete"},
        )
        config = Path(tempfile.mkdtemp()) / "kubeconfig"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "k",
                    "clusters": [{"name": "k", "cluster": {"server": str(emulator.url).rstrip("/")}}],
                    "users": [{"name": "k", "user": {"token": "bench"}}],
                    "contexts": [{"name": "k", "context": {"cluster": "k", "user": "k"}}],
                }
            )
        )
        os.environ["KUBECONFIG"] = str(config)
        kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(config)

        runner = KopfRunner(
            ["run", "--standalone", "--all-namespaces", "--quiet"],
            registry=build_registry(OperatorOptions(resync_seconds=60, metrics_port=None)),
        )
        await asyncio.to_thread(runner.__enter__)
        rss_before = rss_mb()
        cpu_before = time.process_time()
        created: dict[tuple[str, str], float] = {}
        done: dict[tuple[str, str], float] = {}
        started = time.monotonic()
        for i in range(count):
            ns, name = f"bench-{i % namespaces}", f"rr-{i:04d}"
            await emulator.put_object(
                RD,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "metadata": {"name": name, "namespace": ns},
                    "spec": SPEC,
                },
            )
            created[(ns, name)] = time.monotonic()
        peak = rss_mb()
        served = 0
        while len(done) < count and time.monotonic() - started < 600:
            now = time.monotonic()
            for key in created.keys() - done.keys():
                obj = emulator.read(RD, *key)
                if obj and (obj.get("status") or {}).get("observedGeneration") == 1:
                    done[key] = now
            peak = max(peak, rss_mb())
            # kmock keeps every request (bodies included) for assertions; the benchmark needs none of them,
            # and they would dominate the RSS that is meant to show the operator's footprint.
            served += len(emulator._requests)
            emulator._requests.clear()
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu_before
        latencies = sorted(done[k] - created[k] for k in done)
        children = sum(
            len(emulator.live(p))
            for p in (
                "apps/v1/deployments",
                "v1/services",
                "v1/configmaps",
                "autoscaling/v2/horizontalpodautoscalers",
                "policy/v1/poddisruptionbudgets",
            )
        )
        await asyncio.to_thread(runner.__exit__, None, None, None)
    return {
        "count": count,
        "reconciled": len(done),
        "children": children,
        "seconds": round(elapsed, 1),
        "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "latency_p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 2) if latencies else None,
        "pass_p50_le_s": histogram_quantile(0.5),
        "pass_p99_le_s": histogram_quantile(0.99),
        "passes": int(
            sum(s.value for s in metrics.RECONCILE_TOTAL.collect()[0].samples if s.name.endswith("_total"))
        ),
        "rss_start_mb": round(rss_before),
        "rss_peak_mb": round(peak),
        "cpu_seconds": round(cpu, 1),
        "requests_served": served + len(emulator._requests),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("kopf", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    result = asyncio.run(run(args.count, args.namespaces))
    result.update(
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        load_before=os.getloadavg(),
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
