"""Costs against corpus size: the driver's CPU, memory, time to the first request, resume time.

    python benchmarks/bench_scale.py [--sizes 100000,1000000] [--cases jsonl,parquet,star]
    python benchmarks/bench_scale.py --cases metamath,evol   # the other multi-stage methods

Each (case, size) runs in a fresh process of its own (so its peak memory is its own) on a real
local Ray, with real generator actors whose engine answers at once (bench_driver.py's stand-in:
benchmark-only, no config can select it). Cases:
- jsonl: `generate` over one JSONL file of N rows (20-word prompts, 16 tokens out);
- parquet: the same rows as 1,000 Parquet files;
- star: STaR over N questions the stand-in always gets wrong, so both stages run on every row;
- metamath: MetaMath over the same N questions (n=4): stage 1 asks a rephrasing and an SV
  rewrite per row (the stand-in's are cut by max_tokens, so dropped), stage 2 answers every
  FOBAR question, built by the replicas from the input;
- evol: Evol-Instruct over the N prompts, 2 rounds of evolve, judge and respond (the
  stand-in's evolutions pass every rule), so 6 stages run on every row.
Figures per run: rows/s end to end; the driver process's own CPU per request (all its threads);
its peak resident memory; seconds from `run_job` to the first slice sent; and a resume of the
finished output (nothing left to do): its wall time and driver CPU. Results are appended to
benchmarks/results.md and results.jsonl with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_driver import WORDS, stand_in_config  # noqa: E402
from common import append_results, machine, machine_line  # noqa: E402

PARQUET_FILES = 1000


def write_inputs(folder: Path, n: int) -> dict[str, Path]:
    """The three cases' inputs for `n` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(0)
    prompts = [" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(n)]
    jsonl = folder / f"prompts-{n}.jsonl"
    with open(jsonl, "w") as fh:
        for i, prompt in enumerate(prompts):
            fh.write(json.dumps({"id": f"d{i}", "prompt": prompt}) + "\n")
    parquet = folder / f"prompts-{n}-parquet"
    parquet.mkdir()
    per_file = max(1, n // PARQUET_FILES)
    for f, lo in enumerate(range(0, n, per_file)):
        ids = [f"d{i}" for i in range(lo, min(n, lo + per_file))]
        table = pa.table({"id": ids, "prompt": prompts[lo : lo + per_file]})
        pq.write_table(table, parquet / f"part-{f:05d}.parquet")
    star = folder / f"questions-{n}.jsonl"
    with open(star, "w") as fh:
        for i in range(n):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            question = f"A farmer has {a} {rng.choice(WORDS)}s and buys {b} more. How many now?"
            fh.write(json.dumps({"id": f"q{i}", "question": question, "answer": f"#### {a + b}"}))
            fh.write("\n")
    return {"jsonl": jsonl, "parquet": parquet, "star": star, "metamath": star, "evol": jsonl}


METHODS = {"star": "self_improve", "metamath": "metamath", "evol": "evol_instruct"}


def job_config(case: str, path: Path, out: Path, replicas: int) -> Any:
    data: dict[str, Any] = {
        "method": METHODS.get(case, "generate"),
        "input": {"path": str(path), "id_column": "id"},
        "output": {"path": str(out), "rows_per_shard": 2000},
        "sampling": {"max_tokens": 16},
    }
    if case == "star":
        data["self_improve"] = {"mode": "star"}
    elif case == "metamath":
        data["metamath"] = {"n": 4}
    else:
        data["input"]["text_column"] = "prompt"
    if case == "evol":
        data["evol_instruct"] = {"rounds": 2}
    return stand_in_config(data, replicas)


def child(case: str, path: Path, out: Path, replicas: int) -> dict[str, Any]:
    """One measured run and its resume, in this (fresh) process."""
    import ray
    from bench_driver import instant_actor_class

    from synth_ray.runtime import scheduler as scheduler_mod
    from synth_ray.runtime.cluster import ray_backend_for
    from synth_ray.runtime.job import run_job

    ray.init(num_cpus=replicas + 1, include_dashboard=False, log_to_driver=False)
    config = job_config(case, path, out, replicas)
    backend = ray_backend_for(config, keep_alive=True, actor_class=instant_actor_class())
    first_sent: list[float] = []
    real_send = scheduler_mod.Scheduler._send

    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not first_sent:
            first_sent.append(time.monotonic())
        return real_send(self, *args, **kwargs)

    scheduler_mod.Scheduler._send = send  # type: ignore[method-assign]
    cpu, wall = time.process_time(), time.monotonic()
    summary = run_job(config, show_progress=False, backend=backend)
    cpu, done = time.process_time() - cpu, time.monotonic()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    resume_cpu, resume_wall = time.process_time(), time.monotonic()
    again = run_job(config, show_progress=False, backend=backend)
    resume_cpu, resume_wall = time.process_time() - resume_cpu, time.monotonic() - resume_wall
    assert again.units_committed == 0, "the resume had work left"
    backend.close()
    ray.shutdown()
    requests = summary.stats.get("output_rows_generated") or summary.stats["rows_in"]
    return {
        "requests": requests,
        "rows_in": summary.stats["rows_in"],
        "wall_s": round(done - wall, 2),
        "driver_cpu_s": round(cpu, 2),
        "peak_rss_mib": round(peak_mib, 1),
        "first_request_s": round(first_sent[0] - wall, 2) if first_sent else None,
        "resume_wall_s": round(resume_wall, 2),
        "resume_driver_cpu_s": round(resume_cpu, 2),
    }


def measure(args: argparse.Namespace, work: Path) -> list[dict]:
    """Each case at each size, each in a fresh driver process; results in run order."""
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        inputs = write_inputs(work, n)
        for case in args.cases.split(","):
            out = work / f"out-{case}-{n}"
            command = [sys.executable, __file__, "--replicas", str(args.replicas)]
            command += ["--child", case, str(inputs[case]), str(out)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{case} at {n} rows failed")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result.update(case=case, rows=n)
            result["rows_per_s"] = round(n / result["wall_s"], 1)
            result["driver_cpu_ms_per_request"] = round(
                1000 * result["driver_cpu_s"] / result["requests"], 4
            )
            rows.append(result)
            print(json.dumps(result), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--cases", default="jsonl,parquet,star")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    parser.add_argument("--label", default="", help="a word on what this run measures")
    parser.add_argument(
        "--child", nargs=3, metavar=("CASE", "INPUT", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        case, path, out = args.child
        print(json.dumps(child(case, Path(path), Path(out), args.replicas)), flush=True)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        rows = measure(args, work)
    finally:  # the inputs and outputs of a 1M-row run are about 400 MB
        shutil.rmtree(work, ignore_errors=True)
    m = machine()
    stamp = time.strftime("%Y-%m-%d %H:%M")
    label = f" ({args.label})" if args.label else ""
    lines = [
        f"\n## {stamp} bench_scale{label}: costs against corpus size (engine stand-in), "
        f"{args.replicas} replicas\n",
        f"Machine: {machine_line(m)}. Each run a fresh driver process on a local Ray; "
        "driver CPU is that process's own (all threads), whole run, start-up included.\n",
        "| case | rows | requests | rows/s | driver CPU s | driver CPU ms/request | "
        "driver peak MiB | first request s | resume s (driver CPU s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['rows']} | {r['requests']} | {r['rows_per_s']} | "
            f"{r['driver_cpu_s']} | {r['driver_cpu_ms_per_request']} | {r['peak_rss_mib']} | "
            f"{r['first_request_s']} | {r['resume_wall_s']} ({r['resume_driver_cpu_s']}) |"
        )
    records = [
        {"bench": "scale", "time": stamp, "label": args.label, "machine": m, **r} for r in rows
    ]
    append_results(args.results, "\n".join(lines), records)


if __name__ == "__main__":
    main()
