"""Plain torch on this CPU: one request scored in-process (no HTTP) at float32 and bfloat16, and GEMM rates.

Usage: .venv/bin/python bench/dtype_check.py
"""

import os
import statistics
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_bench as sb  # noqa: E402


def timed(fn, repeats: int = 5) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model_dir = sb.build_model()
    bodies = sb.make_bodies(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=dtype).eval()
        for workload in sb.WORKLOADS:
            body = bodies[workload][0]
            batch = tokenizer(
                [body["query"]] * len(body["documents"]),
                body["documents"],
                padding=True,
                truncation=True,
                max_length=sb.MAX_MODEL_LEN,
                return_tensors="pt",
            )
            with torch.inference_mode():
                seconds = timed(lambda: model(**batch))  # noqa: B023
            print(
                f"{dtype} {workload}: {int(batch['attention_mask'].sum())} tokens, "
                f"{seconds * 1000:.0f} ms, {len(body['documents']) / seconds:.0f} pairs/s"
            )
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        seconds = timed(lambda: a @ b, repeats=10)  # noqa: B023
        print(f"{dtype} GEMM 2048^3: {2 * 2048**3 / seconds / 1e9:.0f} GFLOP/s")
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")


if __name__ == "__main__":
    main()
