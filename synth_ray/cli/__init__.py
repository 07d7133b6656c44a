"""The `synth-ray` command (one module per group of commands: local.py, cluster.py,
benchmark.py, annotations.py; common.py holds the app): run or submit a job, follow it,
report status, prepare the model, co-annotate.

    synth-ray run configs/quickstart.yaml --set input.limit=20
    synth-ray status out/quickstart
    synth-ray inspect out/quickstart --where "style = 'qa'" --n 3
    synth-ray report out/quickstart      (report/index.html; run writes it when a job completes)
    synth-ray submit configs/generate.yaml --address http://HEAD:8265   (then logs/status/stop)
    synth-ray prepare-model
    synth-ray bench configs/generate.yaml --systems synth-ray,vllm,ray-data --lengths skewed
    synth-ray annotations export out/label --to out/label-tasks   (then `annotations merge`)

A `UserError` (bad config, missing input, output conflict, missing resources) prints one line
`error: ...` and exits 2 before any work; a job that fails mid-way (`JobFailed`) prints the
reason and exits 1, keeping every unit it had committed; a run stopped by SIGTERM/SIGINT
commits what finishes within `--grace` and exits 75 (runtime/stopping.py).
"""

from __future__ import annotations

import importlib
import sys

from synth_ray.cli.common import app
from synth_ray.cli.local import _print_samples, _write_card

__all__ = ["_print_samples", "_write_card", "app", "main"]

for _group in (
    "local",
    "cluster",
    "benchmark",
    "annotations",
):  # each adds its commands, in `--help`'s order
    importlib.import_module(f"synth_ray.cli.{_group}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
