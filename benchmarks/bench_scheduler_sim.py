"""The scheduling policy at 1,000 and 4,096 replicas on a virtual clock, long-tailed lengths.

    python benchmarks/bench_scheduler_sim.py [--replicas 1000,4096] [--waves 1000]

Drives the real Scheduler and the real slicing (runtime/scheduler.py, runtime/slices.py) with a
simulated cluster: each replica is an engine with `--slots` sequences decoding at once, serving
requests first come first served; a request holds a slot for (output tokens x time per token),
output tokens drawn from a log-normal (median 200, sigma 1.0, capped at max_tokens 4096), so a
few requests are 20x the median. The clock is virtual: a 1,000-replica job of hours runs in
seconds. Sizes are scaled down together (16 slots and 128-row units instead of 256 and 2,048: the
same 8 waves of the engine per unit), so the figures say what the policy does at full size.
Figures per policy: fraction of replica slot-time busy between the first replica ready and the
job's end, and the tail (time from the first replica left with no work to the job's end) as a
fraction of the job. `whole units` sends each unit as one slice; `sliced tail` is the default
(guided self-scheduling, runtime/slices.py). Results are appended to results.md/jsonl.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from synth_ray.plan import WorkUnit  # noqa: E402
from synth_ray.runtime.backend import BatchDone, Event, ReplicaReady  # noqa: E402
from synth_ray.runtime.scheduler import Scheduler, SchedulerSettings  # noqa: E402
from synth_ray.runtime.slices import SliceDone, cut_slices  # noqa: E402

TIME_PER_TOKEN_S = 0.02
MAX_TOKENS = 4096


class SimCluster:
    """The Backend protocol over simulated engines and a virtual clock."""

    def __init__(self, slots: int, seed: int) -> None:
        self.slots = slots
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.now = 0.0
        self.events: list[tuple[float, int, Event]] = []
        self.seq = 0
        self.free: dict[int, list[float]] = {}  # per replica: when each slot frees up
        self.last_done: dict[int, float] = {}
        self.busy_s = 0.0
        self.first_ready: float | None = None
        self.next_id = 0

    def clock(self) -> float:
        return self.now

    def _at(self, when: float, event: Event) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, event))

    def start_replica(self) -> int:
        rid = self.next_id
        self.next_id += 1
        self.free[rid] = [0.0] * self.slots
        self._at(self.now + self.rng.uniform(0, 5), ReplicaReady(rid))
        return rid

    def add_stage(self, spec: object) -> None:
        pass

    def drop_stage(self, key: str) -> None:
        pass

    def _durations(self, n: int) -> list[float]:
        tokens = self.np_rng.lognormal(math.log(200), 1.0, n).astype(np.int64)
        return (np.clip(tokens, 1, MAX_TOKENS) * TIME_PER_TOKEN_S).tolist()

    def submit(self, replica_id: int, batch_id: int, payloads: list) -> None:
        slots = self.free[replica_id]
        finished = now = self.now
        results = []
        for task in payloads:
            durations = self._durations(task.stop - task.start)  # one request per row
            self.busy_s += sum(durations)
            for duration in durations:  # first come first served on the earliest free slot
                end = max(now, slots[0]) + duration
                heapq.heapreplace(slots, end)
                finished = max(finished, end)
            results.append(SliceDone(task.key, task.unit_index, task.start, "", None, {}))
        self._at(finished, BatchDone(replica_id, batch_id, results))

    def poll(self, timeout: float) -> list[Event]:
        if not self.events:
            return []
        self.now = self.events[0][0]
        out = []
        while self.events and self.events[0][0] <= self.now:
            _, _, event = heapq.heappop(self.events)
            if isinstance(event, ReplicaReady) and self.first_ready is None:
                self.first_ready = self.now
            if isinstance(event, BatchDone):
                self.last_done[event.replica_id] = self.now
            out.append(event)
        return out

    def stop_replica(self, replica_id: int) -> None:
        pass

    def describe_pending(self) -> str:
        return ""

    def shutdown(self) -> None:
        pass


def simulate(replicas: int, waves: int, slots: int, unit_rows: int, sliced: bool) -> dict:
    rows_per_replica = waves * slots
    n_units = math.ceil(replicas * rows_per_replica / unit_rows)
    units = [
        WorkUnit(i, f"u{i}", i * unit_rows, (i + 1) * unit_rows, unit_rows) for i in range(n_units)
    ]
    min_slice = max(1, slots // 8) if sliced else 10**9
    work = cut_slices(units, "sim", n_units * unit_rows, replicas, min_slice)
    cluster = SimCluster(slots, seed=replicas)
    done = {"slices": 0}

    def sink(item: object, result: object) -> None:
        done["slices"] += 1

    settings = SchedulerSettings(
        replicas=replicas, batch_size=8, max_in_flight=slots, poll_interval_s=0.0
    )
    started = time.process_time()
    scheduler = Scheduler(cluster, work, sink, settings, clock=cluster.clock)
    scheduler.run()
    cpu = time.process_time() - started
    end = cluster.now
    span = end - (cluster.first_ready or 0.0)
    first_idle = min(cluster.last_done.values())
    return {
        "replicas": replicas,
        "policy": "sliced tail" if sliced else "whole units",
        "units": n_units,
        "slices": done["slices"],
        "requests": n_units * unit_rows,
        "busy": round(cluster.busy_s / (replicas * slots * span), 4),
        "tail_fraction": round((end - first_idle) / span, 4),
        "job_s": round(span, 1),
        "scheduler_cpu_s": round(cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1000,4096")
    parser.add_argument(
        "--waves", type=int, default=1000, help="engine batches of work per replica"
    )
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--unit-rows", type=int, default=128)
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    rows = []
    for replicas in [int(r) for r in args.replicas.split(",")]:
        for sliced in (False, True):
            rows.append(simulate(replicas, args.waves, args.slots, args.unit_rows, sliced))
            print(json.dumps(rows[-1]), flush=True)
    from common import append_results, machine_line
    from common import machine as machine_info

    m = machine_info()
    stamp = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"\n## {stamp} scheduler simulation (virtual clock): {args.waves} engine waves of work "
        f"per replica, {args.slots} slots, {args.unit_rows}-row units, log-normal lengths "
        f"(median 200, sigma 1, cap {MAX_TOKENS})\n",
        f"Machine (for the scheduler CPU column): {machine_line(m)}.\n",
        "| replicas | policy | units | slices | requests | busy | tail / job | job (virtual s) "
        "| scheduler CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['replicas']} | {r['policy']} | {r['units']} | {r['slices']} | {r['requests']} "
            f"| {r['busy']:.1%} | {r['tail_fraction']:.1%} | {r['job_s']} | {r['scheduler_cpu_s']} |"
        )
    records = [{"bench": "scheduler_sim", "time": stamp, **r} for r in rows]
    append_results(args.results, "\n".join(lines), records)


if __name__ == "__main__":
    main()
