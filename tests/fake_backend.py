"""A simulated generator backend for scheduler tests and fault injection (never for end-to-end).

Batches finish after a configurable number of polls, out of order; replicas can be made to fail
at start, die after N batches, die whenever a given request id is in a batch (a poison row), hang
(stop answering while alive, as a stuck engine does) after N batches, or never finish starting.
With a `VirtualClock`, each poll advances time by its timeout, so stall timeouts of minutes
run in milliseconds.
Completions are a deterministic function of the prompt, so runs are comparable. Slices run
through the real SliceWorker (reading, rendering, parsing, writing shards) around this engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import time
from dataclasses import dataclass, field

from synth_ray.engine.requests import EngineRequest, EngineResult
from synth_ray.runtime.backend import (
    BatchDone,
    Event,
    ReplicaFailed,
    ReplicaProgress,
    ReplicaReady,
)
from synth_ray.runtime.slice_worker import SliceWorker
from synth_ray.runtime.slices import FinalizeTask, SliceTask, StageSpec


class _Poisoned(Exception):
    pass


def fake_completion(request: EngineRequest) -> EngineResult:
    n = min(request.max_tokens, 5)
    return EngineResult(
        request.request_id,
        f"completion of {len(request.prompt_token_ids)} tokens " + "x" * n,
        len(request.prompt_token_ids),
        n,
        "length",
    )


class VirtualClock:
    """Time that moves only when a fake backend polls (or a test calls `advance`)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def units_sent(backend: FakeBackend) -> set[tuple[str, int]]:
    """(stage, unit index) of every slice the backend was sent (from the slice keys)."""
    return {
        (key.split(":", 1)[0], int(key.split("#")[1].split(":")[0]))
        for _, _, keys in backend.submitted
        for key in keys
    }


def overlapped(backend: FakeBackend, earlier: str, later: str) -> bool:
    """Whether a slice of stage `later` was sent before the last slice of stage `earlier`:
    the stages streamed instead of running one after the other (from the slice keys)."""
    order = [key.split(":", 1)[0] for _, _, keys in backend.submitted for key in keys]
    return order.index(later) < len(order) - 1 - order[::-1].index(earlier)


