"""Reconcile benchmark: N RerankerDeployments against the kmock emulator, the real operator in its own process.

The emulator (StampingEmulator, as in the e2e tests) is served from this process; the operator is started as
`reranker-operator run` in a separate process with a kubeconfig pointing at the emulator, so its RSS and CPU
time are measured alone (VmRSS/VmHWM and utime+stime from /proc/<pid>/). Measures the time until every object
is reconciled (children applied and status written with observedGeneration=1), per-object latency (create ->
status written) and the reconcile-pass histogram scraped from the operator's metrics endpoint.
Not a test: `python bench/reconcile_bench.py [--count 1000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from kmock._internal import apps
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from e2e.emulator import StampingEmulator, declare_resources  # noqa: E402
from reranker_operator import GROUP, KIND, PLURAL, VERSION  # noqa: E402

RD = f"{GROUP}/{VERSION}/{PLURAL}"
SPEC = {"model": {"name": "BAAI/bge-reranker-v2-m3"}, "replicas": 2, "autoscaling": {"enabled": True}}
CHILDREN = (
    "apps/v1/deployments",
    "v1/services",
    "v1/configmaps",
    "autoscaling/v2/horizontalpodautoscalers",
    "policy/v1/poddisruptionbudgets",
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS, kept by the kernel) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def histogram_quantile(samples: list, q: float) -> float:
    """Upper bucket bound holding quantile q of a scraped histogram."""
    buckets = [(float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")]
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def write_kubeconfig(url: str, directory: Path) -> Path:
    path = directory / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "k",
                "clusters": [{"name": "k", "cluster": {"server": url}}],
                "users": [{"name": "k", "user": {"token": "bench"}}],
                "contexts": [{"name": "k", "context": {"cluster": "k", "user": "k"}}],
            }
        )
    )
    return path


async def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited with {proc.returncode} before it became healthy")
        try:
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).read())
            return time.monotonic() - started
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("operator did not become healthy")


async def run(count: int, namespaces: int, resync: float, operator: str, keep_log: Path | None) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="reconcile-bench-"))
    emulator = StampingEmulator(history_limit=2)
    async with emulator, apps.Server(emulator):
        declare_resources(emulator)
        kubeconfig = write_kubeconfig(str(emulator.url).rstrip("/"), workdir)
        live_port, metrics_port = free_port(), free_port()
        live_url = f"http://127.0.0.1:{live_port}/healthz"
        log_path = workdir / "operator.log"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        command = [
            operator,
            "run",
            "--liveness",
            live_url,
            "--metrics-port",
            str(metrics_port),
            "--resync-seconds",
            str(resync),
        ]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            startup_s = await wait_healthy(live_url, proc)
            mem_start = proc_memory_mb(proc.pid)
            op_cpu_before = proc_cpu_s(proc.pid)
            own_cpu_before = time.process_time()
            created: dict[tuple[str, str], float] = {}
            done: dict[tuple[str, str], float] = {}
            rss_samples: list[float] = []
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
            served = 0
            while len(done) < count and time.monotonic() - started < 600:
                if proc.poll() is not None:
                    raise RuntimeError(f"operator exited with {proc.returncode}; log: {log_path}")
                now = time.monotonic()
                for key in created.keys() - done.keys():
                    obj = emulator.read(RD, *key)
                    if obj and (obj.get("status") or {}).get("observedGeneration") == 1:
                        done[key] = now
                rss_samples.append(proc_memory_mb(proc.pid)["VmRSS"])
                # kmock keeps every request (bodies included) for assertions; the benchmark needs none.
                served += len(emulator._requests)
                emulator._requests.clear()
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - started
            op_cpu = proc_cpu_s(proc.pid) - op_cpu_before
            own_cpu = time.process_time() - own_cpu_before
            mem_done = proc_memory_mb(proc.pid)
            # Idle for a while after convergence (watches open, nothing to do): RSS and CPU at rest.
            idle_cpu_before = proc_cpu_s(proc.pid)
            await asyncio.sleep(10)
            idle_cpu = proc_cpu_s(proc.pid) - idle_cpu_before
            mem_idle = proc_memory_mb(proc.pid)
            scraped = await asyncio.to_thread(scrape, metrics_port)
            served += len(emulator._requests)
            emulator._requests.clear()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        latencies = sorted(done[k] - created[k] for k in done)
        children = sum(len(emulator.live(p)) for p in CHILDREN)
    log_lines = len(log_path.read_text(errors="replace").splitlines())
    if keep_log:
        shutil.copy(log_path, keep_log)
    duration = scraped["reranker_operator_reconcile_duration_seconds"]
    passes = {
        s.labels["result"]: int(s.value)
        for s in scraped["reranker_operator_reconcile"]
        if s.name.endswith("_total")
    }
    return {
        "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(command)),
        "count": count,
        "reconciled": len(done),
        "children": children,
        "operator_startup_s": round(startup_s, 2),
        "seconds": round(elapsed, 1),
        "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "latency_p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 2) if latencies else None,
        "pass_p50_le_s": histogram_quantile(duration, 0.5),
        "pass_p99_le_s": histogram_quantile(duration, 0.99),
        "passes": passes,
        "operator_rss_start_mb": round(mem_start["VmRSS"]),
        "operator_rss_max_sampled_mb": round(max(rss_samples)) if rss_samples else None,
        "operator_rss_converged_mb": round(mem_done["VmRSS"]),
        "operator_rss_idle_10s_mb": round(mem_idle["VmRSS"]),
        "operator_vmhwm_mb": round(mem_idle["VmHWM"]),
        "operator_cpu_s": round(op_cpu, 1),
        "operator_idle_cpu_s_per_10s": round(idle_cpu, 2),
        "emulator_and_bench_cpu_s": round(own_cpu, 1),
        "requests_served": served,
        "operator_log_lines": log_lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--resync-seconds", type=float, default=60)
    parser.add_argument(
        "--operator",
        default=str(Path(sys.executable).with_name("reranker-operator")),
        help="the operator's console script (default: next to this Python)",
    )
    parser.add_argument("--keep-log", type=Path, help="copy the operator's log here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.ERROR)
    load_before = os.getloadavg()
    result = asyncio.run(run(args.count, args.namespaces, args.resync_seconds, args.operator, args.keep_log))
    result.update(
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        date=time.strftime("%Y-%m-%d %H:%M"),
        load_before=[round(x, 2) for x in load_before],
        load_after=[round(x, 2) for x in os.getloadavg()],
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
