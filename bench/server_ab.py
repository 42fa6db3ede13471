"""Focused runs, one engine at a time, more requests per cell than server_bench.py.

Engines: `ours`, `vllm` (bf16, as server_bench.py starts them) and `vllm-fp32` (plain vLLM with `--dtype float32`).
Usage: .venv/bin/python bench/server_ab.py vllm-fp32 ours vllm
"""

import asyncio
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_bench as sb  # noqa: E402

CELLS = (("64x120w", 1, 30), ("20x60w", 1, 15), ("20x60w", 16, 15))  # workload, clients, seconds


def launch_fp32(model_dir, log):
    """Plain vLLM with server_bench's arguments and CPU environment, but float32."""
    proc, described = sb.launch("vllm", model_dir, log)
    sb.stop(proc)
    cmd = described["command"].replace("--dtype bfloat16", "--dtype float32").split()
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", **described["env"])
    with open(log, "w") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


async def main() -> None:
    model_dir = sb.build_model()
    bodies = sb.make_bodies(model_dir)
    for engine in sys.argv[1:]:
        url = f"http://127.0.0.1:{sb.PORTS['vllm' if engine == 'vllm-fp32' else engine]}"
        log = sb.WORK / f"ab-{engine}.log"
        proc = launch_fp32(model_dir, log) if engine == "vllm-fp32" else sb.launch(engine, model_dir, log)[0]
        try:
            await sb.wait_ready(url, proc)
            for wl_bodies in bodies.values():
                await sb.closed_loop(url, wl_bodies, 4, 3, 20)  # warm-up
            for workload, clients, seconds in CELLS:
                load = os.getloadavg()[0]
                cell = await sb.closed_loop(url, bodies[workload], clients, seconds, 400)
                cell.update(engine=engine, workload=workload, clients=clients, load1=round(load, 2))
                print(json.dumps(cell), flush=True)
        finally:
            sb.stop(proc)


if __name__ == "__main__":
    asyncio.run(main())
