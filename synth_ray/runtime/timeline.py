"""A running stage, sampled every few seconds: `_progress.json` (the latest sample, with ETA and
failures; `synth-ray status` reads it) and `_timeline/` (every sample of each run of each
stage, one JSONL per run: the report's throughput and replica-busy plots).

    python -c "import json; print(json.load(open('out/quickstart/_progress.json')))"

A sample counts replicas starting, busy (holding requests) and idle, the requests they hold,
and the tokens their engines generated this run (from their answers to the stall probe, every
few seconds while they hold work; a replica's first answer in a stage is its baseline, so the
tokens of its first probe interval are not counted); its rows and `output_tokens` count
committed units. A
sample's size does not grow with the number of replicas (per-replica figures go to Ray's
metrics, runtime/metrics.py). Both files are
rewritten whole (local or object store alike) by a background thread, so a slow filesystem or a
throttling object store never holds up the scheduler's loop; a run keeps at most MAX_SAMPLES
samples, halving them evenly when full, so a week-long run's file stays small. Writing them
never fails a job: an output that cannot take them fails at the next commit anyway, with the
reason.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from synth_ray.io.filesystem import Location
from synth_ray.io.output_store import PROGRESS_FILE, TIMELINE_DIR
from synth_ray.runtime.metrics import JobMetrics
from synth_ray.runtime.progress import JobProgress
from synth_ray.runtime.scheduler import Scheduler

MAX_SAMPLES = 2000


def engine_tokens(mark: Any) -> int | None:
    """Tokens a replica's engine generated, from its progress probe's answer, if it says."""
    if isinstance(mark, tuple | list) and mark and isinstance(mark[0], int):
        return mark[0]
    return None


class LatestWriter:
    """Writes files on a thread of its own; a newer version of a file replaces one not yet
    written. `flush` waits until everything given so far is written."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.pending: dict[str, bytes] = {}
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.closing = False

    def put(self, files: dict[str, bytes]) -> None:
        with self.cond:
            self.pending.update(files)
            if self.thread is None:
                self.closing = False
                self.thread = threading.Thread(target=self._run, name="timeline", daemon=True)
                self.thread.start()
            self.cond.notify()

    def flush(self, timeout_s: float = 60.0) -> None:
        with self.cond:
            thread, self.closing = self.thread, True
            self.cond.notify()
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.closing:
                    self.cond.wait()
                if not self.pending:
                    self.thread = None
                    return
                files, self.pending = self.pending, {}
            for name, data in files.items():
                try:
                    self.location.write_bytes_atomic(name, data)
                except OSError:
                    pass  # the next commit to this output reports what is wrong with it


class Timeline:
    def __init__(
        self,
        location: Location,
        stage: str,
        progress: JobProgress,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        metrics: JobMetrics | None = None,
    ) -> None:
        self.location = location
        self.writer = LatestWriter(location)
        self.metrics = metrics
        self.stage = stage
        self.progress = progress
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self.samples: list[dict[str, Any]] = []
        self.name = f"{TIMELINE_DIR}/{int(self.started * 1000)}-{stage or 'main'}.jsonl"
        self._last = float("-inf")
        self.engine_tokens = 0  # generated this run, summed over replicas' probe answers
        self._seen: dict[int, int] = {}

    def tick(self, scheduler: Scheduler) -> None:
        """Sample when `every_s` passed since the last sample (the scheduler calls this on
        every loop)."""
        if self.clock() - self._last >= self.every_s:
            self.record(scheduler, "running")

    def record(self, scheduler: Scheduler, state: str) -> None:
        now = self.clock()
        self._last = now
        p = self.progress
        per_replica: dict[str, dict[str, float]] = {}
        for rid, r in scheduler.replicas.items():
            tokens = engine_tokens(r.mark)
            # a replica's first answer is its baseline: a warm actor kept from an earlier
            # stage counts its whole lifetime
            new = max(0, tokens - self._seen.get(rid, tokens)) if tokens is not None else 0
            if tokens is not None:
                self._seen[rid] = tokens
            self.engine_tokens += new
            per_replica[str(rid)] = {"new_tokens": new, "in_flight": r.outstanding}
        replicas = scheduler.replicas.values()
        sample = {
            "t": round(now, 2),
            "units_done": p.units_done,
            "units_pending": p.units_total - p.units_done,
            "rows_in": p.stats.rows_in,
            "rows_out": p.stats.rows_out,
            "rows_errored": p.stats.rows_errored,
            "output_tokens": p.stats.output_tokens,
            "engine_tokens": self.engine_tokens,
            "replicas_starting": sum(not r.ready for r in replicas),
            "replicas_busy": sum(r.ready and bool(r.in_flight) for r in replicas),
            "replicas_idle": sum(r.ready and not r.in_flight for r in replicas),
            "requests_in_flight": sum(r.outstanding for r in replicas),
            "replica_failures": len(scheduler.failures),
            "requests_resent": scheduler.requests_resent,
        }
        self.samples.append(sample)
        if len(self.samples) > MAX_SAMPLES:
            self.samples = self.samples[:-1:2] + self.samples[-1:]
        p.failures = len(scheduler.failures)
        if self.metrics is not None:
            self.metrics.update(sample, per_replica)
        self._write(sample, state)

    def _write(self, sample: dict[str, Any], state: str) -> None:
        p = self.progress
        elapsed = max(sample["t"] - self.started, 1e-9)
        summary = {
            "state": state,
            "stage": self.stage,
            "run_started": round(self.started, 2),
            "updated": sample["t"],
            "units_done": p.units_done,
            "units_total": p.units_total,
            "rows_per_s": round(p.stats.rows_out / elapsed, 2),
            "output_tokens_per_s": round(p.stats.output_tokens / elapsed, 1),
            "acceptance": round(p.stats.rows_out / p.stats.rows_in, 4) if p.stats.rows_in else None,
            "eta_s": p.eta_s(),
            **{k: sample[k] for k in ("rows_in", "rows_out", "rows_errored", "output_tokens")},
            **{k: sample[k] for k in ("engine_tokens", "requests_in_flight")},
            **{k: sample[k] for k in ("replica_failures", "requests_resent")},
            "timeline": self.name,
        }
        body = "".join(json.dumps(s) + "\n" for s in self.samples).encode()
        self.writer.put({self.name: body, PROGRESS_FILE: json.dumps(summary, indent=1).encode()})
        if state != "running":
            self.writer.flush()


def set_state(location: Location, state: str) -> None:
    """Mark the job's `_progress.json` with how it ended ("done"); no file (or one that
    cannot be read or written), nothing to mark: it never fails a finished job."""
    try:
        raw = location.read_bytes(PROGRESS_FILE)
        if raw is None:
            return
        progress = json.loads(raw)
        progress.update(state=state, updated=round(time.time(), 2), eta_s=None)
        location.write_bytes_atomic(PROGRESS_FILE, json.dumps(progress, indent=1).encode())
    except (OSError, ValueError):
        pass
