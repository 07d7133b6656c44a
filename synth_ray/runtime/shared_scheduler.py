"""One scheduler for the stages running at once on one pool, so two stages of one model stream.

    python -m pytest tests/test_shared_scheduler.py

A pool's replicas answer one scheduler (one loop polls a backend's events), so stages running
at once on one pool (parts of `run_together` on the same model: a generator and its judge, a
conversation's user and assistant turns, a question writer and its solver) hand their work to
the pool's `SharedScheduler`, each as a `Lane`. Its work is every lane's, the most downstream
lane first (its units finish the pipeline, so what waits between stages stays small), the
others filling the room the replicas have left; each item's result goes back to its own
lane's sink, and a suspect's halves and an exhausted item's error rows stay in their lane.

A lane is done once its work ended and each of its items has a result; the stage's thread
waits for that, then records its run as a stage alone does. A failure of the scheduler (every
replica lost, a stop) or of one lane's work ends every lane: the lane that failed gets its
error, the others StageBesideFailed naming it (a stop is JobStopped for each).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from synth_ray.runtime.scheduler import (
    OnExhausted,
    Scheduler,
    Sink,
    SliceWriteFailed,
    Split,
    WorkItem,
)
from synth_ray.runtime.stopping import JobStopped
from synth_ray.runtime.streaming import StageBesideFailed


class Lane:
    """One stage's work on a shared scheduler, with the hooks a scheduler of its own would
    have had. `rank`: its place in the pipeline (a later stage's is higher, and goes first)."""

    def __init__(
        self,
        rank: int,
        work: Iterator[WorkItem | None],
        sink: Sink,
        split: Split | None = None,
        exhausted: OnExhausted | None = None,
        finishing: Callable[[], list[WorkItem]] | None = None,
        on_tick: Callable[[Scheduler], None] | None = None,
        notice: Callable[[str], None] | None = None,
        fed_from_outside: bool = False,
    ) -> None:
        self.rank = rank
        self.fed_from_outside = fed_from_outside  # its work waits on a stage beside it
        self.work = work
        self.sink = sink
        self.split = split
        self.exhausted = exhausted
        self.finishing = finishing
        self.on_tick = on_tick
        self.notice = notice
        self.pending = 0  # items sent out (or to be) without a result yet
        self.ended = False  # its work iterator is exhausted
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.started_at = time.monotonic()
        self.finished_at: float | None = None

    def wait(self) -> None:
        """Return once every item of this lane has a result; raise what ended it otherwise."""
        while not self.done.wait(0.2):
            pass
        if self.error is not None:
            raise self.error


class SharedScheduler:
    """The scheduler of pool `name` while several of its stages run at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.scheduler: Scheduler | None = None
        self._lock = threading.Lock()
        self._lanes: list[Lane] = []
        self._closed = False
        self._failure: BaseException | None = None
        self._failed_lane: Lane | None = None  # the lane whose work or sink raised
        self._thread: threading.Thread | None = None
        self._end: Callable[[Scheduler], None] | None = None

    def add(
        self,
        lane: Lane,
        start: Callable[[SharedScheduler], Scheduler],
        end: Callable[[Scheduler], None],
    ) -> Lane:
        """Give `lane`'s work to the pool's scheduler. The first lane starts it:
        `start(self)` builds it over this object's hooks (`work()`, `sink`, ...), and
        `end(scheduler)` runs once it has stopped (give the replicas back, sum its figures).
        A lane added after the scheduler failed ends at once with that failure."""
        with self._lock:
            if self._failure is not None:
                lane.error = self._echo(self._failure)
                lane.done.set()
                return lane
            if self._closed:
                raise RuntimeError(f"internal error: a stage joined pool {self.name} after close")
            starting = self.scheduler is None
            if starting:
                self.scheduler = start(self)  # a failure here leaves no lane behind
                self._end = end
            self._lanes.append(lane)
            if starting:
                self._thread = threading.Thread(
                    target=self._run, name=f"scheduler-{self.name}", daemon=True
                )
                self._thread.start()
        return lane

    def close(self) -> None:
        """No lane will be added any more: the scheduler ends once the lanes it has are
        done. Returns when it has ended."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            while thread.is_alive():
                thread.join(0.2)

    # -- the scheduler's hooks ----------------------------------------------------------------------
    def work(self) -> Iterator[WorkItem | None]:
        """Every live lane's work, the highest rank first; None when no lane has any now;
        the end once closed and every lane's work ended."""
        while True:
            with self._lock:
                lanes = sorted((x for x in self._lanes if not x.ended), key=lambda x: -x.rank)
                closed = self._closed
            if not lanes and closed:
                return
            item = None
            for lane in lanes:
                item = self._next_of(lane)
                if item is not None:
                    break
            yield item

    def fed_from_outside(self) -> bool:
        """Whether a None from `work()` may be waiting on something besides the results in
        flight: a stage beside a lane, or a lane still to come. Otherwise, with nothing in
        flight, the scheduler fails the job instead of waiting for good."""
        with self._lock:
            live = [lane for lane in self._lanes if not lane.ended]
        return not live or any(lane.fed_from_outside for lane in live)

    def closed(self) -> bool:
        """No lane will come, and every lane's work has ended."""
        with self._lock:
            return self._closed and all(lane.ended for lane in self._lanes)

    def sink(self, item: WorkItem, result: Any) -> None:
        lane: Lane = item.owner
        try:
            lane.sink(item, result)
        except SliceWriteFailed:
            raise  # the scheduler sends it again: still pending
        except BaseException:
            self._failed_lane = lane
            raise
        lane.pending -= 1
        self._end_if_done(lane)

    def split(self, item: WorkItem) -> list[WorkItem]:
        lane: Lane = item.owner
        try:
            pieces = lane.split(item) if lane.split is not None else [item]
        except BaseException:
            self._failed_lane = lane
            raise
        for piece in pieces:
            piece.owner = lane
        lane.pending += len(pieces) - 1
        return pieces

    def exhausted(self, item: WorkItem, reason: str) -> WorkItem | None:
        lane: Lane = item.owner
        try:
            replacement = lane.exhausted(item, reason) if lane.exhausted is not None else None
        except BaseException:
            self._failed_lane = lane
            raise
        if replacement is not None:
            replacement.owner = lane  # in the item's place: still one pending
        return replacement

    def finishing(self) -> list[WorkItem]:
        items: list[WorkItem] = []
        for lane in self._live():
            if lane.finishing is None:
                continue
            taken = lane.finishing()
            for item in taken:
                item.owner = lane
            lane.pending += len(taken)
            items.extend(taken)
        return items

    def tick(self, scheduler: Scheduler) -> None:
        for lane in self._live():
            if lane.on_tick is not None:
                lane.on_tick(scheduler)

    def notice(self, line: str) -> None:
        """A replica's line, told once: by the earliest stage still running."""
        lanes = [lane for lane in self._live() if lane.notice is not None]
        if lanes:
            min(lanes, key=lambda x: x.rank).notice(line)  # type: ignore[misc]

    # -- inside ---------------------------------------------------------------------------------
    def _live(self) -> list[Lane]:
        with self._lock:
            return list(self._lanes)

    def _next_of(self, lane: Lane) -> WorkItem | None:
        try:
            item = next(lane.work)
        except StopIteration:
            lane.ended = True
            self._end_if_done(lane)
            return None
        except BaseException:
            self._failed_lane = lane
            raise
        if item is not None:
            item.owner = lane
            lane.pending += 1
        return item

    def _end_if_done(self, lane: Lane) -> None:
        if lane.ended and lane.pending == 0 and not lane.done.is_set():
            with self._lock:
                self._lanes.remove(lane)
            lane.finished_at = time.monotonic()
            lane.done.set()

    def _echo(self, err: BaseException) -> BaseException:
        """What a lane that did not fail hears of `err`."""
        if isinstance(err, JobStopped):
            return err
        line = str(err).splitlines()[0] if str(err) else type(err).__name__
        return StageBesideFailed(f"a stage beside this one on pool {self.name} failed ({line})")

    def _run(self) -> None:
        assert self.scheduler is not None
        try:
            self.scheduler.run()
        except BaseException as err:  # noqa: BLE001 - every lane's thread raises it
            with self._lock:
                self._failure = err
                lanes, self._lanes = self._lanes, []
            failed = self._failed_lane
            for lane in lanes:
                own = failed is None or lane is failed or isinstance(err, JobStopped)
                lane.error = err if own else self._echo(err)
                lane.done.set()
        else:
            with self._lock:  # closed, every lane's work ended: none can be left
                lanes, self._lanes = self._lanes, []
            for lane in lanes:
                lane.error = RuntimeError(f"internal error: pool {self.name} ended a lane early")
                lane.done.set()
        finally:
            if self._end is not None:
                self._end(self.scheduler)
