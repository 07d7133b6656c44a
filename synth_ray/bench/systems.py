"""Run one system over a spec in a fresh process and read back what it measured.

    python -c "from synth_ray.bench.systems import missing; print(missing('ray-data'))"

- `vllm`: raw `LLM.generate` (raw_vllm.py), the ceiling a user compares with;
- `ray-data`: Ray Data LLM with its defaults (ray_data_llm.py);
- `synth-ray`: `synth-ray run` of a `generate` job over the same rendered prompts
  (`generate.raw_prompt`, each row's own budget through `generate.max_tokens_column`), with the
  config's engine, resources and scheduler sections; its figures come from the run's own
  `_runs.jsonl` and `stats.json`, its first result is its first committed shard. Under a
  constraint its `generate` section carries it (bench/constraints.py), and a JSON text that
  does not validate (cut by max_tokens) is an error row, still counted as a request.
Each process's wall time is measured here, from spawn to exit, Ray and engine start included.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from synth_ray.bench import constraints
from synth_ray.bench.spec import RunSpec, SystemResult

SYSTEMS = ("synth-ray", "vllm", "ray-data")
_NEEDS = {
    "vllm": (("vllm",), "vLLM: pip install 'synth-ray[gpu]' (or '[cpu]')"),
    "ray-data": (("vllm", "ray.llm"), "Ray Data LLM: pip install 'ray[data,llm]'"),
    "synth-ray": (("vllm",), "vLLM: pip install 'synth-ray[gpu]' (or '[cpu]')"),
}


class SystemFailed(RuntimeError):
    pass


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(system: str) -> str | None:
    """What to install for `system`, or None when its packages are here."""
    modules, hint = _NEEDS[system]
    return None if all(_importable(m) for m in modules) else hint


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    with open(log, "w") as fh:
        code = subprocess.run(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        ).returncode
    wall = time.monotonic() - start
    if code != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        raise SystemFailed(f"exit {code}: {lines[-1] if lines else 'no output'} (log {log})")
    return wall


def _cpu_engine_env(spec: RunSpec) -> dict[str, str]:
    """A CPU engine's environment, set before the process imports torch (OpenMP reads its
    thread count once, at load), so raw vLLM computes on the threads synth-ray's replica
    does; nothing on a GPU machine."""
    import torch

    from synth_ray.engine.vllm_engine import cpu_engine_env

    if torch.cuda.is_available():
        return {}
    return cpu_engine_env(spec.cpu_kv_cache_gib, spec.cpu_threads)


def run_program(system: str, spec: RunSpec, work: Path) -> SystemResult:
    """raw vLLM or Ray Data LLM, one fresh process."""
    module = {"vllm": "synth_ray.bench.raw_vllm", "ray-data": "synth_ray.bench.ray_data_llm"}
    spec_path = spec.write(work / f"{system}.spec.json")
    result_path = work / f"{system}.result.json"
    wall = _run(
        [sys.executable, "-m", module[system], str(spec_path), str(result_path)],
        work / f"{system}.log",
        _cpu_engine_env(spec),
    )
    result = SystemResult.read(result_path)
    result.wall_s = wall
    return result


def synth_ray_job(job: dict[str, Any], spec: RunSpec, out: Path) -> dict[str, Any]:
    """The `generate` job that runs the spec's prompts with the config's engine sections,
    decoded under the spec's constraint, if any."""
    budgets = [b for _, b in spec.requests()]
    keep = ("engine", "resources", "scheduler", "ray")
    config = {key: job[key] for key in keep if key in job}
    config.update(
        method="generate",
        input={"path": spec.prompts_path, "text_column": "prompt"},
        output={
            "path": str(out),
            "rows_per_shard": job.get("output", {}).get("rows_per_shard", 10_000),
        },
        generate={
            "raw_prompt": True,
            "max_tokens_column": "max_tokens",
            **constraints.generate_section(spec.constraint),
        },
        sampling={
            **job.get("sampling", {}),
            "max_tokens": max(budgets),
            "ignore_eos": spec.ignore_eos,
        },
    )
    return config


def run_synth_ray(job: dict[str, Any], spec: RunSpec, work: Path) -> SystemResult:
    out = work / "synth-ray-out"
    config = work / "synth-ray.yaml"
    config.write_text(yaml.safe_dump(synth_ray_job(job, spec, out), sort_keys=False))
    started = time.time()
    wall = _run(
        [sys.executable, "-m", "synth_ray", "run", str(config), "--no-progress", "--overwrite"],
        work / "synth-ray.log",
    )
    import pyarrow.parquet as pq

    from synth_ray.io.output_store import OutputStore

    run = OutputStore(out).runs()[-1]
    stats = json.loads((out / "stats.json").read_text())
    shards = [p.stat().st_mtime for p in (out / "data").glob("*.parquet")]
    first = (min(shards) - started) if shards else wall
    # `started` is when the job began (after Ray and the config); `startup_s` runs from the
    # scheduler's start to the first engine ready
    ready = run["started"] - started + run["startup_s"]
    return SystemResult(
        output_tokens=stats["output_tokens"],
        requests=stats["rows_out"] + stats["rows_errored"],
        engine_ready_s=ready,
        first_result_s=first,
        done_s=ready + run["generation_wall_s"],
        dtype=run.get("engine_dtype"),
        wall_s=wall,
        notes=f"{stats['rows_errored']} error rows" if stats["rows_errored"] else "",
        conforming=(
            sum(
                constraints.conforms(spec.structured_fields(), text)
                for text in pq.read_table(out / "data", columns=["text"])["text"].to_pylist()
            )
            if spec.constraint != "none"
            else None
        ),
    )


def run_system(system: str, job: dict[str, Any], spec: RunSpec, work: Path) -> SystemResult:
    work.mkdir(parents=True, exist_ok=True)
    if system == "synth-ray":
        return run_synth_ray(job, spec, work)
    return run_program(system, spec, work)
