"""Where a CPU engine's start and decoding time go, by process layout and thread count.

    python benchmarks/bench_engine_start.py [--prompts 128] [--tokens 64]

Each configuration runs in a fresh process (so imports and OpenMP start cold, as a replica's
do): import vLLM, build one of synth-ray's engines on the embedded model, then decode
`--prompts` requests of `--tokens` tokens (ignore_eos) all at once through it.
- `async engine` (engine/vllm_engine.py, the GPU replica's): vLLM's `AsyncLLM`, whose engine
  core is a second process. `vllm default`: vLLM's CPU layout, the environment a plain process
  gets: the model in a worker process pinned to one core per NUMA node less one core left to
  the engine core process, which busy-waits on it. `synth-ray env`: `cpu_engine_env`, the
  single-process executor inside the engine core, on N OpenMP threads.
- `in-process engine` (engine/inprocess_engine.py, the CPU replica's): `LLMEngine` in this
  process, stepped by a thread, with `cpu_engine_env`.
Results are appended to benchmarks/results.md and results.jsonl with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import HERE, append_results, machine, machine_line

CHILD = r"""
import asyncio, json, sys, time
t0 = time.monotonic()
import vllm
from synth_ray.engine.inprocess_engine import InProcessEngine
from synth_ray.engine.requests import EngineRequest, SamplingSpec
from synth_ray.engine.vllm_engine import EngineSettings, VllmEngine
imported = time.monotonic()
kind, model, prompts, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
settings = EngineSettings(model=model, args={"max_model_len": 512, "enforce_eager": True})
engine = (InProcessEngine if kind == "inprocess" else VllmEngine)(settings)
built = time.monotonic()
spec = SamplingSpec(temperature=0.7, top_p=0.9, max_tokens=tokens, ignore_eos=True)
requests = [
    EngineRequest(f"r{i}", [1] + [(i * 37 + j * 11) % 40000 + 100 for j in range(60)], spec, i,
                  tokens)
    for i in range(prompts)
]
start = time.monotonic()
results = asyncio.run(engine.generate_many(requests))
done = time.monotonic()
print("RESULT " + json.dumps({"import_s": imported - t0, "engine_build_s": built - imported,
      "decode_s": done - start, "output_tokens": sum(r.n_output_tokens for r in results),
      "dtype": engine.dtype_choice.dtype}), flush=True)
engine.shutdown()
"""


def run(label: str, kind: str, env: dict[str, str], model: str, prompts: int, tokens: int) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OMP_"))}
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, kind, model, str(prompts), str(tokens)],
        env={**base, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.monotonic() - began
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 and not lines:
        raise SystemExit(f"{label}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result.update(label=label, wall_s=wall, tok_s=result["output_tokens"] / result["decode_s"])
    print(
        f"{label}: import {result['import_s']:.1f}s, engine {result['engine_build_s']:.1f}s, "
        f"decode {result['tok_s']:.0f} tok/s, process {wall:.1f}s",
        flush=True,
    )
    return result


def main() -> None:
    from synth_ray.engine.models import prepare_embedded_model
    from synth_ray.engine.vllm_engine import cpu_engine_env

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    model = str(prepare_embedded_model())
    cores = len(os.sched_getaffinity(0))
    configs = [("async engine, vllm default", "async", {"VLLM_CPU_KVCACHE_SPACE": "2"})]
    for n in sorted({1, cores}):
        threads = f"{n} thread{'s' if n > 1 else ''}"
        configs.append((f"async engine, synth-ray env, {threads}", "async", cpu_engine_env(2, n)))
    configs.append((f"in-process engine, {cores} threads", "inprocess", cpu_engine_env(2, cores)))
    rows = [run(label, kind, env, model, args.prompts, args.tokens) for label, kind, env in configs]
    info = machine()
    when = time.strftime("%Y-%m-%d %H:%M")
    md = [
        f"\n## {when} CPU engine start and decoding by process layout (bench_engine_start.py)\n",
        f"Machine: {machine_line(info)}. synth-ray's engines on the embedded model, dtype "
        f"{rows[0]['dtype']}, {args.prompts} requests x {args.tokens} tokens at once, "
        "temperature 0.7, top_p 0.9; each row a fresh process.\n",
        "| layout | import vLLM s | build engine s | decode tok/s | process s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['label']} | {r['import_s']:.1f} | {r['engine_build_s']:.1f} | "
            f"{r['tok_s']:.0f} | {r['wall_s']:.1f} |"
        )
    records = [{"bench": "engine_start", "when": when, "machine": info, **r} for r in rows]
    append_results(args.results, "\n".join(md) + "\n", records)
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
