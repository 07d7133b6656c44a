"""synth-ray `generate` vs raw vLLM on identical prompts: output tokens/s and the ratio.

    python benchmarks/bench_generate.py [--prompts 128] [--max-tokens 64] [--repeats 1]
    make bench

Each system runs in a fresh process with the same engine settings, `ignore_eos` and a fixed
`max_tokens`, so both generate exactly prompts x max_tokens tokens:
- raw: benchmarks/raw_vllm.py, `LLM.generate` over all prompts at once (the ceiling);
- synth-ray: `synth-ray run` of the `generate` method (local Ray, one generator actor).
Two figures per system: steady state (output tokens / generation time, engine ready to last
token) and whole process (output tokens / wall time from process start to exit, Ray and engine
start included). Both run the dtype synth-ray's `auto` picks on this machine (float32 on a CPU
without native bf16, see synth_ray/engine/dtype.py) unless --dtype names one. Results are
appended to benchmarks/results.md and results.jsonl with the machine they came from: CPU model
and the flags that decide its speed (avx512f, avx512_bf16, amx), GPU, versions, dtype.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

TOPICS = [
    "the history of the printing press",
    "how vaccines train the immune system",
    "why the sea is salty",
    "the rules of chess for a beginner",
    "how a bicycle gear works",
    "the water cycle",
    "how bread rises",
    "what a black hole is",
    "how to plant tomatoes",
    "the causes of the seasons",
    "how a refrigerator keeps food cold",
    "how bees make honey",
    "why leaves change colour in autumn",
    "how a compass finds north",
    "how rainbows form",
    "what inflation means for savings",
]
FORMS = [
    "Explain {t} in a short paragraph.",
    "Write three bullet points about {t}.",
    "Describe {t} to a ten-year-old.",
    "Give a one-sentence summary of {t}.",
    "List common misconceptions about {t}.",
    "Write a short quiz question about {t}.",
    "Compare two viewpoints on {t}.",
    "Write a haiku about {t}.",
]


def make_prompts(n: int) -> list[str]:
    return [
        FORMS[i % len(FORMS)].format(t=TOPICS[(i // len(FORMS)) % len(TOPICS)]) + f" (#{i})"
        for i in range(n)
    ]


def machine() -> dict:
    from synth_ray.engine.dtype import cpu_description

    info = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        **cpu_description(),
    }
    try:
        mem = [line for line in open("/proc/meminfo") if line.startswith("MemTotal")]
        info["memory_gib"] = round(int(mem[0].split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if gpu.returncode == 0:
            info["gpu"] = gpu.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    import ray
    import torch
    import vllm

    info.update(vllm=vllm.__version__, torch=torch.__version__, ray=ray.__version__)
    return info


def machine_line(m: dict) -> str:
    """One line naming the machine a figure came from: CPU model and the flags that decide a
    CPU engine's speed, cores, memory, GPU. Figures are comparable only on the same line."""
    flags = " ".join(m.get("cpu_flags", [])) or "no avx2/avx512"
    gpu = f", GPU {m['gpu']}" if "gpu" in m else ""
    return f"{m.get('cpu')} ({flags}), {m.get('cores')} cores, {m.get('memory_gib')} GiB{gpu}"


def append_results(md_path: Path, markdown: str, records: list[dict]) -> None:
    """Append a Markdown section to `md_path` and one JSON line per record to results.jsonl."""
    with open(md_path, "a") as fh:
        fh.write(markdown if markdown.endswith("\n") else markdown + "\n")
    with open(HERE / "results.jsonl", "a") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")


def run_synth_ray_config(config: Path, out: Path) -> tuple[float, dict, dict]:
    """`synth-ray run` the config in a fresh process: (wall s, its _runs.jsonl entry, stats.json)."""
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "synth_ray", "run", str(config), "--no-progress", "--overwrite"],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.monotonic() - start
    last_run = [json.loads(line) for line in (out / "_runs.jsonl").read_text().splitlines()][-1]
    return wall, last_run, json.loads((out / "stats.json").read_text())


def run_raw(prompts_file: Path, model: str, args, work: Path) -> dict:
    result = work / "raw.json"
    cmd = [
        sys.executable,
        str(HERE / "raw_vllm.py"),
        "--prompts",
        str(prompts_file),
        "--model",
        model,
        "--max-tokens",
        str(args.max_tokens),
        "--max-model-len",
        str(args.max_model_len),
        "--result",
        str(result),
        "--dtype",
        args.dtype,
    ]
    if args.enforce_eager:
        cmd.append("--enforce-eager")
    start = time.monotonic()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - start
    data = json.loads(result.read_text())
    return {
        "output_tokens": data["output_tokens"],
        "generation_s": data["generate_s"],
        "wall_s": wall,
        "dtype": data["dtype"],
    }


