"""Reconcile benchmark: N RerankerDeployments against the kmock emulator, the real operator in its own process.

The emulator (StampingEmulator, as in the e2e tests) is served from this process; the operator is started as
`reranker-operator run` in a separate process with a kubeconfig pointing at the emulator, so its RSS and CPU
time are measured alone (VmRSS/VmHWM and utime+stime from /proc/<pid>/). Three phases:
1. converge: the time until every object is reconciled (children applied and status written with
   observedGeneration=1), per-object latency (create -> status written), the reconcile-pass histogram;
2. steady state: API requests the operator makes over a window of at least two resync periods (every object's
   resync timer fires), by verb, watch streams excluded, and the writes among them;
3. status latency: for `--latency-count` objects, the Deployment controller's "all replicas ready" (a status
   write on the Deployment) -> the RerankerDeployment's Ready=True, p50/p99.
Counts (requests, writes) are exact; times depend on the machine's load.
The operator runs from a virtual environment holding what its image installs (`pip install .`: the core
dependencies, no extras; made or refreshed at `--image-venv`): the development venv also holds the router's
kubernetes_asyncio, which kopf imports whenever it is installed (+32 MB of RSS the image does not have).
Not a test: `python bench/reconcile_bench.py [--count 1000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
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
WRITE_VERBS = ("create", "patch", "update", "delete")


ROOT = Path(__file__).resolve().parent.parent


def image_venv(path: Path) -> str:
    """`reranker-operator` of a venv laid out as the operator image's (operator/Dockerfile: `pip install` of
    the project without extras), made at `path` or refreshed to the working tree."""
    if not (path / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run(
        [str(path / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return str(path / "bin" / "reranker-operator")


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


def passes_from(scraped: dict[str, list]) -> dict[str, int]:
    """Reconcile passes by result from a scrape."""
    return {
        s.labels["result"]: int(s.value)
        for s in scraped.get("reranker_operator_reconcile", ())
        if s.name.endswith("_total")
    }


def scrape_passes(port: int) -> dict[str, int]:
    return passes_from(scrape(port))


def histogram_quantile(samples: list, q: float) -> float:
    """Upper bucket bound holding quantile q of a scraped histogram."""
    buckets = [(float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")]
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def drain(emulator: StampingEmulator) -> list[tuple[str, str, str | None]]:
    """(verb, resource, name) of the requests served since the last drain; kmock's own request list is dropped
    too (it keeps every request with its body for assertions; the benchmark needs none)."""
    calls = list(emulator.request_log)
    emulator.request_log.clear()
    emulator._requests.clear()
    return calls


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[int(q * (len(ordered) - 1))], 3) if ordered else None


async def make_ready(emulator: StampingEmulator, namespace: str, name: str) -> None:
    """Play the Deployment controller: every replica of the current generation is ready, the router's
    (`<name>-router`, on by default) first, then the servers' (whose status write is the timed event)."""
    for deployment in (f"{name}-router", name):
        if emulator.read(CHILDREN[0], namespace, deployment) is not None:
            await emulator.deployment_ready(namespace, deployment, manager="kube-controller-manager")


def is_ready(obj: dict | None) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or ()
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


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


