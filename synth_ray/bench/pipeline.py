"""The pipeline bench: stages running together against stages one after another.

    synth-ray bench configs/preference_pools.yaml --workload pipeline --prompts 16 --repeats 2

The job (a method whose stages run together: on two pools, such as preference with a judge
pool, or sharing one, such as MetaMath's questions and answers) runs from `synth-ray run` in a
fresh process per run, once with `scheduler.stream_stages` on (the judge rates each unit as
it commits) and once off (the judge starts when the generator has finished), on the same
prompts (`input.limit`). Over
repeats the order alternates, so neither mode always runs first on a cold page cache. Each
run's whole wall time (start to exit: engine starts included, as a user waits for them) and
its generation time (first replica ready to last result) are reported, and the ratio of the
medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synth_ray.bench import machine
from synth_ray.errors import ConfigError, UserError

MODES = {"pools": True, "sequential": False}  # mode -> scheduler.stream_stages


class PipelineRunFailed(UserError):
    """A run of the bench failed; its log says why (exit status 1)."""

    exit_code = 1


def mode_of(cmd: list[str]) -> str:
    return "pools" if "scheduler.stream_stages=true" in cmd else "sequential"


def pools_of(job: Any) -> list[str]:
    """The pools besides `default` a job declares or its method names inline."""
    from synth_ray.methods import method_spec

    return sorted({*job.pools, *method_spec(job.method).pools(job)})


def check_pipeline_config(job: Any, config: Path) -> None:
    """A pipeline bench needs a job whose stages run together (on two pools, or sharing
    one: STaR, MetaMath, Evol-Instruct, preference, conversations); one line otherwise."""
    from synth_ray.methods import method_spec

    if not pools_of(job) and not method_spec(job.method).streams(job):
        raise ConfigError(
            f"--workload pipeline: {config} runs one stage, or stages that cannot run "
            "together; use a method whose stages stream (e.g. configs/preference_pools.yaml, "
            "configs/metamath.yaml)"
        )


def run_order(repeats: int) -> list[tuple[int, str]]:
    """(repeat, mode) in the order they run: sequential first, then alternating."""
    order = []
    for r in range(repeats):
        modes = ["sequential", "pools"] if r % 2 == 0 else ["pools", "sequential"]
        order += [(r, mode) for mode in modes]
    return order


def run_command(
    config: Path, out: Path, prompts: int, mode: str, overrides: list[str]
) -> list[str]:
    sets = [
        f"output.path={out}",
        f"input.limit={prompts}",
        f"scheduler.stream_stages={'true' if MODES[mode] else 'false'}",
        *overrides,
    ]
    cmd = [sys.executable, "-m", "synth_ray", "run", str(config), "--no-progress", "--overwrite"]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def measure(cmd: list[str], out: Path, log: Path) -> dict[str, Any]:
    """Run one job; its wall time, generation time and output from its stats and run log."""
    started = time.monotonic()
    with open(log, "w") as fh:
        code = subprocess.run(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        ).returncode
    wall = time.monotonic() - started
    if code != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        raise PipelineRunFailed(
            f"{mode_of(cmd)} run failed, exit {code}: "
            f"{lines[-1] if lines else 'no output'} (log {log})"
        )
    stats = json.loads((out / "stats.json").read_text())
    runs = [out / "_runs.jsonl", *sorted(out.glob("stages/**/_runs.jsonl"))]
    records = [
        json.loads(line) for path in runs if path.exists() for line in path.read_text().splitlines()
    ]
    starts = [r["started"] + r.get("startup_s", 0) for r in records if "started" in r]
    ends = [r["finished"] for r in records if "finished" in r]
    tokens = sum(r.get("output_tokens", 0) for r in records)
    return {
        "wall_s": round(wall, 2),
        "generation_s": round(max(ends) - min(starts), 2) if starts and ends else None,
        "output_tokens": tokens,
        "rows_in": stats.get("rows_in"),
        "rows_out": stats.get("rows_out"),
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per mode: the medians over its runs, tokens/s over the whole run, and the pools'
    speedup over the sequential runs (median wall time over median wall time)."""
    rows = []
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        if not mine:
            continue
        wall = statistics.median(r["wall_s"] for r in mine)
        gen = [r["generation_s"] for r in mine if r["generation_s"] is not None]
        tokens = statistics.median(r["output_tokens"] for r in mine)
        rows.append(
            {
                "mode": mode,
                "runs": len(mine),
                "wall_s": round(wall, 2),
                "generation_s": round(statistics.median(gen), 2) if gen else None,
                "output_tokens": tokens,
                "whole_tok_s": round(tokens / wall, 1) if wall else None,
            }
        )
    sequential = next((r for r in rows if r["mode"] == "sequential"), None)
    for row in rows:
        if sequential and row["wall_s"]:
            row["speedup"] = round(sequential["wall_s"] / row["wall_s"], 2)
    return rows


