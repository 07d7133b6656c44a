"""What a stage's replicas read their documents from, so the driver holds none of them.

    python -m pytest tests/test_slices.py tests/test_self_improve.py tests/test_preference.py

- `InputDocuments`: the job's input files; each replica reads its slice (from its unit's seek)
  and checks the rows are the planned ones (`check_unit_rows`).
- `UnsettledRows`: an earlier stage's input rows it did not settle (STaR's rationalize stage).
- `EarlierRows`: documents a method builds from an earlier stage's committed rows
  (preference's ratings).
- `InputWithEarlierRows`: documents a method builds from a unit's input rows together with
  what an earlier stage committed for them (MetaMath's answers).
The driver holds a `DocumentsByReference` for the last three and sends `by_reference()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from synth_ray.io.filesystem import Location, read_columns
from synth_ray.io.inputs import Document, InputChangedError, InputSpec, iter_document_range
from synth_ray.methods.stages import DocumentBuilder, JoinedDocumentBuilder
from synth_ray.plan import WorkUnit, unit_id_of
from synth_ray.runtime.slice_task import SliceTask


class InputDocuments:
    """A stage's documents read from the job's input files: generators read their own slices
    (`iter_document_range`), so the input must be reachable from every node that runs one."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        # every file's name, size and sampled digest (`identify_inputs`), when the job took it
        self.identity: list[list[Any]] | None = None

    def __call__(self) -> Iterator[Document]:
        return iter_document_range(self.spec, 0, None)


def check_unit_rows(
    input_spec: InputSpec, plan_key: str, task: SliceTask, unit_id: str, whole: list[Document]
) -> None:
    """Raise InputChangedError unless `whole` (the unit's documents) hash to `unit_id`."""
    check_rows(input_spec, plan_key, task.unit_index, task.unit_start, task.unit_stop, unit_id,
               whole)  # fmt: skip


def check_rows(
    input_spec: InputSpec,
    plan_key: str,
    index: int,
    start: int,
    stop: int,
    unit_id: str,
    whole: list[Document],
) -> None:
    """Raise InputChangedError unless `whole` (unit `index`'s documents, input rows [start,
    stop)) hash to `unit_id`."""
    ids = [doc.source_id for doc in whole]
    if unit_id_of(plan_key, index, start, stop, ids) != unit_id:
        raise InputChangedError(
            f"input.path {input_spec.path}: input rows {start}-{stop} "
            f"(unit {index}) are not the rows the job planned: the input changed "
            "while the job ran (or since it was planned); rerun once it is final, with "
            "--replan if it changed on purpose"
        )


def _shards(task: SliceTask, planned: dict[int, Any]) -> tuple[Any, ...]:
    """The earlier shards `task`'s unit reads: its own when the earlier stage ran beside this
    one (runtime/streaming.py), else those known when the stage was planned."""
    if task.earlier_shards is not None:
        return task.earlier_shards
    return planned.get(task.unit_index, ())


@dataclass(frozen=True)
class UnsettledRows:
    """A later stage's documents by reference: the input's rows of an earlier stage's units
    that the earlier stage did not settle (none of their source ids is in a data or error
    row that stage committed). The driver holds only shard names; each replica reads its
    unit's rows from the input (from the unit's seek) and the `source_id` column of the
    earlier unit's shards, and drops the settled ones."""

    spec: InputSpec
    output: Location
    settled_shards: dict[int, tuple[str, ...]]  # unit index -> the earlier unit's shards
    # the earlier stage's plan key and unit ids: the rows read are checked against them
    plan_key: str = ""
    earlier_ids: dict[int, str] = field(default_factory=dict)

    def read(self, task: SliceTask, step: Callable[[], None] | None = None) -> list[Document]:
        whole = list(
            iter_document_range(self.spec, task.unit_start, task.unit_stop, task.unit_seek)
        )
        earlier = self.earlier_ids.get(task.unit_index)
        if self.plan_key and earlier is not None:
            check_unit_rows(self.spec, self.plan_key, task, earlier, whole)
        settled: set[str] = set()
        for shard in _shards(task, self.settled_shards):
            table = self.output.read_table(shard, columns=["source_id"])
            settled.update(table.column("source_id").to_pylist())
        docs = []
        for doc in whole[task.start - task.unit_start : task.stop - task.unit_start]:
            if doc.source_id not in settled:
                docs.append(doc)
            if step is not None:
                step()
        return docs