def start_profilers(prefix: Path, operator_pid: int) -> list[subprocess.Popen]:
    """py-spy on the operator and on this process (the emulator) while converging and 10 s after: `<prefix>.operator.txt` and
    `<prefix>.emulator.txt`, collapsed stacks (one line per stack with its sample count); only the thread holding
    the GIL is sampled, so waiting for the other side is not counted."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return [
        subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--rate", "50", "--format", "raw", "--nonblocking", "--gil"]
            + ["--output", f"{prefix}.{what}.txt"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for what, pid in (("operator", operator_pid), ("emulator", os.getpid()))
    ]


def stop_profilers(profilers: list[subprocess.Popen]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for profiler in profilers:
        profiler.wait(30)


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


async def run(
    count: int,
    namespaces: int,
    resync: float,
    operator: str,
    keep_log: Path | None,
    latency_count: int,
    converge_timeout: float,
    profile: Path | None = None,
) -> dict:
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
            profilers = start_profilers(profile, proc.pid) if profile else []
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
            converge_calls: list[tuple[str, str, str | None]] = []
            while len(done) < count and time.monotonic() - started < converge_timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"operator exited with {proc.returncode}; log: {log_path}")
                now = time.monotonic()
                for key in created.keys() - done.keys():
                    obj = emulator.read(RD, *key)
                    if obj and (obj.get("status") or {}).get("observedGeneration") == 1:
                        done[key] = now
                rss_samples.append(proc_memory_mb(proc.pid)["VmRSS"])
                converge_calls += drain(emulator)
                # Polling shares the emulator's event loop: every 0.1 s over 1 000 objects took a tenth of the
                # emulator's CPU; 0.5 s is fine-grained enough for a convergence measured in tens of seconds.
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - started
            op_cpu = proc_cpu_s(proc.pid) - op_cpu_before
            own_cpu = time.process_time() - own_cpu_before
            mem_done = proc_memory_mb(proc.pid)
            # Idle for a while after convergence (watches open, nothing to do): RSS and CPU at rest.
            idle_cpu_before = proc_cpu_s(proc.pid)
            await asyncio.sleep(10)
            idle_cpu = proc_cpu_s(proc.pid) - idle_cpu_before
            stop_profilers(profilers)
            mem_idle = proc_memory_mb(proc.pid)
            converge_calls += drain(emulator)

            # Quiet: wait until the operator has written nothing for 10 s (events and kopf's own bookkeeping
            # of the last objects trail the status writes), so the window below sees the steady state only.
            quiet_started = time.monotonic()
            last_write = time.monotonic()
            while time.monotonic() - last_write < 10 and time.monotonic() - quiet_started < 300:
                await asyncio.sleep(1.0)
                if any(c[0] in WRITE_VERBS for c in drain(emulator)):
                    last_write = time.monotonic()
            quiet_after_s = time.monotonic() - quiet_started

            # Steady state: every object's resync timer fires at least twice in the window.
            window = max(60.0, 2 * resync + 5)
            passes_before = await asyncio.to_thread(scrape_passes, metrics_port)
            steady_calls: list[tuple[str, str, str | None]] = []
            steady_cpu_before = proc_cpu_s(proc.pid)
            steady_started = time.monotonic()
            while time.monotonic() - steady_started < window:
                await asyncio.sleep(1.0)
                steady_calls += drain(emulator)
                rss_samples.append(proc_memory_mb(proc.pid)["VmRSS"])
            steady_cpu = proc_cpu_s(proc.pid) - steady_cpu_before
            passes_after = await asyncio.to_thread(scrape_passes, metrics_port)
            mem_steady = proc_memory_mb(proc.pid)

            # Status latency: the Deployment reports all replicas ready -> the RerankerDeployment is Ready.
            latencies_ready: list[float] = []
            ready_timeouts = 0  # objects that never became Ready within 30 s (a broken benchmark or operator)
            for i in range(min(latency_count, count)):
                ns, name = f"bench-{i % namespaces}", f"rr-{i:04d}"
                if emulator.read(CHILDREN[0], ns, name) is None:
                    continue  # not converged within the time limit (reported as reconciled < count)
                await make_ready(emulator, ns, name)
                started_ready = time.monotonic()
                while not is_ready(emulator.read(RD, ns, name)) and time.monotonic() - started_ready < 30:
                    await asyncio.sleep(0.01)
                if not is_ready(emulator.read(RD, ns, name)):
                    ready_timeouts += 1
                latencies_ready.append(time.monotonic() - started_ready)
                drain(emulator)
            scraped = await asyncio.to_thread(scrape, metrics_port)
            mem_end = proc_memory_mb(proc.pid)
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
    passes = passes_from(scraped)
    steady_non_watch = [c for c in steady_calls if c[0] != "watch"]
    steady_minutes = window / 60
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
        "operator_rss_steady_end_mb": round(mem_steady["VmRSS"]),
        "operator_vmhwm_mb": round(mem_end["VmHWM"]),
        "operator_cpu_s": round(op_cpu, 1),
        "operator_cpu_ms_per_object": round(op_cpu / count * 1000, 1),
        "converge_requests_per_object": round(len(converge_calls) / count, 1),
        "operator_idle_cpu_s_per_10s": round(idle_cpu, 2),
        "emulator_and_bench_cpu_s": round(own_cpu, 1),
        "converge_requests": len(converge_calls),
        "converge_requests_by_verb": dict(collections.Counter(c[0] for c in converge_calls)),
        "converge_requests_per_object_by_verb_and_resource": {
            key: round(n / count, 2)
            for key, n in collections.Counter(f"{c[0]} {c[1]}" for c in converge_calls).most_common()
        },
        "steady_window_s": window,
        "operator_steady_cpu_s_per_10s": round(steady_cpu / window * 10, 2),
        "steady_passes_in_window": {
            k: passes_after.get(k, 0) - passes_before.get(k, 0) for k in passes_after
        },
        "steady_requests_per_min_excluding_watch": round(len(steady_non_watch) / steady_minutes, 1),
        "steady_requests_by_verb_and_resource": dict(
            collections.Counter(f"{c[0]} {c[1]}" for c in steady_non_watch)
        ),
        "quiet_after_converged_s": round(quiet_after_s, 1),
        "steady_writes": len([c for c in steady_calls if c[0] in WRITE_VERBS]),
        "steady_write_samples": [c for c in steady_calls if c[0] in WRITE_VERBS][:10],
        "steady_watch_requests": len(steady_calls) - len(steady_non_watch),
        "status_latency_count": len(latencies_ready),
        "status_latency_timeouts": ready_timeouts,
        "status_latency_p50_s": percentile(latencies_ready, 0.5),
        "status_latency_p99_s": percentile(latencies_ready, 0.99),
        "status_latency_max_s": round(max(latencies_ready), 3) if latencies_ready else None,
        "operator_log_lines": log_lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--resync-seconds", type=float, default=30, help="the operator's default")
    parser.add_argument(
        "--latency-count", type=int, default=100, help="objects whose status latency is measured"
    )
    parser.add_argument(
        "--operator",
        help="the operator's console script (default: the one of --image-venv)",
    )
    parser.add_argument(
        "--image-venv",
        type=Path,
        default=ROOT / ".bench-venv",
        help="venv installed as the operator image installs the project (made or refreshed here)",
    )
    parser.add_argument("--keep-log", type=Path, help="copy the operator's log here")
    parser.add_argument("--converge-timeout", type=float, default=600, help="give up converging after this")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the operator and the emulator while converging and 10 s after (path prefix)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.ERROR)
    operator = args.operator or image_venv(args.image_venv)
    load_before = os.getloadavg()
    result = asyncio.run(
        run(
            args.count,
            args.namespaces,
            args.resync_seconds,
            operator,
            args.keep_log,
            args.latency_count,
            args.converge_timeout,
            args.profile,
        )
    )
    result.update(
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        date=time.strftime("%Y-%m-%d %H:%M"),
        load_before=[round(x, 2) for x in load_before],
        load_after=[round(x, 2) for x in os.getloadavg()],
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
