"""A real `run_job` process on the simulated engine, for tests that SIGKILL it anywhere.

    python tests/kill_anywhere_job.py CONFIG.yaml [SECONDS_PER_BATCH]

The simulated engine is not selectable from a user's config; this script is the test-only way
to run the whole job path (planning, slicing, shard writes, commits, stats) in a process of
its own, slowed so that kills land in every phase. Exits 0 when the job completed.
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


if __name__ == "__main__":
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.01
    run_job(load_config(sys.argv[1]), show_progress=False, backend=SlowFakeBackend(seconds))
