"""Slices: what the driver sends a generator (a range of a unit's input rows), and what comes back.

    python -m pytest tests/test_slices.py

The driver never touches a row. It cuts each planned unit into one slice, or, near the end of
a stage, into several smaller ones (`cut_slices`: guided self-scheduling, so the last units
spread over every replica instead of leaving most of them idle), sends each `SliceTask` to a
replica, and gets back a `SliceDone`: the names of the shards the replica wrote and the
slice's row accounting. `SliceTracker` commits a unit (one record naming all its slices'
shards: the commit point) once every slice of it is back, in whatever order they finish.

A slice a dead replica held is re-sent whole; one that keeps killing replicas is cut in halves
(`split_slice`) and each half run alone, down to a single input row, which then ends as error
rows instead of failing the job (scheduler.py's suspect policy, with these as its hooks).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from synth_ray.diversity.decide import histogram
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import SamplingSpec
from synth_ray.io.filesystem import Location
from synth_ray.io.inputs import Document, InputSpec, Seek, iter_document_range
from synth_ray.io.manifest import UnitRecord
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.base import Method
from synth_ray.methods.stages import GeneratedDocuments
from synth_ray.plan import WorkUnit
from synth_ray.runtime.scheduler import JobFailed, SliceWriteFailed, WorkItem
from synth_ray.runtime.slice_task import SliceTask
from synth_ray.runtime.stage_documents import (
    EarlierRows,
    InputWithEarlierRows,
    UnsettledRows,
)
from synth_ray.stats import UnitStats

if TYPE_CHECKING:
    from synth_ray.runtime.diversity import DiversityFilter


@dataclass
class StageSpec:
    """Everything a generator needs to run any slice of one stage; sent once per replica.

    `documents` is the input spec (each replica reads its slices' rows itself), an earlier
    stage's unsettled rows or committed rows by reference (`UnsettledRows`, `EarlierRows`),
    documents made from their ordinal (`GeneratedDocuments`), or, for the later stages of multi-round methods that build their rows on the driver, the
    documents themselves."""

    key: str
    stage: str
    method: Method
    renderer: PromptRenderer
    documents: (
        InputSpec
        | UnsettledRows
        | EarlierRows
        | InputWithEarlierRows
        | GeneratedDocuments
        | list[Document]
    )
    sampling: SamplingSpec
    seed: int
    max_model_len: int
    output: Location
    annotate_nn: bool
    # diversity-filtered stages: the embedder actors (slices are staged and embedded next to
    # the generator; the driver decides each unit in order and a FinalizeTask writes it)
    embedders: list[Any] | None = None
    embedding_dim: int = 0
    embed_chunk: int = 1024
    run_id: str = ""  # the run's lease id: every shard a replica writes carries it
    keep_dropped: bool = False  # output.keep_dropped: dropped rows go to dropped/ too
    plan_key: str = ""  # the units' ids hash it first: a slice's rows are checked against it
    _ordinals: list[int] = field(default_factory=list, repr=False)

    def read(
        self,
        start: int,
        stop: int,
        seek: Seek | None = None,
        step: Callable[[], None] | None = None,
    ) -> list[Document]:
        """The documents with ordinals in [start, stop); from `seek` on (the unit's start)
        when given, so a read costs the unit, not the input before it. `step` is called for
        every document read: a long read is progress, never a stall."""
        if isinstance(self.documents, InputSpec):
            docs = []
            for doc in iter_document_range(self.documents, start, stop, seek):
                docs.append(doc)
                if step is not None:
                    step()
            return docs
        if not self._ordinals:
            self._ordinals = [d.ordinal for d in self.documents]
        lo = bisect.bisect_left(self._ordinals, start)
        hi = bisect.bisect_left(self._ordinals, stop)
        return self.documents[lo:hi]

    def read_task(self, task: SliceTask, step: Callable[[], None] | None = None) -> list[Document]:
        """The documents of `task`'s slice, whatever the stage's documents are."""
        if isinstance(self.documents, (UnsettledRows, EarlierRows, InputWithEarlierRows)):
            return self.documents.read(task, step)
        if isinstance(self.documents, GeneratedDocuments):
            return self.documents.read_range(task.start, task.stop)
        return self.read(task.start, task.stop, task.unit_seek, step)

    @property
    def schema(self) -> Any:
        from synth_ray.runtime.units import NN_FIELD

        schema = self.method.schema
        return schema.append(NN_FIELD) if self.annotate_nn else schema


@dataclass(frozen=True)
class FinalizeTask:
    """Write a diversity-filtered unit from its slices' staged rows: the rows at `decided`
    (positions in the unit's rows) the filter did not `keep` are dropped, the kept ones get
    their `nn_similarity`, and `kept_vectors` go to the unit's embeddings shard."""

    stage_key: str
    unit_index: int
    staged: tuple[str, ...]
    decided: np.ndarray  # int64 positions
    keep: np.ndarray  # bool per decided row
    nn_similarity: np.ndarray  # float32 per decided row
    kept_vectors: np.ndarray  # float16, one per kept decided row

    @property
    def key(self) -> str:
        return f"{self.stage_key}#{self.unit_index}:final"


@dataclass(frozen=True)
class SliceDone:
    """What a replica reports for a finished slice: small, whatever the slice's size (a
    filtered slice adds its rows' vectors: 2 bytes per dimension per row)."""

    key: str
    unit_index: int
    start: int
    data_shard: str  # for a filtered slice: its staged rows, not yet committed output
    error_shard: str | None
    stats: dict[str, Any]
    error: str | None = None  # the per-row code or the storage failed: the job stops
    storage_failed: bool = False  # the error is this replica's storage: re-sent elsewhere
    vectors: np.ndarray | None = None  # filtered slice: vectors of the rows to decide on
    decided: np.ndarray | None = None  # filtered slice: their positions among its rows
    embedding_shard: str | None = None  # a finalized unit's kept vectors
    dropped_shard: str | None = None  # output.keep_dropped: the slice's dropped rows
    split_shards: dict[str, str] = field(default_factory=dict)  # split -> the slice's shard


def cut_slices(
    units: Iterable[WorkUnit],
    stage_key: str,
    total_rows: int,
    replicas: int,
    min_slice_rows: int,
) -> Iterator[WorkItem]:
    """Slices of `units`, in order, as work items weighted by their estimated rows.

    Guided self-scheduling: a unit is cut into slices of about remaining / (2 x replicas) rows
    (never under `min_slice_rows`), where `remaining` counts the rows not yet handed out. Early
    in a job that is more than a unit, so a unit is one slice (one shard); in the last rounds
    slices shrink so every replica finishes at about the same time. One replica: never cut."""
    remaining = total_rows
    for unit in units:
        docs = unit.stop - unit.start
        pieces = 1
        if replicas > 1 and docs > 1:
            target = max(min_slice_rows, math.ceil(remaining / (2 * replicas)))
            pieces = min(docs, max(1, math.ceil(unit.estimated_rows / target)))
        remaining -= unit.estimated_rows
        bounds = [unit.start + (docs * i) // pieces for i in range(pieces + 1)]
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            task = SliceTask(
                stage_key, unit.index, unit.unit_id, unit.start, unit.stop, lo, hi, None, unit.seek
            )
            weight = max(1, round(unit.estimated_rows * (hi - lo) / docs))
            yield WorkItem(task, unit.index, weight=weight)


def split_slice(item: WorkItem) -> list[WorkItem]:
    """A suspect slice cut in two halves of its rows (itself when it is one row)."""
    task: SliceTask = item.payload
    if task.stop - task.start < 2 or task.fail_reason is not None:
        return [item]
    middle = (task.start + task.stop) // 2
    halves = [
        dataclasses.replace(task, stop=middle),
        dataclasses.replace(task, start=middle),
    ]
    weight = max(1, item.weight // 2)
    return [WorkItem(half, item.unit_index, item.attempts, weight) for half in halves]


def failed_slice(item: WorkItem, reason: str) -> WorkItem:
    """The slice again, to be written as error rows: it never reaches an engine."""
    task = dataclasses.replace(item.payload, fail_reason=reason)
    return WorkItem(task, item.unit_index, weight=1, safe=True)


OnUnitCommit = Callable[[UnitStats], None]
_EXHAUSTED: Any = object()


@dataclass
class _OpenUnit:
    unit: WorkUnit
    done: dict[int, SliceDone] = field(default_factory=dict)  # by first row
    covered: int = 0  # input rows of the unit its finished slices hold

    def merged(self) -> tuple[list[SliceDone], UnitStats, list[str]]:
        """The unit's slices in row order, their summed accounting, their error shards."""
        slices = [self.done[start] for start in sorted(self.done)]
        stats = UnitStats()
        for piece in slices:
            stats.merge(UnitStats.from_dict(piece.stats))
        return slices, stats, [s.error_shard for s in slices if s.error_shard]


def kept_aside(slices: list[SliceDone]) -> dict[str, Any]:
    """The unit record's fields naming its slices' dropped and split shards, in row order."""
    splits: dict[str, list[str]] = {}
    for piece in slices:
        for split, shard in piece.split_shards.items():
            splits.setdefault(split, []).append(shard)
    dropped = [s.dropped_shard for s in slices if s.dropped_shard]
    return {"dropped_shards": dropped, "split_shards": splits}


class SliceTracker:
    """Collects finished slices and commits each unit once all its rows are back."""

    def __init__(self, store: OutputStore, stage: str, on_commit: OnUnitCommit) -> None:
        self.store = store
        self.stage = stage
        self.on_commit = on_commit
        # told of each record once committed (the feed of stages running beside this one)
        self.on_record: Callable[[UnitRecord], None] | None = None
        self.open: dict[int, _OpenUnit] = {}

    def register(self, items: Iterable[WorkItem], units: dict[int, WorkUnit]) -> Iterator[WorkItem]:
        """Pass work items through, opening each unit the first time one of its slices goes
        (None: a unit waits on a stage running beside this one)."""
        for item in items:
            if item is None:
                yield item
                continue
            if item.unit_index not in self.open:
                self.open[item.unit_index] = _OpenUnit(units[item.unit_index])
            yield item

    def add_result(self, item: WorkItem, done: Any) -> None:
        if not isinstance(done, SliceDone):  # e.g. an EngineResult saying nothing came back
            raise JobFailed(f"slice {item.key}: {getattr(done, 'error', None) or done}")
        if done.error is not None:
            failure = SliceWriteFailed if done.storage_failed else JobFailed
            raise failure(f"unit {done.unit_index}: {done.error}")
        unit = self.open[done.unit_index]
        task: SliceTask = item.payload
        if done.start in unit.done:
            raise AssertionError(f"slice {done.key} came back twice")
        unit.done[done.start] = done
        unit.covered += task.stop - task.start
        if unit.covered == unit.unit.stop - unit.unit.start:
            self._commit(self.open.pop(done.unit_index))

    def _commit(self, unit: _OpenUnit) -> None:
        slices, stats, errors = unit.merged()
        record = UnitRecord(
            unit_index=unit.unit.index,
            unit_id=unit.unit.unit_id,
            data_shard=slices[0].data_shard,
            error_shard=errors[0] if errors else None,
            rows_out=stats.rows_out,
            stats=stats.to_dict(),
            stage=self.stage,
            more_data_shards=[s.data_shard for s in slices[1:]],
            more_error_shards=errors[1:],
            **kept_aside(slices),
        )
        self.store.commit(record)
        if self.on_record is not None:
            self.on_record(record)
        self.on_commit(stats)

    def check_done(self) -> None:
        if self.open:
            raise AssertionError(f"units {sorted(self.open)[:5]} never completed")

    def work(self, slices: Iterator[WorkItem]) -> Iterator[WorkItem | None]:
        """The scheduler's work: the slices (plus, when filtering, each decided unit's write)."""
        return slices

    def finishing(self) -> list[WorkItem]:
        """Items that only write rows already generated, taken out of `work` while a stop
        drains (the scheduler then sends nothing else); none without the filter."""
        return []


class FilteredSliceTracker(SliceTracker):
    """A diversity-filtered stage: slices come back staged with their rows' vectors; units are
    decided strictly in unit order (each decision sees exactly the rows kept before it, whoever
    generated them), and each decided unit is written by a replica (a FinalizeTask) and then
    committed with its kept rows' vectors, from which a resumed run rebuilds the filter."""

    def __init__(
        self,
        store: OutputStore,
        stage: str,
        on_commit: OnUnitCommit,
        diversity: DiversityFilter,
        stage_key: str,
        max_ahead: int = 64,
    ) -> None:
        """`max_ahead`: units whose slices are all back but that wait for an earlier unit's
        decision; at that many no new slice goes out (their vectors sit in this process)."""
        super().__init__(store, stage, on_commit)
        self.diversity = diversity
        self.stage_key = stage_key
        self.max_ahead = max_ahead
        self.order: deque[int] = deque()  # units registered, not yet decided
        self.complete: dict[int, _OpenUnit] = {}  # all slices back, waiting for their turn
        self.finalizing: dict[int, tuple[_OpenUnit, np.ndarray]] = {}
        self.to_write: deque[WorkItem] = deque()
        # decided units in decision order; each commits only after every earlier one, so the
        # committed units stay a prefix that a resumed run rebuilds the filter from
        self.to_commit: deque[int] = deque()
        self.written: dict[int, tuple[SliceDone, FinalizeTask]] = {}

    def register(self, items: Iterable[WorkItem], units: dict[int, WorkUnit]) -> Iterator[WorkItem]:
        for item in items:
            if item is not None and item.unit_index not in self.open:
                self.order.append(item.unit_index)
            yield from super().register([item], units)

    def work(self, slices: Iterator[WorkItem]) -> Iterator[WorkItem | None]:
        """Unit writes first, then new slices; None while only decisions are awaited, or
        while `max_ahead` units wait behind the unit to decide next (one slow unit must not
        pile up finished units and their vectors without bound: its own slices went out
        before any later unit's, so it is never kept waiting by this)."""
        while True:
            if self.to_write:
                yield self.to_write.popleft()
                continue
            if len(self.complete) >= self.max_ahead:
                yield None
                continue
            item = next(slices, _EXHAUSTED)
            if item is not None and item is not _EXHAUSTED:
                yield item
            elif item is None or self.order or self.finalizing:
                yield None  # (None from `slices`: a unit waits on a stage beside this one)
            else:
                return

    def finishing(self) -> list[WorkItem]:
        """The decided units' writes not yet handed out: a stop commits them in its grace."""
        items = list(self.to_write)
        self.to_write.clear()
        return items

    def add_result(self, item: WorkItem, done: Any) -> None:
        if isinstance(item.payload, FinalizeTask) and isinstance(done, SliceDone):
            if done.error is not None:
                failure = SliceWriteFailed if done.storage_failed else JobFailed
                raise failure(f"unit {done.unit_index}: {done.error}")
            self.written[done.unit_index] = (done, item.payload)
            while self.to_commit and self.to_commit[0] in self.written:
                index = self.to_commit.popleft()
                written, task = self.written.pop(index)
                unit, nn = self.finalizing.pop(index)
                self._commit_filtered(unit, written, task, nn)
            self._decide_ready()  # decisions held for a snapshot may go on
            return
        super().add_result(item, done)

    def _commit(self, unit: _OpenUnit) -> None:
        self.complete[unit.unit.index] = unit
        self._decide_ready()

    def _decide_ready(self) -> None:
        """Decide the units whose turn it is. When the filter wants a snapshot, decisions
        wait until every decided unit has committed (the index then holds exactly the
        committed units' vectors), the snapshot is taken, and they go on."""
        while self.order and self.order[0] in self.complete:
            if self.diversity.snapshot_due():
                if self.finalizing:
                    return
                self.diversity.take_snapshot(self._lease_check())
            self._decide(self.complete.pop(self.order.popleft()))

    def _decide(self, unit: _OpenUnit) -> None:
        slices, _, _ = unit.merged()
        positions, vectors, offset = [], [], 0
        for piece in slices:
            assert piece.decided is not None and piece.vectors is not None
            positions.append(piece.decided.astype(np.int64) + offset)
            vectors.append(piece.vectors)
            split_rows = sum(piece.stats.get("rows_by_split", {}).values())
            offset += piece.stats["rows_out"] - split_rows  # the rows staged: data/'s
        all_vectors = (
            np.concatenate(vectors) if vectors else np.zeros((0, self.diversity.dim), np.float16)
        )
        decision = self.diversity.decide_unit(all_vectors)
        task = FinalizeTask(
            stage_key=self.stage_key,
            unit_index=unit.unit.index,
            staged=tuple(piece.data_shard for piece in slices),
            decided=np.concatenate(positions) if positions else np.zeros(0, np.int64),
            keep=decision.keep,
            nn_similarity=decision.nn_similarity,
            kept_vectors=all_vectors[decision.keep],
        )
        self.finalizing[unit.unit.index] = (unit, decision.nn_similarity)
        self.to_commit.append(unit.unit.index)
        self.to_write.append(WorkItem(task, unit.unit.index, weight=1, safe=True))

    def _commit_filtered(
        self, unit: _OpenUnit, done: SliceDone, task: FinalizeTask, nn: np.ndarray
    ) -> None:
        slices, stats, errors = unit.merged()
        kept = UnitStats.from_dict(done.stats)
        stats.lengths, stats.categories = kept.lengths, kept.categories  # of the kept rows only
        dropped = int((~task.keep).sum())
        stats.rows_out -= dropped
        if dropped:
            stats.dropped["diversity"] += dropped
        stats.nn_histogram = histogram(nn)
        record = UnitRecord(
            unit_index=unit.unit.index,
            unit_id=unit.unit.unit_id,
            data_shard=done.data_shard,
            error_shard=errors[0] if errors else None,
            rows_out=stats.rows_out,
            stats=stats.to_dict(),
            stage=self.stage,
            embedding_shard=done.embedding_shard,
            more_error_shards=errors[1:],
            **kept_aside(slices),
        )
        self.store.commit(record)
        self.diversity.unit_committed(self.store.location.uri, self.stage, unit.unit.unit_id)
        if self.on_record is not None:
            self.on_record(record)
        self.on_commit(stats)

    def check_done(self) -> None:
        super().check_done()
        if self.order or self.complete or self.finalizing:
            raise AssertionError(f"units {list(self.order)[:5]} were never decided or written")
        # the stage's end: a resume of a later stage loads it
        self.diversity.take_snapshot(self._lease_check())

    def _lease_check(self) -> Callable[[], None] | None:
        lease = self.store.lease
        return lease.check if lease is not None else None
