"""What the developer benchmarks share: the machine a figure came from, appending results, and
running a synth-ray config in a fresh process. Imported by the scripts beside it, e.g.

    python benchmarks/bench_driver.py

The machine description is synth-ray bench's own (synth_ray/bench/machine.py), so every line of
benchmarks/results.md names its machine the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from synth_ray.bench.machine import describe as machine
from synth_ray.bench.machine import line as machine_line

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

__all__ = ["HERE", "REPO", "append_results", "machine", "machine_line", "run_synth_ray_config"]


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
