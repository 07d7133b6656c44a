"""The scheduling policy: keep every replica's queue full, re-send work a dead replica held.

    python -m pytest tests/test_scheduler.py   # drives this policy with a simulated engine

Plain Python over the `Backend` protocol, no Ray here. Policy:
- Work is pulled lazily from an iterator (so memory stays bounded) in batches of
  `batch_size`, until each ready replica has `max_in_flight` requests outstanding. A replica
  keeps accepting batches while earlier ones decode: there is no batch barrier.
- A replica that dies loses its in-flight batches; their requests go back to the front of the
  queue with one more attempt counted. A request on its last attempt is a suspect (it may be
  what kills engines): it is sent alone, to a replica first drained of other work, so only the
  culprit fails with it. A request lost `max_attempts` times comes back as an error result
  instead of failing the job.
- A dead replica is replaced up to `max_replica_restarts` times. The job fails fast, with the
  reason, when no replica is left, when replicas fail to start before any became ready (a bad
  model path fails every replica alike), or when none is ready within `start_timeout_s`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from synth_ray.engine.requests import EngineRequest, EngineResult
from synth_ray.runtime.backend import Backend, BatchDone, ReplicaFailed, ReplicaReady


class JobFailed(RuntimeError):
    """The job cannot make progress; the message says why. Committed units stay committed."""


@dataclass
class WorkItem:
    request: EngineRequest
    unit_index: int
    attempts: int = 0


@dataclass(frozen=True)
class SchedulerSettings:
    replicas: int = 1
    batch_size: int = 8
    max_in_flight: int = 256
    max_attempts: int = 3
    max_replica_restarts: int = 3
    start_timeout_s: float = 900.0
    poll_interval_s: float = 0.2


@dataclass
class _Replica:
    started_at: float
    ready: bool = False
    in_flight: dict[int, list[WorkItem]] = field(default_factory=dict)
    isolating: bool = False  # running a suspect alone; gets nothing else meanwhile

    def outstanding(self) -> int:
        return sum(len(batch) for batch in self.in_flight.values())


Sink = Callable[[WorkItem, EngineResult], None]


class Scheduler:
    def __init__(
        self,
        backend: Backend,
        work: Iterator[WorkItem],
        sink: Sink,
        settings: SchedulerSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.work = work
        self.sink = sink
        self.settings = settings
        self.clock = clock
        self.replicas: dict[int, _Replica] = {}
        self.retry: deque[WorkItem] = deque()
        self.work_exhausted = False
        self.restarts = 0
        self.ever_ready = False
        self.next_batch_id = 0
        self.started_at = clock()
        self.failures: list[str] = []
        self.requests_resent = 0
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
            self._fill()
            if self._finished():
                self.finished_at = self.clock()
                return
            for event in self.backend.poll(self.settings.poll_interval_s):
                self._handle(event)
            self._check_start_timeout()

    def _finished(self) -> bool:
        if not self.work_exhausted or self.retry:
            return False
        return all(not r.in_flight for r in self.replicas.values())

    def _start_replica(self) -> None:
        replica_id = self.backend.start_replica()
        self.replicas[replica_id] = _Replica(started_at=self.clock())

    # -- dispatch -------------------------------------------------------------------------------
    def _is_suspect(self, item: WorkItem) -> bool:
        return item.attempts >= max(1, self.settings.max_attempts - 1)

    def _take(self, n: int) -> list[WorkItem]:
        """Up to n items: retries first (suspects left in place), then fresh work."""
        batch: list[WorkItem] = []
        suspects: deque[WorkItem] = deque()
        while len(batch) < n and self.retry:
            item = self.retry.popleft()
            (suspects if self._is_suspect(item) else batch).append(item)
        self.retry.extendleft(reversed(suspects))
        while len(batch) < n and not self.work_exhausted:
            try:
                batch.append(next(self.work))
            except StopIteration:
                self.work_exhausted = True
        return batch

    def _send(self, replica_id: int, replica: _Replica, batch: list[WorkItem]) -> None:
        batch_id = self.next_batch_id
        self.next_batch_id += 1
        replica.in_flight[batch_id] = batch
        self.backend.submit(replica_id, batch_id, [item.request for item in batch])

    def _fill(self) -> None:
        ready = [(rid, r) for rid, r in self.replicas.items() if r.ready and not r.isolating]
        if any(self._is_suspect(item) for item in self.retry) and ready:
            drain_id, drain = ready.pop(0)  # stops taking work until empty, then isolates
            if not drain.in_flight:
                suspect = next(i for i in self.retry if self._is_suspect(i))
                self.retry.remove(suspect)
                drain.isolating = True
                self._send(drain_id, drain, [suspect])
        for replica_id, replica in ready:
            while (room := self.settings.max_in_flight - replica.outstanding()) > 0:
                batch = self._take(min(self.settings.batch_size, room))
                if not batch:
                    break
                self._send(replica_id, replica, batch)

    # -- events ---------------------------------------------------------------------------------
    def _handle(self, event: ReplicaReady | ReplicaFailed | BatchDone) -> None:
        replica = self.replicas.get(event.replica_id)
        if replica is None:
            return  # a late event from a replica already written off
        if isinstance(event, ReplicaReady):
            replica.ready = True
            self.ever_ready = True
            if self.first_ready_at is None:
                self.first_ready_at = self.clock()
                self.engine_info = dict(event.engine)
        elif isinstance(event, BatchDone):
            batch = replica.in_flight.pop(event.batch_id, None)
            if batch is None:
                return
            replica.isolating = False
            by_id = {r.request_id: r for r in event.results}
            for item in batch:
                result = by_id.get(item.request.request_id) or EngineResult(
                    item.request.request_id, "", 0, 0, None, error="replica returned no result"
                )
                self.sink(item, result)
        elif isinstance(event, ReplicaFailed):
            self._replica_failed(event.replica_id, event.reason)

    def _replica_failed(self, replica_id: int, reason: str) -> None:
        replica = self.replicas.pop(replica_id)
        self.backend.stop_replica(replica_id)
        self.failures.append(reason)
        lost = [item for batch in replica.in_flight.values() for item in batch]
        for item in reversed(lost):
            item.attempts += 1
            if item.attempts >= self.settings.max_attempts:
                self.sink(
                    item,
                    EngineResult(
                        item.request.request_id,
                        "",
                        len(item.request.prompt_token_ids),
                        0,
                        None,
                        error=f"lost with its replica {item.attempts} times; last: {reason}",
                    ),
                )
            else:
                self.requests_resent += 1
                self.retry.appendleft(item)
        if not replica.ready and not self.ever_ready:
            if not self.replicas:
                raise JobFailed(f"generator replica failed to start: {reason}")
            return  # others are still starting; the same cause will likely fail them too
        if self.restarts < self.settings.max_replica_restarts:
            self.restarts += 1
            self._start_replica()
        elif not self.replicas:
            raise JobFailed(
                f"all generator replicas died ({self.restarts} replaced, "
                f"max_replica_restarts={self.settings.max_replica_restarts}); last: {reason}"
            )

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
