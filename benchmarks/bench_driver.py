"""Driver cost per request: the whole job path with an engine stand-in that answers instantly.

    python benchmarks/bench_driver.py [--small 2000] [--large 40000] [--replicas 2]

Runs `rephrase` (WRAP, one style, 250-word documents) and `generate` jobs through `run_job` on a
real local Ray, with real generator actors whose engine is replaced by a stand-in that answers
every request at once (text of max_tokens words). Everything else is the production path:
planning, slices, per-row work in the actors, shards, commits. The stand-in lives only here: no
config can select it. Figures:
- driver CPU ms per request: the driver process's own CPU time (every thread of it, Ray's
  included), marginal between a small and a large job, so start-up costs cancel out;
- requests/s of the large job end to end (on a small machine the actors' per-row work, not
  the driver, bounds this).
Results are appended to benchmarks/results.md and results.jsonl with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

from common import append_results, machine, machine_line  # noqa: E402

WORDS = (
    "river stone market winter garden signal copper lantern harbor meadow village engine "
    "letter window forest bridge candle theory number planet kitchen music summer voice"
).split()


class InstantEngine:
    """Answers every request at once with max_tokens words: no model, no waiting."""

    def __init__(self) -> None:
        from synth_ray.engine.dtype import DtypeChoice

        self.dtype_choice = DtypeChoice("none", "engine stand-in (benchmarks/bench_driver.py)")
        self.answered = 0
        self.max_num_seqs = None  # the scheduler keeps its default in flight (256), or the config's

    def progress(self) -> int:
        return self.answered

    def output_tokens(self) -> int:
        """The generator actor's progress probe reads it (runtime/generator_actor.py)."""
        return self.answered

    async def generate_many(self, requests: list[Any]) -> list[Any]:
        from synth_ray.engine.requests import EngineResult

        self.answered += len(requests)
        return [
            EngineResult(
                r.request_id,
                "word " * r.max_tokens,
                len(r.prompt_token_ids),
                r.max_tokens,
                "length",
            )
            for r in requests
        ]


def instant_actor_class() -> type:
    from synth_ray.runtime.generator_actor import GeneratorActor
    from synth_ray.runtime.priority import run_at_normal_priority
    from synth_ray.runtime.slice_worker import SliceWorker

    class InstantGeneratorActor(GeneratorActor):
        def __init__(self, settings: Any) -> None:  # noqa: ARG002 (no engine to build)
            self.niceness = run_at_normal_priority()
            self.engine = InstantEngine()
            self.slices = SliceWorker(self.engine.generate_many)

    return InstantGeneratorActor


def write_docs(path: Path, n: int, words: int = 250) -> None:
    rng = random.Random(0)
    with open(path, "w") as fh:
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(words))
            fh.write(json.dumps({"id": f"d{i}", "text": text, "prompt": text[:200]}) + "\n")


def stand_in_config(data: dict[str, Any], replicas: int) -> Any:
    """A job config from `data` (method, input, output, sampling, the method's section) on
    `replicas` stand-in replicas: no GPU, a CPU each, and requests enough in flight that the
    driver, not the engine, is what is measured."""
    from synth_ray.config import validate_config

    return validate_config(
        {
            **data,
            "engine": {"max_model_len": 2048},
            "resources": {"replicas": replicas, "cpus_per_replica": 1, "gpus_per_replica": 0},
            "scheduler": {"max_in_flight_per_replica": 4096},
        }
    )


def job(method: str, docs: Path, out: Path, n: int, replicas: int) -> Any:
    data: dict[str, Any] = {
        "method": method,
        "input": {"path": str(docs), "id_column": "id", "limit": n},
        "output": {"path": str(out), "rows_per_shard": 1000},
        "sampling": {"max_tokens": 64},
    }
    if method == "rephrase":
        data["rephrase"] = {"styles": ["medium"], "max_chunk_tokens": 512}
    else:
        data["input"]["text_column"] = "prompt"
    return stand_in_config(data, replicas)


def measure(method: str, docs: Path, work: Path, n: int, backend: Any, replicas: int) -> dict:
    from synth_ray.runtime.job import run_job

    # a fresh output each time: a rerun on the same one would load its cached plan
    # (runtime/plan_cache.py) and leave planning, a per-row cost of the driver, unmeasured
    config = job(
        method, docs, Path(tempfile.mkdtemp(dir=work, prefix=f"{method}-{n}-")), n, replicas
    )
    cpu, wall = time.process_time(), time.monotonic()
    summary = run_job(config, overwrite=True, show_progress=False, backend=backend)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    requests = summary.stats["rows_in"] - summary.stats["rows_errored"]
    return {"requests": requests, "driver_cpu_s": cpu, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=40000)
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per size; the least CPU counts"
    )
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--methods", default="rephrase,generate")
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    args = parser.parse_args()

    import ray

    from synth_ray.runtime.cluster import ray_backend_for

    work = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    docs = work / "docs.jsonl"
    write_docs(docs, args.large)
    ray.init(num_cpus=max(2, args.replicas), include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for method in args.methods.split(","):
            config = job(method, docs, work / "probe", args.small, args.replicas)
            backend = ray_backend_for(config, keep_alive=True, actor_class=instant_actor_class())
            measure(method, docs, work, 200, backend, args.replicas)  # warm: actors, imports
            small = min(
                (
                    measure(method, docs, work, args.small, backend, args.replicas)
                    for _ in range(args.repeats)
                ),
                key=lambda r: r["driver_cpu_s"],
            )
            large = min(
                (
                    measure(method, docs, work, args.large, backend, args.replicas)
                    for _ in range(args.repeats)
                ),
                key=lambda r: r["driver_cpu_s"],
            )
            backend.close()
            extra = large["requests"] - small["requests"]
            ms = 1000 * (large["driver_cpu_s"] - small["driver_cpu_s"]) / extra
            rows.append(
                {
                    "method": method,
                    "requests_small": small["requests"],
                    "requests_large": large["requests"],
                    "driver_cpu_ms_per_request": round(ms, 4),
                    "driver_requests_per_cpu_s": round(1000 / ms) if ms > 0 else None,
                    "requests_per_s": round(large["requests"] / large["wall_s"], 1),
                    "driver_cpu_s_small": round(small["driver_cpu_s"], 2),
                    "driver_cpu_s_large": round(large["driver_cpu_s"], 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        ray.shutdown()
    m = machine()
    stamp = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"\n## {stamp} driver cost per request (engine stand-in answering instantly), "
        f"{args.replicas} replicas\n",
        f"Machine: {machine_line(m)}. Marginal driver CPU between a "
        f"{args.small}- and a {args.large}-document job; requests/s of the large job.\n",
        "| method | requests (small / large) | driver CPU s (small / large) | driver CPU "
        "ms/request | requests per driver CPU-second | requests/s end to end |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['requests_small']} / {r['requests_large']} | "
            f"{r['driver_cpu_s_small']} / {r['driver_cpu_s_large']} | "
            f"{r['driver_cpu_ms_per_request']} | {r['driver_requests_per_cpu_s']} | "
            f"{r['requests_per_s']} |"
        )
    records = [{"bench": "driver", "time": stamp, "machine": m, **r} for r in rows]
    append_results(args.results, "\n".join(lines), records)


if __name__ == "__main__":
    main()