def run_synth_ray(prompts_file: Path, args, work: Path, out: Path) -> dict:
    config = work / "bench.yaml"
    config.write_text(f"""
method: generate
input: {{path: {prompts_file}, text_column: prompt}}
output: {{path: {out}, rows_per_shard: {args.rows_per_shard}}}
engine: {{model: {args.model}, dtype: {args.dtype}, max_model_len: {args.max_model_len}, enforce_eager: {str(args.enforce_eager).lower()}}}
sampling: {{temperature: 0.7, top_p: 0.9, max_tokens: {args.max_tokens}, ignore_eos: true}}
resources: {{replicas: 1, cpus_per_replica: {args.cpus_per_replica}}}
""")
    wall, run, stats = run_synth_ray_config(config, out)
    return {
        "output_tokens": stats["output_tokens"],
        "generation_s": run["generation_wall_s"],
        "wall_s": wall,
        "dtype": run.get("engine_dtype"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rows-per-shard", type=int, default=10_000)
    parser.add_argument("--cpus-per-replica", type=float, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--results", default=str(HERE / "results.md"))
    parser.add_argument("--label", default="cpu")
    parser.add_argument("--dtype", default="auto", help="engine.dtype for both systems")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

    sys.path.insert(0, str(REPO))
    from synth_ray.engine.models import resolve_model

    model = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="synth-ray-bench-"))
    prompts_file = work / "prompts.jsonl"
    prompts_file.write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in make_prompts(args.prompts))
    )

    rows = []
    for repeat in range(args.repeats):
        raw = run_raw(prompts_file, model, args, work)
        ours = run_synth_ray(prompts_file, args, work, work / f"out{repeat}")
        assert raw["output_tokens"] == ours["output_tokens"] == args.prompts * args.max_tokens, (
            raw,
            ours,
        )
        assert raw["dtype"] == ours["dtype"], (raw, ours)
        rows.append((raw, ours))

    def rate(r: dict, key: str) -> float:
        return r["output_tokens"] / r[key]

    best = lambda key, side: max(rate(pair[side], key) for pair in rows)  # noqa: E731
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "label": args.label,
        "machine": machine(),
        "model": args.model,
        "n_prompts": args.prompts,
        "max_tokens": args.max_tokens,
        "max_model_len": args.max_model_len,
        "enforce_eager": args.enforce_eager,
        "dtype": rows[0][0]["dtype"],
        "repeats": args.repeats,
        "raw_steady_tok_s": round(best("generation_s", 0), 1),
        "synth_steady_tok_s": round(best("generation_s", 1), 1),
        "raw_whole_tok_s": round(best("wall_s", 0), 1),
        "synth_whole_tok_s": round(best("wall_s", 1), 1),
        "raw_wall_s": round(min(p[0]["wall_s"] for p in rows), 1),
        "synth_wall_s": round(min(p[1]["wall_s"] for p in rows), 1),
    }
    summary["steady_ratio"] = round(summary["synth_steady_tok_s"] / summary["raw_steady_tok_s"], 3)
    summary["whole_ratio"] = round(summary["synth_whole_tok_s"] / summary["raw_whole_tok_s"], 3)

    m = summary["machine"]
    table = (
        f"\n## {summary['date']} ({args.label}): {args.prompts} prompts x {args.max_tokens} tokens, {args.model}\n"
        f"Machine: {machine_line(m)}; vllm {m['vllm']}, torch {m['torch']}, ray {m['ray']}; "
        f"dtype {summary['dtype']}, max_model_len {args.max_model_len}, enforce_eager {args.enforce_eager}, best of {args.repeats}.\n\n"
        "| system | steady tok/s | whole-process tok/s | wall s |\n|---|---|---|---|\n"
        f"| raw vLLM `LLM.generate` | {summary['raw_steady_tok_s']} | {summary['raw_whole_tok_s']} | {summary['raw_wall_s']} |\n"
        f"| synth-ray `generate` | {summary['synth_steady_tok_s']} | {summary['synth_whole_tok_s']} | {summary['synth_wall_s']} |\n"
        f"| ratio | {summary['steady_ratio']} | {summary['whole_ratio']} | |\n"
    )
    append_results(args.results, table, [summary])
    print(table)


if __name__ == "__main__":
    main()
