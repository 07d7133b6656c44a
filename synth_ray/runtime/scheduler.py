"""The scheduling policy: keep every replica's queue full, re-send work a dead replica held.

    python -m pytest tests/test_scheduler.py   # drives this policy with a simulated engine

Plain Python over the `Backend` protocol, no Ray here. A work item is a slice of a unit
(runtime/slices.py: what jobs send) or a single engine request (the diversity-filtered path),
weighted by the requests it stands for. Policy:
- Work is pulled lazily from an iterator (so memory stays bounded), in batches of up to
  `batch_size` items, until each ready replica has `max_in_flight` requests outstanding
  (by default twice its engine's `max_num_seqs`, reported when it is ready), and
  always at least two batches: a replica keeps accepting work while earlier batches decode,
  so there is no batch barrier, not even at the end of one large slice.
- A replica that dies loses its in-flight batches; their items go back to the front of the
  queue with one more attempt counted. An item on its last attempt is a suspect (it may be
  what kills engines): it is cut in halves while it can be (`split`), and each piece is sent
  alone, to a replica first drained of other work, so only the culprit fails with it. An
  item lost `max_attempts` times ends as errors (`on_exhausted`) instead of failing the job.
- A replica that holds work and shows no progress (no result, and the progress value its
  `probe` answers does not change: its engine's token count, its per-row phases) for
  `stall_timeout_s` is stalled: it is killed with its engine, replaced and its work re-sent,
  exactly as if it had died, and the reason is announced (`notice`) and kept in `stalls`. So
  is a replica still starting `start_timeout_s` after another became ready. Quiet time is
  proven, never inferred from the driver's own clock: a replica is stalled only when a probe
  *sent* `stall_timeout_s` after its last progress comes back unchanged, or when it leaves a
  probe unanswered that long. A driver loop that was busy, or a probe answer still on its way,
  never makes a healthy replica look stalled (a loaded machine slows both sides alike).
- Once `stop` is requested (a signal), no new work is dispatched; the batches in flight may
  finish until its grace runs out (their units commit), then `JobStopped` is raised. Work
  that only writes what was already generated (`finishing`: a diversity-filtered unit that
  has been decided) is still sent meanwhile, so it commits within the grace too.
- A dead replica is replaced while the replacements of the last hour stay under
  `max_replica_restarts` per replica of the pool; beyond, the pool shrinks, with a warning
  (one killed by a suspect it ran alone is replaced without counting: bisecting costs a few
  per poison row). The job fails fast, with the reason, when no replica is left, when replicas fail to start before any became ready (a bad
  model path fails every replica alike), or when none is ready within `start_timeout_s`.
Cost per event is independent of the number of replicas: only replicas with room are visited.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from synth_ray.engine.requests import EngineRequest, EngineResult
from synth_ray.runtime.backend import (
    Backend,
    BatchDone,
    Event,
    ReplicaFailed,
    ReplicaProgress,
    ReplicaReady,
)
from synth_ray.runtime.stopping import JobStopped, StopRequest


class JobFailed(RuntimeError):
    """The job cannot make progress; the message says why. Committed units stay committed."""


@dataclass
class WorkItem:
    """`payload` is an EngineRequest or a SliceTask; `weight` the requests it stands for;
    a `safe` item never reaches an engine (a slice written as error rows), so is no suspect."""

    payload: Any
    unit_index: int
    attempts: int = 0
    weight: int = 1
    safe: bool = False
    # replicas whose storage failed this item's write (SliceWriteFailed), and how often
    failed_on: set[int] = field(default_factory=set)
    write_failures: int = 0
    owner: Any = None  # the stage's lane, where several share one scheduler (shared_scheduler.py)

    @property
    def request(self) -> EngineRequest:
        return self.payload

    @property
    def key(self) -> str:
        payload = self.payload
        return payload.request_id if isinstance(payload, EngineRequest) else payload.key


class SliceWriteFailed(Exception):
    """Raised by a sink: the replica could not store the item's result (its disk, its mount,
    its network to the object store); the item is re-sent to a replica that has not failed
    it, and fails the job only after failing on `max_attempts` replicas (or as often on all
    there are)."""


RESTART_WINDOW_S = 3600.0  # the restart budget counts replacements over this window
LOAD_EVERY_S = 0.25  # how often a loop notes whether its replicas starve or are all full


@dataclass(frozen=True)
class SchedulerSettings:
    replicas: int = 1
    batch_size: int = 8
    max_in_flight: int | None = None  # None: in_flight_for(the replica's engine)
    max_attempts: int = 3
    max_replica_restarts: int = 3
    start_timeout_s: float = 900.0
    poll_interval_s: float = 0.2
    # batches kept in flight per replica whatever their size, so one slice's slowest request
    # never leaves the engine idle while the next slice waits for that one to come back
    min_batches_in_flight: int = 3
    # no progress for this long while holding work: stalled (None: never declared)
    stall_timeout_s: float | None = None
    probe_interval_s: float = 10.0  # how often replicas holding work are asked for progress


def in_flight_for(engine: dict[str, Any]) -> int:
    """Requests to keep outstanding on a replica whose engine reported `engine`: twice the
    sequences it decodes at once, so finished sequences are replaced from its own queue without
    waiting for results to travel back; at least 256 (an engine that does not say)."""
    seqs = engine.get("max_num_seqs")
    return max(256, 2 * int(seqs)) if isinstance(seqs, int) and seqs > 0 else 256


def default_stall_timeout_s(max_tokens: int) -> float:
    """5 minutes, or 0.5 s per output token when longer. Progress is counted per generated
    token, so a healthy engine moves well within this even on a CPU; the share per token
    covers engines where only finished requests can be counted (see VllmEngine.progress)."""
    return max(300.0, 0.5 * max_tokens)


@dataclass
class _Replica:
    started_at: float
    ready: bool = False
    max_in_flight: int = 256  # decided when it is ready
    in_flight: dict[int, list[WorkItem]] = field(default_factory=dict)
    outstanding: int = 0  # weight of the items in flight
    isolating: bool = False  # running a suspect alone; gets nothing else meanwhile
    last_progress_at: float = 0.0  # last result or changed progress value while holding work
    mark: Any = None  # the last progress value it answered
    probe_sent_at: float | None = None  # when the probe now outstanding was sent


Sink = Callable[[WorkItem, Any], None]
Split = Callable[[WorkItem], list[WorkItem]]
OnExhausted = Callable[[WorkItem, str], "WorkItem | None"]


class Scheduler:
    def __init__(
        self,
        backend: Backend,
        work: Iterator[WorkItem | None],
        sink: Sink,
        settings: SchedulerSettings,
        clock: Callable[[], float] = time.monotonic,
        split: Split | None = None,
        on_exhausted: OnExhausted | None = None,
        notice: Callable[[str], None] | None = None,
        stop: StopRequest | None = None,
        on_tick: Callable[[Scheduler], None] | None = None,
        finishing: Callable[[], list[WorkItem]] | None = None,
        fed_from_outside: bool | Callable[[], bool] = False,
        work_closed: Callable[[], bool] | None = None,
    ) -> None:
        """`work` may yield None: nothing to send now, more once results come back (a
        decided unit to write). `sink(item, result)` gets each item's result once. `split` cuts a suspect item in
        pieces; `on_exhausted(item, reason)` gives the item that writes a lost item as error
        rows (None: the sink gets an EngineResult with the error). `notice(line)` is told
        of each stalled replica as it is replaced. `on_tick(self)` is called on every loop
        (the run's timeline samples it). `finishing()` hands over, while a stop drains, the
        items that write already generated rows (otherwise `work` yields them).
        `fed_from_outside`: `work` waits on another stage running beside this one, so a None
        while nothing is in flight is no deadlock (a callable: asked each time).
        `work_closed()`: true once `work` will yield nothing more, told without a replica
        asking for work (a shared scheduler's end, when no replica is ready). `grow_to(n)` (from another thread) asks for
        up to n replicas in all, once resources were freed for them."""
        self.backend = backend
        self.work = work
        self.sink = sink
        self.settings = settings
        self.clock = clock
        self.split = split
        self.on_exhausted = on_exhausted
        self.notice = notice
        self.stop = stop
        self.on_tick = on_tick
        self.finishing = finishing
        self.fed_from_outside = fed_from_outside
        self.work_closed = work_closed
        self.wanted_replicas = settings.replicas
        self.grown = 0  # replicas started by grow_to
        self.released = 0  # idle replicas given back by release_idle_replica
        self._release_asked = False
        # since when a ready replica has had nothing to do while more work is to come (its
        # input comes from a stage beside it), and since when every replica has been full
        # while more is to come: what the pools' balancer reads (runtime/balancer.py)
        self.starved_since: float | None = None
        self.saturated_since: float | None = None
        self._load_noted_at = float("-inf")
        self.finishing_queue: deque[WorkItem] = deque()  # taken from `finishing`, not yet sent
        self.replicas: dict[int, _Replica] = {}
        self.hungry: set[int] = set()  # ready replicas that may have room for more work
        self.draining: int | None = None  # emptied to run a suspect alone
        self.batches_in_flight = 0
        self.retry: deque[WorkItem] = deque()
        self.work_exhausted = False
        self.restarts = 0
        self.restart_times: deque[float] = deque()  # of the replacements in the last hour
        self.shrinks: list[str] = []  # a replica lost and not replaced: the pool shrank
        self.isolation_deaths = 0  # replicas killed by a suspect they ran alone (not charged)
        self.ever_ready = False
        self.next_batch_id = 0
        self.started_at = clock()
        self.failures: list[str] = []
        self.requests_resent = 0
        self.stalls: list[str] = []  # why each stalled replica was replaced
        self._last_stall_check = self.started_at
        self.first_ready_at: float | None = None
        self.finished_at: float | None = None
        # what the first ready replica reported about its engine (dtype and why, niceness)
        self.engine_info: dict[str, object] = {}

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        """Return when every work item has a result; raise JobFailed when that cannot happen.
        The caller owns the backend and shuts it down."""
        for _ in range(self.settings.replicas):
            self._start_replica()
        while True:
            if self.stop is not None and self.stop.requested:
                self._check_stopped()
            else:
                self._fill()
            if not self.work_exhausted and self.work_closed is not None and self.work_closed():
                self.work_exhausted = True
            if self._finished():
                self.finished_at = self.clock()
                return
            while self._sized() < self.wanted_replicas and self.ever_ready:
                self.grown += 1  # into what a finished pool freed (a lost one is not redone)
                self._start_replica()
            if self._release_asked:
                self._release_asked = False
                self._release_idle()
            for event in self.backend.poll(self.settings.poll_interval_s):
                self._handle(event)
            self._check_start_timeout()
            self._check_stalls()
            if self.on_tick is not None:
                self.on_tick(self)

    def grow_to(self, replicas: int) -> None:
        """Run up to `replicas` replicas from the next loop on (never fewer than now)."""
        self.wanted_replicas = max(self.wanted_replicas, replicas)

    def release_idle_replica(self) -> None:
        """Ask the next loop (from another thread) to stop one ready replica that holds no
        work, if there is one and it is not the last: `released` counts it once done. A
        replica never loses work this way; asked while every replica is busy, nothing
        happens."""
        self._release_asked = True

    @property
    def live_replicas(self) -> int:
        return len(self.replicas)

    def _sized(self) -> int:
        """Replicas this pool was sized to: started for it, less those given back."""
        return self.settings.replicas + self.grown - self.released

    def _release_idle(self) -> None:
        idle = [
            rid
            for rid, r in self.replicas.items()
            if r.ready and not r.in_flight and not r.isolating and rid != self.draining
        ]
        if not idle or len(self.replicas) < 2:
            return
        replica_id = max(idle)
        self.replicas.pop(replica_id)
        self.hungry.discard(replica_id)
        self.backend.stop_replica(replica_id)
        self.released += 1
        self.wanted_replicas = max(self._sized(), self.wanted_replicas - 1)

    def _check_stopped(self) -> None:
        """Stop dispatching new work (finishing work still goes out); raise once nothing is in
        flight or waiting to finish, or when the grace period is over."""
        assert self.stop is not None
        self.stop.acknowledge()
        self._send_finishing()
        if self.batches_in_flight == 0 and not self.finishing_queue:
            raise JobStopped(f"stopped by {self.stop.signal_name}; work in flight finished")
        if self.stop.expired():
            held = sum(
                item.weight
                for r in self.replicas.values()
                for b in r.in_flight.values()
                for item in b
            )
            raise JobStopped(
                f"stopped by {self.stop.signal_name}; the grace period "
                f"({self.stop.grace_s:g}s) ran out with {held} requests in flight, "
                "left uncommitted"
            )

    def _send_finishing(self) -> None:
        """Send the finishing items to ready replicas with room, one item per batch. Items
        that only write (`safe`) waiting to be re-sent (their replica died, their write
        failed) are finishing work too; a lost generation slice stays uncommitted."""
        if self.finishing is not None:
            self.finishing_queue.extend(self.finishing())
        if any(item.safe for item in self.retry):
            self.finishing_queue.extend(item for item in self.retry if item.safe)
            self.retry = deque(item for item in self.retry if not item.safe)
        if not self.finishing_queue:
            return
        for replica_id, replica in sorted(self.replicas.items()):
            if not replica.ready or replica.isolating:
                continue
            while self.finishing_queue and self._has_room(replica):
                item = self.finishing_queue.popleft()
                if self._for_another_replica(item, replica_id):
                    self.finishing_queue.append(item)
                    break
                self._send(replica_id, replica, [item])

    def _untried(self, item: WorkItem) -> list[int]:
        """Ready replicas whose storage has not failed `item`."""
        return [rid for rid, r in self.replicas.items() if r.ready and rid not in item.failed_on]

    def _for_another_replica(self, item: WorkItem, replica_id: int | None) -> bool:
        return replica_id in item.failed_on and bool(self._untried(item))

    def _write_failed(self, item: WorkItem, replica_id: int, reason: str) -> None:
        """Re-send `item` (see SliceWriteFailed) or fail the job when it failed often enough."""
        item.write_failures += 1
        item.failed_on.add(replica_id)
        limit = self.settings.max_attempts
        if (
            len(item.failed_on) >= limit
            or (not self._untried(item) and item.write_failures >= limit)
            or item.write_failures >= 2 * limit  # bounded, whoever it was sent to
        ):
            raise JobFailed(
                f"{reason} (its write failed {item.write_failures} times, on "
                f"{len(item.failed_on)} replica(s))"
            )
        if self.notice is not None:
            self.notice(f"{reason}; re-sending it to another replica")
        self.retry.append(item)
        self._wake_ready()  # a replica that ran out of work may be the one to take it

    def _finished(self) -> bool:
        return self.work_exhausted and not self.retry and self.batches_in_flight == 0

    def _start_replica(self) -> None:
        replica_id = self.backend.start_replica()
        self.replicas[replica_id] = _Replica(started_at=self.clock())

    # -- dispatch -------------------------------------------------------------------------------
    def _is_suspect(self, item: WorkItem) -> bool:
        return not item.safe and item.attempts >= max(1, self.settings.max_attempts - 1)

    def _take(self, room: int, replica_id: int | None = None) -> list[WorkItem]:
        """Up to `batch_size` items weighing about `room` (at least one item): retries first
        (suspects, and items whose write failed on this replica while another could take
        them, left in place), then fresh work."""
        batch: list[WorkItem] = []
        weight = 0
        suspects: deque[WorkItem] = deque()
        while len(batch) < self.settings.batch_size and weight < room and self.retry:
            item = self.retry.popleft()
            if self._is_suspect(item) or self._for_another_replica(item, replica_id):
                suspects.append(item)
                continue
            batch.append(item)
            weight += item.weight
        self.retry.extendleft(reversed(suspects))
        while len(batch) < self.settings.batch_size and weight < room and not self.work_exhausted:
            try:
                item = next(self.work)
            except StopIteration:
                self.work_exhausted = True
                break
            if item is None:  # more work will follow from results still to come
                quiet = self.batches_in_flight == 0 and not batch and not self.retry
                outside = self.fed_from_outside
                if quiet and not (outside() if callable(outside) else outside):
                    raise JobFailed("internal error: work waits on results nothing will send")
                break
            batch.append(item)
            weight += item.weight
        return batch

    def _send(self, replica_id: int, replica: _Replica, batch: list[WorkItem]) -> None:
        batch_id = self.next_batch_id
        self.next_batch_id += 1
        if not replica.in_flight:  # its stall clock runs only while it holds work
            replica.last_progress_at = self.clock()
        replica.in_flight[batch_id] = batch
        replica.outstanding += sum(item.weight for item in batch)
        self.batches_in_flight += 1
        self.backend.submit(replica_id, batch_id, [item.payload for item in batch])

    def _has_room(self, replica: _Replica) -> bool:
        return (
            replica.outstanding < replica.max_in_flight
            or len(replica.in_flight) < self.settings.min_batches_in_flight
        )

    def _fill(self) -> None:
        if self.retry and any(self._is_suspect(item) for item in self.retry):
            # one replica stops taking work until empty, then runs the suspect alone
            if self.draining not in self.replicas:
                ready = [rid for rid, r in self.replicas.items() if r.ready and not r.isolating]
                # a replica whose storage has not failed the suspect's write, where there is one
                suspect = next(i for i in self.retry if self._is_suspect(i))
                ready = [rid for rid in ready if rid not in suspect.failed_on] or ready
                self.draining = min(ready) if ready else None
            if self.draining is not None:
                self.hungry.discard(self.draining)
                drain = self.replicas[self.draining]
                if not drain.in_flight:
                    suspect = next(i for i in self.retry if self._is_suspect(i))
                    self.retry.remove(suspect)
                    drain.isolating = True
                    self._send(self.draining, drain, [suspect])
                    self.draining = None
        else:
            self.draining = None
        for replica_id in sorted(self.hungry):
            replica = self.replicas[replica_id]
            while self._has_room(replica):
                batch = self._take(max(1, replica.max_in_flight - replica.outstanding), replica_id)
                if not batch:
                    break
                self._send(replica_id, replica, batch)
            if not self._has_room(replica):
                self.hungry.discard(replica_id)
            elif self.work_exhausted and not self.retry:
                self.hungry.discard(replica_id)  # nothing left to give it
        self._note_load()

    def _note_load(self) -> None:
        """Keep `starved_since` and `saturated_since` (see __init__) up to date, a few times
        a second (a visit of every replica: the loop's cost stays per event)."""
        now = self.clock()
        if now - self._load_noted_at < LOAD_EVERY_S:
            return
        self._load_noted_at = now
        ready = [r for r in self.replicas.values() if r.ready and not r.isolating]
        more = not self.work_exhausted or bool(self.retry)
        starved = more and any(not r.in_flight for r in ready)
        saturated = more and bool(ready) and not any(self._has_room(r) for r in ready)
        if not starved:
            self.starved_since = None
        elif self.starved_since is None:
            self.starved_since = now
        if not saturated:
            self.saturated_since = None
        elif self.saturated_since is None:
            self.saturated_since = now

    # -- events ---------------------------------------------------------------------------------
    def _handle(self, event: Event) -> None:
        replica = self.replicas.get(event.replica_id)
        if replica is None:
            return  # a late event from a replica already written off
        if isinstance(event, ReplicaReady):
            replica.ready = True
            replica.max_in_flight = self.settings.max_in_flight or in_flight_for(event.engine)
            self.hungry.add(event.replica_id)
            self.ever_ready = True
            if self.first_ready_at is None:
                self.first_ready_at = self.clock()
                self.engine_info = dict(event.engine)
        elif isinstance(event, ReplicaProgress):
            sent_at, replica.probe_sent_at = replica.probe_sent_at, None
            if event.mark != replica.mark:
                replica.mark = event.mark
                replica.last_progress_at = self.clock()
            elif sent_at is not None and replica.in_flight:
                self._stalled_if_quiet(
                    event.replica_id, replica, sent_at - replica.last_progress_at
                )
        elif isinstance(event, BatchDone):
            batch = replica.in_flight.pop(event.batch_id, None)
            if batch is None:
                return
            replica.last_progress_at = self.clock()
            replica.outstanding -= sum(item.weight for item in batch)
            self.batches_in_flight -= 1
            replica.isolating = False
            self.hungry.add(event.replica_id)
            by_key = {r.key: r for r in event.results}
            for item in batch:
                result = by_key.get(item.key) or EngineResult(
                    item.key, "", 0, 0, None, error="replica returned no result"
                )
                try:
                    self.sink(item, result)
                except SliceWriteFailed as failed:
                    self._write_failed(item, event.replica_id, str(failed))
        elif isinstance(event, ReplicaFailed):
            self._replica_failed(event.replica_id, event.reason)

    def _replica_failed(self, replica_id: int, reason: str) -> None:
        replica = self.replicas.pop(replica_id)
        self.hungry.discard(replica_id)
        self.batches_in_flight -= len(replica.in_flight)
        self.backend.stop_replica(replica_id)
        self.failures.append(reason)
        lost = [item for batch in replica.in_flight.values() for item in batch]
        requeue: list[WorkItem] = []
        for item in lost:
            item.attempts += 1
            pieces = self.split(item) if self.split and self._is_suspect(item) else [item]
            if len(pieces) > 1:  # bisecting a suspect: each half is a suspect of its own
                for piece in pieces:
                    piece.attempts = max(1, self.settings.max_attempts - 1)
                requeue.extend(pieces)
            elif item.attempts >= self.settings.max_attempts and not item.safe:
                self._exhausted(
                    item, f"lost with its replica {item.attempts} times; last: {reason}"
                )
            elif item.safe and item.attempts >= 2 * self.settings.max_attempts:
                raise JobFailed(f"{item.key}: lost {item.attempts} times; last: {reason}")
            else:
                requeue.append(item)
        self.requests_resent += sum(item.weight for item in requeue)
        self.retry.extendleft(reversed(requeue))
        self._wake_ready()
        if not replica.ready and not self.ever_ready:
            if not self.replicas:
                raise JobFailed(f"generator replica failed to start: {reason}")
            return  # others are still starting; the same cause will likely fail them too
        if replica.isolating:
            # it ran a suspect alone: the suspect killed it, not a fault of the cluster, and
            # bisection needs a few such deaths per poison row, so it is replaced uncharged
            self.isolation_deaths += 1
            self._start_replica()
        elif self._may_restart():
            self.restarts += 1
            self.restart_times.append(self.clock())
            self._start_replica()
        elif not self.replicas:
            raise JobFailed(
                f"all generator replicas died ({self.restarts} replaced, "
                f"max_replica_restarts={self.settings.max_replica_restarts} per replica per "
                f"hour); last: {reason}"
            )
        else:
            line = (
                f"warning: replica {replica_id} not replaced ({len(self.restart_times)} "
                f"replacements in the last hour reach max_replica_restarts="
                f"{self.settings.max_replica_restarts} per replica per hour): "
                f"{len(self.replicas)} of {self.settings.replicas} replicas left"
            )
            self.shrinks.append(line)
            if self.notice is not None:
                self.notice(line)

    def _may_restart(self) -> bool:
        """The restart budget is a rate: `max_replica_restarts` per replica of the pool per
        hour, so a crash-looping engine still fails the job within minutes while a lost node
        of a big pool (many replicas at once) or one death a day in a week-long run does not
        spend it."""
        window = self.clock() - RESTART_WINDOW_S
        while self.restart_times and self.restart_times[0] <= window:
            self.restart_times.popleft()
        budget = self.settings.max_replica_restarts * self.settings.replicas
        return len(self.restart_times) < budget

    def _wake_ready(self) -> None:
        """Items went back in the queue: replicas that ran out of work may take them."""
        self.hungry.update(rid for rid, r in self.replicas.items() if r.ready and not r.isolating)

    def _exhausted(self, item: WorkItem, reason: str) -> None:
        replacement = self.on_exhausted(item, reason) if self.on_exhausted else None
        if replacement is not None:
            self.retry.appendleft(replacement)
            self._wake_ready()
            return
        request = item.payload
        self.sink(
            item,
            EngineResult(item.key, "", len(request.prompt_token_ids), 0, None, error=reason),
        )

    def _probe_every_s(self) -> float:
        """Probes go out at least three times per stall timeout, so a stall is declared
        between one timeout and a third more after the replica's last progress."""
        timeout = self.settings.stall_timeout_s
        interval = self.settings.probe_interval_s
        return interval if timeout is None else min(interval, timeout / 3)

    def _check_stalls(self) -> None:
        """Every probe interval: probe the replicas that hold work; replace those that left a
        probe unanswered for `stall_timeout_s` without other progress (an actor that answers
        nothing), or are still starting `start_timeout_s` after another replica became ready
        (a replica that never starts must not hold its slot). Replicas that answer are judged
        when their answer arrives (`_handle`)."""
        timeout = self.settings.stall_timeout_s
        now = self.clock()
        if now - self._last_stall_check < self._probe_every_s():
            return
        self._last_stall_check = now
        for replica_id, replica in list(self.replicas.items()):
            if replica.ready and replica.in_flight:
                sent_at = replica.probe_sent_at
                if sent_at is None:
                    replica.probe_sent_at = now
                    self.backend.probe(replica_id)
                elif timeout is not None and now - max(sent_at, replica.last_progress_at) > timeout:
                    self._stalled_if_quiet(replica_id, replica, now - replica.last_progress_at)
            elif not replica.ready and self.ever_ready and timeout is not None:
                waited = now - replica.started_at
                if waited > self.settings.start_timeout_s:
                    self._stalled(
                        replica_id,
                        f"replica {replica_id} stalled: still starting after {waited:.0f}s "
                        f"while others run (scheduler.start_timeout_s="
                        f"{self.settings.start_timeout_s:g})",
                    )

    def _stalled_if_quiet(self, replica_id: int, replica: _Replica, proven_quiet: float) -> None:
        """Replace the replica when it has been proven quiet (no progress over a whole probe
        window, or no answer) for longer than `stall_timeout_s`."""
        timeout = self.settings.stall_timeout_s
        if timeout is None or proven_quiet <= timeout:
            return
        quiet = self.clock() - replica.last_progress_at
        held = sum(item.weight for b in replica.in_flight.values() for item in b)
        self._stalled(
            replica_id,
            f"replica {replica_id} stalled: no progress for {quiet:.0f}s while "
            f"holding {held} requests (scheduler.stall_timeout_s={timeout:g})",
        )

    def _stalled(self, replica_id: int, reason: str) -> None:
        self.stalls.append(reason)
        if self.notice is not None:
            self.notice(f"{reason}; killing it, re-sending its work, starting a replacement")
        self._replica_failed(replica_id, reason)

    def _check_start_timeout(self) -> None:
        if any(r.ready for r in self.replicas.values()):
            return
        waited = self.clock() - min(
            (r.started_at for r in self.replicas.values()), default=self.started_at
        )
        if waited > self.settings.start_timeout_s:
            pending = self.backend.describe_pending()
            raise JobFailed(
                f"no generator replica became ready within {self.settings.start_timeout_s:.0f}s "
                f"(scheduler.start_timeout_s){': ' + pending if pending else ''}"
            )