@dataclass
class FakeBackend:
    start_failure: str | None = None  # every replica fails to start with this reason
    never_ready: bool = False  # replicas stay pending forever
    die_after_batches: dict[int, int] = field(default_factory=dict)  # replica -> batches served
    poison_request: str | None = None  # a batch holding it kills its replica
    hang_after_batches: dict[int, int] = field(default_factory=dict)  # then alive but silent
    hang_request: str | None = None  # a batch holding it hangs its replica for good
    never_ready_ids: set[int] = field(default_factory=set)  # these replicas never finish starting
    clock: VirtualClock | None = None  # advanced by each poll's timeout
    latency_polls: int = 2
    seed: int = 0
    responder: object = None  # EngineRequest -> EngineResult, instead of fake_completion
    broken_storage: set[int] = field(default_factory=set)  # their shard writes fail with EIO
    submitted: list[tuple[int, int, list[str]]] = field(default_factory=list)
    max_outstanding_seen: dict[int, int] = field(default_factory=dict)
    # per submission: (replica, batches it had completed so far, batches still in flight)
    submit_log: list[tuple[int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.next_id = 0
        self.alive: set[int] = set()
        self.pending_events: list[Event] = []
        self.in_flight: dict[int, list[tuple[int, int, list[EngineRequest]]]] = {}
        self.served: dict[int, int] = {}
        self.started: list[int] = []
        self.worker = SliceWorker(self._generate_many)
        self.specs: dict[str, StageSpec] = {}  # every stage added (a replica's ref, always there)
        self.dropped: list[str] = []
        self.generated: list[str] = []  # request ids in the order the engine got them
        self.progress: dict[int, int] = {}  # per replica: grows while it decodes anything
        self.probes = 0
        self.stopped: list[int] = []
        # batches a stopped replica held: `finish_late` runs them, as a replica declared dead
        # that was only cut off (a partition) would still finish and write
        self.held_when_stopped: list[list] = []

    async def _generate_many(self, requests: list[EngineRequest]) -> list[EngineResult]:
        if self.poison_request in {r.request_id for r in requests}:
            raise _Poisoned()
        self.generated.extend(r.request_id for r in requests)
        respond = self.responder or fake_completion
        return [respond(r) for r in requests]

    def add_stage(self, spec: StageSpec) -> None:
        self.specs[spec.key] = spec
        self.worker.add_stage(spec)

    def drop_stage(self, key: str) -> None:
        self.dropped.append(key)

    def _run(self, payloads: list, replica_id: int = 0) -> list:
        if payloads and isinstance(payloads[0], SliceTask | FinalizeTask):
            held = {}  # fetched again when evicted, and held for the batch, as a replica does
            for key in {p.stage_key for p in payloads}:
                held[key] = self.worker.stage(key)
                if held[key] is None:
                    held[key] = self.specs[key]
                    self.worker.add_stage(self.specs[key])
            with self._storage_of(replica_id):
                return [asyncio.run(self.worker.run(t, held[t.stage_key])) for t in payloads]
        return asyncio.run(self._generate_many(payloads))

    @contextlib.contextmanager
    def _storage_of(self, replica_id: int):
        """While a replica in `broken_storage` runs, every Parquet write fails as a dead disk's."""
        if replica_id not in self.broken_storage:
            yield
            return
        import synth_ray.io.shards as shards

        real = shards.pq.write_table

        def broken(table, where, *args, **kwargs):
            raise OSError(errno.EIO, "Input/output error", str(getattr(where, "name", where)))

        shards.pq.write_table = broken
        try:
            yield
        finally:
            shards.pq.write_table = real

    def start_replica(self) -> int:
        rid = self.next_id
        self.next_id += 1
        self.started.append(rid)
        if self.start_failure:
            self.pending_events.append(ReplicaFailed(rid, self.start_failure))
        elif not self.never_ready and rid not in self.never_ready_ids:
            self.alive.add(rid)
            self.in_flight[rid] = []
            self.served[rid] = 0
            self.pending_events.append(ReplicaReady(rid))
        return rid

    def submit(self, replica_id: int, batch_id: int, requests: list[EngineRequest]) -> None:
        assert replica_id in self.alive, "scheduler sent work to a replica that is not ready"
        self.submitted.append((replica_id, batch_id, [r.key for r in requests]))
        served = self.served.get(replica_id, 0)
        self.submit_log.append((replica_id, served, len(self.in_flight[replica_id])))
        polls = self.latency_polls + self.rng.randint(0, 2)
        self.in_flight[replica_id].append((polls, batch_id, requests))
        outstanding = sum(len(b[2]) for b in self.in_flight[replica_id])
        seen = self.max_outstanding_seen.get(replica_id, 0)
        self.max_outstanding_seen[replica_id] = max(seen, outstanding)

    def _kill(self, replica_id: int, reason: str) -> None:
        self.alive.discard(replica_id)
        self.in_flight.pop(replica_id, None)
        self.pending_events.append(ReplicaFailed(replica_id, reason))

    def _hung(self, replica_id: int) -> bool:
        limit = self.hang_after_batches.get(replica_id)
        if limit is not None and self.served.get(replica_id, 0) >= limit:
            return True
        return self.hang_request is not None and any(
            self.hang_request in keys for keys in self._keys_in_flight(replica_id)
        )

    def _keys_in_flight(self, replica_id: int) -> list[list[str]]:
        return [
            [getattr(p, "request_id", None) or p.key for p in batch]
            for _, _, batch in self.in_flight.get(replica_id, [])
        ]

    def probe(self, replica_id: int) -> None:
        self.probes += 1
        if replica_id in self.alive:
            mark = self.progress.get(replica_id, 0)
            self.pending_events.append(ReplicaProgress(replica_id, mark))

    def poll(self, timeout: float) -> list[Event]:
        if self.clock is not None:
            self.clock.advance(timeout)
        elif not self.pending_events and not any(self.in_flight.values()):
            time.sleep(0.002)  # idle in real time: let a stage on another thread run
        events, self.pending_events = self.pending_events, []
        for rid in list(self.alive):
            if self._hung(rid):
                continue  # alive, holding its batches, answering nothing new
            if self.in_flight[rid]:
                self.progress[rid] = self.progress.get(rid, 0) + 1  # tokens being decoded
            remaining = []
            for polls, batch_id, requests in self.in_flight[rid]:
                if polls > 0:
                    remaining.append((polls - 1, batch_id, requests))
                    continue
                limit = self.die_after_batches.get(rid)
                if limit is not None and self.served[rid] >= limit:
                    self._kill(rid, f"replica {rid} lost its node")
                    break
                try:
                    results = self._run(requests, rid)
                except _Poisoned:
                    self._kill(rid, "engine crashed on a poison request")
                    break
                self.served[rid] += 1
                self.rng.shuffle(results)  # results come back in any order
                events.append(BatchDone(rid, batch_id, results))
            else:
                self.in_flight[rid] = remaining
        events.extend(self.pending_events)
        self.pending_events = []
        return events

    def stop_replica(self, replica_id: int) -> None:
        self.stopped.append(replica_id)
        self.alive.discard(replica_id)
        held = self.in_flight.pop(replica_id, None) or []
        self.held_when_stopped.extend(requests for _, _, requests in held)

    def finish_late(self) -> int:
        """Run the batches stopped replicas held through the real SliceWorker (writing their
        shards) now; returns how many slices were written."""
        done = [self._run(batch) for batch in self.held_when_stopped]
        self.held_when_stopped = []
        return sum(len(results) for results in done)

    def describe_pending(self) -> str:
        return "each replica needs {'GPU': 1}; the cluster has {'GPU': 0} available"

    def shutdown(self) -> None:
        self.alive.clear()
