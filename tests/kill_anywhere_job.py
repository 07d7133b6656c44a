"""A real `run_job` process on a simulated engine, for tests that SIGKILL it anywhere.

    python tests/kill_anywhere_job.py CONFIG.yaml [SECONDS_PER_BATCH]
    python tests/kill_anywhere_job.py CONFIG.yaml --ray SECONDS_BEFORE_EACH_COMMIT

The simulated engine is not selectable from a user's config; this script is the test-only way
to run the whole job path (planning, slicing, shard writes, commits, stats) in a process of
its own, slowed so that kills land in every phase. Exits 0 when the job completed.
- Default: the fake backend (its replicas write their shards in this process), each poll
  slowed by SECONDS_PER_BATCH.
- `--ray`: a real local Ray with real generator actors (their slice workers write the shards
  in their own processes) whose engine answers at once (benchmarks/bench_driver.py's
  stand-in); the driver waits SECONDS_BEFORE_EACH_COMMIT before each commit and before each
  stats write, so a kill can land between a replica's shard write and the driver's commit,
  and after the last commit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_backend import FakeBackend  # noqa: E402

from synth_ray.config import load_config  # noqa: E402
from synth_ray.runtime.job import run_job  # noqa: E402


class SlowFakeBackend(FakeBackend):
    """Each poll takes `seconds` of wall time, so a run lasts long enough to be killed in it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(latency_polls=1)
        self.seconds = seconds

    def poll(self, timeout: float) -> list:
        time.sleep(self.seconds)
        return super().poll(timeout)


def run_on_ray(config_path: str, commit_delay: float) -> None:
    import os

    import ray

    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, benchmarks)
    # the actor class lives in bench_driver: Ray's workers (started by ray.init below, with
    # this environment) import it from there
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (benchmarks, os.environ.get("PYTHONPATH")) if p
    )
    from bench_driver import instant_actor_class

    from synth_ray.io.output_store import OutputStore
    from synth_ray.runtime.cluster import ray_backend_for

    def slowed(real):
        def call(*args, **kwargs):
            time.sleep(commit_delay)
            return real(*args, **kwargs)

        return call

    OutputStore.commit = slowed(OutputStore.commit)  # type: ignore[method-assign]
    OutputStore.write_stats = slowed(OutputStore.write_stats)  # type: ignore[method-assign]
    config = load_config(config_path)
    ray.init(num_cpus=config.resources.replicas + 1, include_dashboard=False, log_to_driver=False)
    backend = ray_backend_for(config, actor_class=instant_actor_class())
    run_job(config, show_progress=False, backend=backend)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[2] == "--ray":
        run_on_ray(sys.argv[1], float(sys.argv[3]))
    else:
        seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.01
        run_job(load_config(sys.argv[1]), show_progress=False, backend=SlowFakeBackend(seconds))
