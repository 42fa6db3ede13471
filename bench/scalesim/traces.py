"""Request traces: when requests arrive and how large they are (pairs and tokens).

Arrivals are a non-homogeneous Poisson process (thinning); sizes follow RAGFlow: one retrieval reranks 64-126
chunks, a chunk is ~100-500 tokens (log-normal around the tenant's chunk size), the query ~20 tokens. The
`mix` trace adds a tail of 1 000-document requests (other RAG pipelines) and alternates tenants with short and
long chunks, which is where pairs and tokens stop being proportional.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

QUERY_TOKENS = 20
MAX_DOC_TOKENS = 490  # the reranker's max_model_len (512) minus the query and special tokens
HOUR = 3600.0


@dataclass(frozen=True)
class Request:
    id: int
    arrival: float
    pairs: int
    tokens: int


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    duration: float
    requests: list[Request]
    rate: Callable[[float], float]
    # (start, end) of the interval a report looks at separately (the burst), if any.
    window: tuple[float, float] | None = None


def _arrivals(rng: np.random.Generator, rate: Callable[[float], float], peak: float, duration: float):
    t = 0.0
    while True:
        t += rng.exponential(1.0 / peak)
        if t >= duration:
            return
        if rng.random() * peak <= rate(t):
            yield t


def _requests(
    rng: np.random.Generator,
    rate: Callable[[float], float],
    peak: float,
    duration: float,
    chunk_median: Callable[[float], float],
    tail_share: float = 0.0,
) -> list[Request]:
    requests = []
    for i, t in enumerate(_arrivals(rng, rate, peak, duration)):
        pairs = 1000 if rng.random() < tail_share else int(rng.integers(64, 127))
        docs = rng.lognormal(math.log(chunk_median(t)), 0.45, size=pairs).clip(24, MAX_DOC_TOKENS)
        tokens = int(docs.sum()) + pairs * (QUERY_TOKENS + 3)
        requests.append(Request(i, float(t), pairs, tokens))
    return requests


def diurnal(seed: int = 1, scale: float = 1.0, hours: float = 24.0) -> Trace:
    """A working day: 0.2 req/s at night, 5 req/s at the 15:00 peak (scale multiplies both)."""
    night, peak = 0.2 * scale, 5.0 * scale

    def rate(t: float) -> float:
        phase = (1 - math.cos(2 * math.pi * (t - 3 * HOUR) / (24 * HOUR))) / 2
        return night + (peak - night) * phase**2

    duration = hours * HOUR
    rng = np.random.default_rng(seed)
    return Trace(
        "diurnal",
        f"24 h day, {night:g} req/s at 03:00 rising to {peak:g} req/s at 15:00; RAGFlow sizes",
        duration,
        _requests(rng, rate, peak, duration, lambda t: 180.0),
        rate,
    )


def burst(seed: int = 2, scale: float = 1.0, minutes: float = 90.0) -> Trace:
    """0.5 req/s, then 10x (5 req/s) for 15 minutes from minute 20, then back."""
    base = 0.5 * scale
    start, end = 20 * 60.0, 35 * 60.0

    def rate(t: float) -> float:
        return base * 10 if start <= t < end else base

    duration = minutes * 60
    rng = np.random.default_rng(seed)
    return Trace(
        "burst",
        f"{base:g} req/s, 10x ({10 * base:g} req/s) from minute 20 to 35; RAGFlow sizes",
        duration,
        _requests(rng, rate, base * 10, duration, lambda t: 180.0),
        rate,
        window=(start, end),
    )


def mix(seed: int = 3, scale: float = 1.0, minutes: float = 120.0) -> Trace:
    """2 req/s; tenants alternate every 15 min between ~120- and ~300-token chunks; 2 % 1 000-doc requests."""
    level = 2.0 * scale

    def chunk_median(t: float) -> float:
        return 120.0 if int(t // 900) % 2 == 0 else 300.0

    duration = minutes * 60
    rng = np.random.default_rng(seed)
    return Trace(
        "mix",
        f"{level:g} req/s; chunk size alternates ~120 / ~300 tokens every 15 min; 2 % of requests carry "
        "1 000 documents",
        duration,
        _requests(rng, lambda t: level, level, duration, chunk_median, tail_share=0.02),
        lambda t: level,
    )


def night(seed: int = 4, scale: float = 1.0, hours: float = 8.0) -> Trace:
    """A quiet night: one request every ~40 s, with a 2 h silence in the middle."""
    level = 0.025 * scale

    def rate(t: float) -> float:
        return 0.0 if 3 * HOUR <= t < 5 * HOUR else level

    duration = hours * HOUR
    rng = np.random.default_rng(seed)
    return Trace(
        "night",
        f"{level:g} req/s (one every {1 / level:.0f} s), silent from 03:00 to 05:00; RAGFlow sizes",
        duration,
        _requests(rng, rate, level, duration, lambda t: 180.0),
        rate,
    )


def steady(rate: float, seed: int = 5, minutes: float = 120.0) -> Trace:
    """A constant Poisson load with RAGFlow sizes (capacity planning)."""
    duration = minutes * 60
    rng = np.random.default_rng(seed)
    return Trace(
        f"steady {rate:g}/s",
        f"{rate:g} req/s for {minutes:g} min; RAGFlow sizes",
        duration,
        _requests(rng, lambda t: rate, rate, duration, lambda t: 180.0),
        lambda t: rate,
        window=(duration / 2, duration),
    )


TRACES = {"diurnal": diurnal, "burst": burst, "mix": mix, "night": night}
