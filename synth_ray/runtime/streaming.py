"""Stages that run at once, a later one fed unit by unit as an earlier one commits.

    python -m pytest tests/test_pools.py

An earlier stage running beside a later one publishes each commit to a `UnitFeed` (the units
committed by earlier runs first). The later stage plans all its units up front (their ids
derive from the earlier stage's *planned* unit ids, which its commits carry, so a resume plans
the same units) and a `UnitGate` holds each unit's slices until every earlier unit it reads
has committed; the slices then go out with the shards to read in their task, as they would
have read them from a finished stage's commit records. So each stage still commits each of
its units exactly once, and a kill anywhere resumes: the earlier stage skips what it
committed, the later one skips what it committed and waits only for the rest.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from synth_ray.io.manifest import UnitRecord
from synth_ray.runtime.scheduler import JobFailed, WorkItem


class UnitFeed:
    """What one stage (`stage` of the folder `uri`) has committed so far, thread-safe: the
    stage adds each record as it commits; gates of later stages subscribe to hear of them."""

    def __init__(self, uri: str, stage: str) -> None:
        self.uri = uri
        self.stage = stage
        self._lock = threading.Lock()
        self._records: dict[int, UnitRecord] = {}
        self._listeners: list[queue.SimpleQueue[tuple[UnitFeed, int]]] = []
        self.failed: str | None = None
        self.done = threading.Event()  # set once the stage committed every unit
        self._planned: list[Any] | None = None  # the stage's units, once it planned them
        self._planned_set = threading.Event()

    def set_planned(self, units: list[Any]) -> None:
        """The stage's planned units (WorkUnits): the ids its commits will carry."""
        self._planned = sorted(units, key=lambda u: u.index)
        self._planned_set.set()

    def planned(self, check: Callable[[], None] | None = None) -> list[Any]:
        """The stage's planned units in index order, once it has planned them (a later stage
        derives its unit ids from them, as it would from the commit records);
        StageBesideFailed when the stage failed first. `check()`, called while waiting,
        raises to stop waiting (another stage beside failed, a stop)."""
        while not self._planned_set.wait(0.2):
            if self.failed:
                raise StageBesideFailed(f"stage {self.name} failed: {self.failed}")
            if check is not None:
                check()
        assert self._planned is not None
        return self._planned

    def add(self, record: UnitRecord) -> None:
        with self._lock:
            self._records[record.unit_index] = record
            listeners = list(self._listeners)
        for inbox in listeners:
            inbox.put((self, record.unit_index))

    def subscribe(self, inbox: queue.SimpleQueue[tuple[UnitFeed, int]]) -> None:
        """Send `inbox` every unit committed from now on, and every one committed before."""
        with self._lock:
            self._listeners.append(inbox)
            known = list(self._records)
        for index in known:
            inbox.put((self, index))

    def record(self, index: int) -> UnitRecord | None:
        with self._lock:
            return self._records.get(index)

    def fail(self, reason: str) -> None:
        self.failed = reason

    def finish(self) -> None:
        self.done.set()

    @property
    def finished(self) -> bool:
        return self.done.is_set()

    @property
    def name(self) -> str:
        return self.stage or self.uri


class StageBesideFailed(JobFailed):
    """This stage stops because a stage running beside it failed (that one's error is the
    job's)."""


# unit k of a later stage -> the (feed, earlier unit index) pairs it reads
Needs = dict[int, list[tuple[UnitFeed, int]]]
# the earlier records unit k reads, in `needs` order -> the shards its slice tasks carry
ShardsOf = Callable[[list[UnitRecord]], tuple[Any, ...]]


class UnitGate:
    """Releases a later stage's units as the earlier units each reads commit. `release()`
    returns the units released since its last call with their shards; the cost is per
    commit heard, never a scan of the units still waiting."""

    def __init__(self, needs: Needs, shards_of: ShardsOf) -> None:
        self.needs = needs
        self.shards_of = shards_of
        self.inbox: queue.SimpleQueue[tuple[UnitFeed, int]] = queue.SimpleQueue()
        self.readers: dict[tuple[int, int], list[int]] = {}  # (feed id, earlier) -> units
        self.feeds: dict[int, UnitFeed] = {}
        for unit, pairs in needs.items():
            for feed, earlier in pairs:
                self.feeds[id(feed)] = feed
                self.readers.setdefault((id(feed), earlier), []).append(unit)
        self.released: set[int] = set()
        for feed in self.feeds.values():
            feed.subscribe(self.inbox)

    def release(self) -> list[tuple[int, tuple[Any, ...]]]:
        out = []
        while True:
            try:
                feed, earlier = self.inbox.get_nowait()
            except queue.Empty:
                break
            for unit in self.readers.get((id(feed), earlier), ()):
                if unit in self.released:
                    continue
                records = [f.record(i) for f, i in self.needs[unit]]
                if all(r is not None for r in records):
                    self.released.add(unit)
                    out.append((unit, self.shards_of(records)))  # type: ignore[arg-type]
        return out

    def failed(self) -> str | None:
        """Why no more unit will come: an earlier stage failed."""
        for feed in self.feeds.values():
            if feed.failed:
                return f"stage {feed.name} failed: {feed.failed}"
        return None

    def finished(self) -> bool:
        """Every earlier stage finished: each commit it made is in the inbox already."""
        return bool(self.feeds) and all(feed.finished for feed in self.feeds.values())


def gated(
    slices: Iterator[WorkItem],
    gate: UnitGate | None,
    aborted: Callable[[], str | None],
) -> Iterator[WorkItem | None]:
    """The scheduler's work for a stage running beside others: its slices, each unit's once
    its gate releases it (with the shards it reads), None while a unit waits (the scheduler
    asks again on its next loop); StageBesideFailed once `aborted()` says a stage beside it
    failed, or an earlier stage it reads did; JobFailed when the earlier stages finished
    without a unit it reads."""
    if gate is None:
        for item in slices:
            reason = aborted()
            if reason:
                raise StageBesideFailed(reason)
            yield item
        return
    held: dict[int, list[WorkItem]] = {}
    for item in slices:
        held.setdefault(item.unit_index, []).append(item)
    ready: deque[WorkItem] = deque()
    while held or ready:
        reason = aborted()
        if reason:
            raise StageBesideFailed(reason)
        if not ready:
            finished = gate.finished()  # read first: every commit before it is queued
            for unit, shards in gate.release():
                for item in held.pop(unit, ()):
                    item.payload = dataclasses.replace(item.payload, earlier_shards=shards)
                    ready.append(item)
            if not ready and held:
                reason = gate.failed()
                if reason:
                    raise StageBesideFailed(reason)
                if finished:
                    raise JobFailed(
                        f"unit {min(held)} of stage {held[min(held)][0].payload.stage_key}"
                        " reads earlier units that were never committed"
                    )
        if ready:
            yield ready.popleft()
            continue
        yield None
