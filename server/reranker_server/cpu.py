"""vLLM-CPU tuning: the settings that make vLLM on a CPU pod about 20x faster than its defaults.

Measured on 2-core AVX512-BF16 machines (see /work/shared/reference/vllm-cpu-speed.md and bench/): binding
OpenMP threads to every core the pod may use, preloading Intel OpenMP, and running in bfloat16 where the CPU
really computes it faster (measured at start-up: the flag alone is not enough).
The functions that decide are pure; `apply` is the one that touches the environment.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from .config import EngineConfig

# Set after the one re-exec that adds LD_PRELOAD, so a missing library can never cause an exec loop.
REEXEC_MARKER = "RERANKER_SERVER_REEXECED"
# KV cache (GiB) when the config does not say: encoders need almost none; decoders hold max_model_len tokens.
DEFAULT_KVCACHE_GIB_ENCODER = 1
DEFAULT_KVCACHE_GIB_DECODER = 4
# bfloat16 must beat float32 by this factor in the start-up GEMM probe to be chosen for dtype "auto".
BF16_MIN_SPEEDUP = 1.2
BF16_SPEEDUP_ENV = "RERANKER_CPU_BF16_SPEEDUP"


def cgroup_cpu_limit(cpu_max_text: str | None) -> float | None:
    """Cores allowed by a cgroup v2 `cpu.max` line ("max 100000" or "200000 100000"); None when unlimited."""
    if not cpu_max_text:
        return None
    parts = cpu_max_text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = int(parts[0]), int(parts[1])
    return quota / period if period > 0 else None


def usable_cpus(affinity: Iterable[int], cpu_limit: float | None) -> list[int]:
    """The cores vLLM should bind to: those this process may run on, cut to the cgroup's CPU quota.

    A quota of 2.5 cores keeps 3 cores (rounded up, at least 1): OpenMP threads that briefly exceed the quota are
    throttled, which costs less than leaving a core idle.
    """
    cores = sorted(set(affinity))
    if cpu_limit is not None:
        cores = cores[: max(1, math.ceil(cpu_limit))]
    return cores


def format_cpu_list(cores: Iterable[int]) -> str:
    """Compress cores into vLLM's range syntax: [0, 1, 2, 5] -> "0-2,5"."""
    ranges: list[str] = []
    ordered = sorted(set(cores))
    start = prev = None
    for c in ordered:
        if start is None:
            start = prev = c
        elif c == prev + 1:
            prev = c
        else:
            ranges.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = c
    if start is not None:
        ranges.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(ranges)


def has_avx512_bf16(cpuinfo_text: str) -> bool:
    """Whether /proc/cpuinfo advertises native bfloat16 (AVX512-BF16 or AMX-BF16)."""
    for line in cpuinfo_text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def measure_bf16_speedup(size: int = 1024, repeats: int = 5) -> float:
    """How many times faster a bfloat16 GEMM runs than a float32 one on this CPU (best of `repeats`).

    The CPU flags alone mislead: on this project's own 2-core Intel Xeon, which advertises AVX512-BF16, bfloat16
    GEMMs ran at about half the float32 rate and vLLM served 1.5x more pairs/s in float32
    (bench/results/server.md, bench/dtype_check.py), while on an AMD EPYC with the same flag bfloat16 was 10x
    faster. The probe costs about 0.1 s; its result is kept in the environment so the one re-exec that preloads
    Intel OpenMP does not measure again.
    """
    cached = os.environ.get(BF16_SPEEDUP_ENV)
    if cached:
        return float(cached)
    import time

    import torch

    def best_seconds(dtype: torch.dtype) -> float:
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        a @ b  # warm-up: kernel selection and page faults
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)

    speedup = best_seconds(torch.float32) / best_seconds(torch.bfloat16)
    os.environ[BF16_SPEEDUP_ENV] = f"{speedup:.3f}"
    return speedup


def choose_dtype(configured: str, cpuinfo_text: str, bf16_speedup: Callable[[], float]) -> str:
    """The dtype for "auto" on a CPU: bfloat16 where the CPU has it natively AND it measures faster.

    `bf16_speedup` is called only when it matters (auto on a CPU that advertises bfloat16); a CPU that has the
    flag but runs bfloat16 slower gets float32 (an "auto" left to vLLM would keep a bf16 checkpoint in bf16).
    """
    if configured != "auto" or not has_avx512_bf16(cpuinfo_text):
        return configured
    return "bfloat16" if bf16_speedup() >= BF16_MIN_SPEEDUP else "float32"


def find_libiomp(search_dirs: Iterable[Path]) -> Path | None:
    """The Intel OpenMP runtime installed by the `intel-openmp` wheel (in <prefix>/lib), if any."""
    for d in search_dirs:
        candidate = d / "libiomp5.so"
        if candidate.is_file():
            return candidate
    return None


def default_lib_dirs() -> list[Path]:
    """Where pip puts the intel-openmp shared library: the venv's and the base interpreter's lib folders."""
    return [Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib", Path("/usr/local/lib"), Path("/usr/lib")]


def tuned_env(
    engine: EngineConfig,
    env: Mapping[str, str],
    *,
    cores: list[int],
    libiomp: Path | None,
    decoder: bool,
) -> dict[str, str]:
    """The environment variables to add for a CPU pod (an empty dict on GPU). Explicit env settings win."""
    if engine.device != "cpu":
        return {}
    out: dict[str, str] = {}
    if "VLLM_CPU_OMP_THREADS_BIND" not in env:
        out["VLLM_CPU_OMP_THREADS_BIND"] = engine.cpu_threads_bind or format_cpu_list(cores)
    if "VLLM_CPU_KVCACHE_SPACE" not in env:
        default = DEFAULT_KVCACHE_GIB_DECODER if decoder else DEFAULT_KVCACHE_GIB_ENCODER
        out["VLLM_CPU_KVCACHE_SPACE"] = str(engine.cpu_kvcache_space_gib or default)
    preload = env.get("LD_PRELOAD", "")
    if libiomp is not None and "libiomp5" not in preload:
        out["LD_PRELOAD"] = f"{libiomp}:{preload}" if preload else str(libiomp)
    return out


def read_text(path: str) -> str:
    """A small system file's text, or "" where it does not exist (not Linux, no cgroup v2)."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def current_cores() -> list[int]:
    """Cores this process may use, limited by the cgroup CPU quota."""
    return usable_cpus(os.sched_getaffinity(0), cgroup_cpu_limit(read_text("/sys/fs/cgroup/cpu.max").strip()))


def apply(engine: EngineConfig, *, decoder: bool, argv: list[str]) -> None:
    """Set the CPU environment for vLLM; re-exec once when LD_PRELOAD must change (it only takes effect at exec).

    `argv` are this program's arguments (without the interpreter) for the re-exec.
    """
    changes = tuned_env(
        engine, os.environ, cores=current_cores(), libiomp=find_libiomp(default_lib_dirs()), decoder=decoder
    )
    needs_exec = "LD_PRELOAD" in changes and not os.environ.get(REEXEC_MARKER)
    os.environ.update(changes)
    if needs_exec:
        os.environ[REEXEC_MARKER] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "reranker_server", *argv])