@dataclass(frozen=True)
class EarlierRows:
    """A later stage's documents by reference, built from what an earlier stage committed:
    each unit reads the `columns` of its earlier units' data shards and `build(table,
    first_ordinal)` (a method's module-level function: it runs on the replica) turns them
    into documents numbered from the unit's first ordinal, at most one per ordinal of the
    unit. The driver holds only shard names."""

    output: Location
    shards: dict[int, tuple[str, ...]]  # unit index -> the earlier units' data shards
    columns: tuple[str, ...]
    build: DocumentBuilder

    def read(self, task: SliceTask, step: Callable[[], None] | None = None) -> list[Document]:
        shards = _shards(task, self.shards)
        table = read_columns([(self.output, shard) for shard in shards], self.columns)
        docs = []
        for doc in self.build(table, task.unit_start):
            if doc.ordinal >= task.unit_stop:
                raise AssertionError(f"unit {task.unit_index}: more documents than ordinals")
            if task.start <= doc.ordinal < task.stop:
                docs.append(doc)
            if step is not None:
                step()
        return docs


@dataclass(frozen=True)
class InputWithEarlierRows:
    """A later stage's documents by reference, built from a unit's input rows and what
    earlier stages committed for them: stage unit k is input unit k, whose rows [start, stop)
    it reads from the unit's seek (checked against the input plan's unit id), with the
    `columns` of the earlier stages' unit-k data shards (concatenated in their order);
    `build(rows, table)` (a method's module-level function: it runs on the replica) makes at
    most `per_row` documents per input row, numbered within [start * per_row, stop *
    per_row). The driver holds only shard names."""

    spec: InputSpec
    outputs: tuple[Location, ...]  # the earlier stages' folders
    shards: dict[int, tuple[tuple[int, str], ...]]  # unit index -> (folder, data shard)s
    columns: tuple[str, ...]
    build: JoinedDocumentBuilder
    per_row: int
    plan_key: str  # the input plan's
    unit_ids: dict[int, str]  # the input plan's

    def read(self, task: SliceTask, step: Callable[[], None] | None = None) -> list[Document]:
        start, stop = task.unit_start // self.per_row, task.unit_stop // self.per_row
        whole = list(iter_document_range(self.spec, start, stop, task.unit_seek))
        planned = self.unit_ids[task.unit_index]
        check_rows(self.spec, self.plan_key, task.unit_index, start, stop, planned, whole)
        shards = _shards(task, self.shards)
        table = read_columns([(self.outputs[i], shard) for i, shard in shards], self.columns)
        docs = []
        for doc in self.build(whole, table):
            if not task.unit_start <= doc.ordinal < task.unit_stop:
                raise AssertionError(f"unit {task.unit_index}: document {doc.ordinal} outside it")
            if task.start <= doc.ordinal < task.stop:
                docs.append(doc)
            if step is not None:
                step()
        return docs


RowsByReference = UnsettledRows | EarlierRows | InputWithEarlierRows


class DocumentsByReference:
    """The driver's handle on a later stage's documents by reference (`UnsettledRows`,
    `EarlierRows`): a DocumentSource whose replicas get `by_reference()` and read their own
    slices. Iterating it reads every row: for tests and small tools only."""

    def __init__(self, rows: RowsByReference, units: list[WorkUnit]) -> None:
        self.rows = rows
        self.units = units

    def by_reference(self) -> RowsByReference:
        return self.rows

    def __call__(self) -> Iterator[Document]:
        for unit in self.units:
            task = SliceTask("", unit.index, unit.unit_id, unit.start, unit.stop, unit.start,
                             unit.stop, None, unit.seek)  # fmt: skip
            yield from self.rows.read(task)