def table_lines(rows: list[dict[str, Any]]) -> list[list[str]]:
    head = ["mode", "runs", "wall s", "generation s", "output tokens", "tok/s (whole)", "speedup"]
    lines = [head]
    for r in rows:
        cells = [r["mode"], r["runs"], r["wall_s"], r["generation_s"], r["output_tokens"],
                 r["whole_tok_s"], r.get("speedup")]  # fmt: skip
        lines.append(["-" if c is None else str(c) for c in cells])
    return lines


def run_pipeline_bench(
    config: Path,
    overrides: list[str],
    prompts: int,
    repeats: int,
    results_dir: Path,
    label: str = "",
    work_dir: Path | None = None,
    say: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], Path]:
    """Run the pipeline bench; returns the per-mode rows and results.md (appended)."""
    from synth_ray.config import load_config

    if prompts < 1 or repeats < 1:
        raise ConfigError(f"--prompts {prompts} --repeats {repeats}: expected at least 1 each")
    job = load_config(config, overrides)
    check_pipeline_config(job, config)
    work = work_dir or Path(tempfile.mkdtemp(prefix="synth-ray-pipeline-"))
    runs = []
    for repeat, mode in run_order(repeats):
        out = work / f"{repeat}-{mode}"
        say(f"pipeline: {mode} (repeat {repeat + 1} of {repeats}, {prompts} prompts)")
        cmd = run_command(config, out, prompts, mode, overrides)
        runs.append({"mode": mode, "repeat": repeat, **measure(cmd, out, work / f"{out.name}.log")})
    rows = summarize(runs)
    m = machine.describe()
    stamp = time.strftime("%Y-%m-%d %H:%M")
    pools = ", ".join(f"{name} ({job.method})" for name in pools_of(job))
    where = f"pools default + {pools}" if pools else f"{job.method}'s stages sharing one pool"
    title = (
        f"{stamp} synth-ray bench pipeline{f' ({label})' if label else ''}: {prompts} prompts "
        f"of {config}, {where}"
    )
    context = (
        f"Machine: {machine.line(m)}. Each run `synth-ray run` in a fresh process (engine "
        f"starts included in wall s), {repeats} repeat(s), order alternating from "
        "sequential first; `pools`: scheduler.stream_stages true, `sequential`: false. "
        "Medians over repeats; speedup = sequential wall / this wall."
    )
    results_dir.mkdir(parents=True, exist_ok=True)
    header = {"date": stamp, "label": label, "machine": m, "config": str(config),
              "prompts": prompts, "repeats": repeats, "workload": "pipeline"}  # fmt: skip
    with open(results_dir / "results.jsonl", "a") as fh:
        for run in runs:
            fh.write(json.dumps({**header, **run}) + "\n")
    lines = table_lines(rows)
    md = results_dir / "results.md"
    with open(md, "a") as fh:
        fh.write(f"\n## {title}\n\n{context}\n\n")
        fh.write("| " + " | ".join(lines[0]) + " |\n|" + "---|" * len(lines[0]) + "\n")
        fh.writelines("| " + " | ".join(line) + " |\n" for line in lines[1:])
    return rows, md
