"""The per-row work of a job, run next to the engine: read, expand, render, generate, parse, write.

    python -m pytest tests/test_slices.py   # runs slices through this with a simulated engine

A generator replica (runtime/generator_actor.py) owns one `SliceWorker` around its engine. For
each `SliceTask` it reads the slice's input rows, expands them with the stage's method, renders
and tokenizes every prompt (a prompt that does not fit `max_model_len` becomes an error row,
stage `prompt`, with its exact token count), sends all requests into the engine at once,
parses each completion, and writes the slice's data and error shards under names that carry
this attempt (a late writer never replaces a committed shard). It returns a `SliceDone` naming them; the unit is committed by the driver only when all
its slices are back, so a replica dying anywhere in here loses nothing that was committed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from synth_ray.diversity.decide import nn_value
from synth_ray.engine.requests import EngineRequest, EngineResult
from synth_ray.io.inputs import Document, InputSpec
from synth_ray.io.output_store import (
    DATA_DIR,
    EMBEDDINGS_DIR,
    STAGING_DIR,
    OutputStore,
    new_attempt,
    shard_name,
)
from synth_ray.io.storage_errors import find_storage_error
from synth_ray.io.vectors import vectors_table
from synth_ray.runtime.slices import FinalizeTask, SliceDone, SliceTask, StageSpec
from synth_ray.runtime.stage_documents import check_unit_rows
from synth_ray.runtime.units import (
    NN_FIELD,
    PendingUnit,
    UnitBuilder,
    UnitRows,
    collect_rows,
    failed_unit,
    filtered_text,
)
from synth_ray.stats import UnitStats

T = TypeVar("T")
GenerateMany = Callable[[list[EngineRequest]], Awaitable[list[EngineResult]]]
# stage specs cached per replica, the least recently used evicted first: the stages running
# at once on one pool (a conversation's turns, each a stage) at least. One evicted is fetched
# again from the ref each call carries, and a batch holds its own specs while it runs.
_STAGES_KEPT = 32


class SliceWorker:
    def __init__(self, generate_many: GenerateMany) -> None:
        self.generate_many = generate_many
        self._stages: OrderedDict[str, StageSpec] = OrderedDict()
        self._cpu_lock = threading.Lock()
        self.steps_done = 0  # per-row work phases finished: progress the engine does not see

    def has_stage(self, key: str) -> bool:
        return key in self._stages

    def stage(self, key: str) -> StageSpec | None:
        """The cached spec of stage `key` (None: never added, or evicted)."""
        spec = self._stages.get(key)
        if spec is not None:
            self._stages.move_to_end(key)
        return spec

    def add_stage(self, spec: StageSpec) -> None:
        self._stages[spec.key] = spec
        self._stages.move_to_end(spec.key)
        while len(self._stages) > _STAGES_KEPT:
            self._stages.popitem(last=False)

    async def run(self, task: SliceTask | FinalizeTask, spec: StageSpec | None = None) -> SliceDone:
        """Generate and write one slice (or write a decided unit) of stage `spec` (default:
        the cached spec of the task's stage). An engine failure propagates (the replica is
        replaced and the slice re-sent); a failure of the per-row code or of the storage
        comes back as `SliceDone.error`, which fails the job with that reason: retrying it
        on another replica would fail the same way."""
        spec = spec or self._stages[task.stage_key]
        if isinstance(task, FinalizeTask):
            try:
                return await self._cpu(lambda: finalize_unit(spec, task))
            except Exception as err:
                return self._failed(task, "writing its filtered rows", err, writing=True)
        try:
            pending = await self._cpu(lambda: self._build(spec, task, self._step))
        except Exception as err:
            return self._failed(task, "reading or rendering its rows", err)
        results = await self.generate_many(pending.requests) if pending.requests else []
        try:
            done, texts = await self._cpu(lambda: self._write(spec, task, pending, results))
        except Exception as err:
            return self._failed(task, "parsing or writing its rows", err, writing=True)
        if spec.embedders is None:
            return done
        try:
            vectors = await self._embed(spec, task, texts)
        except Exception as err:
            return self._failed(task, "embedding its rows", err)
        return dataclasses.replace(done, vectors=vectors)

    async def _embed(self, spec: StageSpec, task: SliceTask, texts: list[str]) -> np.ndarray:
        """Vectors of `texts` from the stage's embedder actors, chunks spread over them; each
        chunk back counts as progress (a long wait on busy embedders is not a stall)."""
        embedders = spec.embedders or []
        first = zlib.crc32(task.key.encode())
        refs = [
            embedders[(first + n) % len(embedders)].encode.remote(texts[i : i + spec.embed_chunk])
            for n, i in enumerate(range(0, len(texts), spec.embed_chunk))
        ]
        parts = []
        for ref in refs:
            parts.append(await ref)
            self.steps_done += 1
        if not parts:
            return np.zeros((0, spec.embedding_dim), np.float16)
        return np.concatenate(parts).astype(np.float16)

    async def _cpu(self, work: Callable[[], T]) -> T:
        """Run CPU-bound per-row work in a thread, one at a time: the engine's output loop
        shares this event loop, and a tokenizer must not be used by two threads at once."""

        def locked() -> T:
            with self._cpu_lock:
                return work()

        try:
            return await asyncio.to_thread(locked)
        finally:
            self.steps_done += 1

    @staticmethod
    def _build(spec: StageSpec, task: SliceTask, step: Callable[[], None]) -> PendingUnit:
        """Read the slice's rows and render its prompts; `step` marks progress per row."""
        docs = spec.read_task(task, step)
        check_planned_rows(spec, task, docs, step)
        if task.fail_reason is not None:
            return failed_unit(spec.method, task.as_unit(), docs, task.fail_reason)
        builder = UnitBuilder(
            spec.method, spec.renderer, spec.max_model_len, spec.sampling, spec.seed
        )
        return builder.build(task.as_unit(), docs, step)

    def _step(self) -> None:
        """One piece of per-row work done (a checked program): progress the engine does not
        see, so a replica checking code while its engine idles is not taken for stalled."""
        self.steps_done += 1

    def _write(
        self, spec: StageSpec, task: SliceTask, pending: PendingUnit, results: list[EngineResult]
    ) -> tuple[SliceDone, list[str]]:
        """Parse and write the slice; a filtered slice's rows are staged, and the texts the
        diversity filter decides on are returned with their positions."""
        candidates = {c.row_id: c for c in pending.candidates}
        pairs = [(candidates[result.request_id], result) for result in results]
        spec.method.prepare_finish([(c, r) for c, r in pairs if r.error is None], self._step)
        for candidate, result in pairs:
            pending.add_result(spec.method, candidate, result)
        filtering = spec.embedders is not None
        out = collect_rows(
            pending,
            spec.annotate_nn or filtering,
            keep_dropped=spec.keep_dropped,
            splits=spec.method.splits,
        )
        rows = (task.start - task.unit_start, task.stop - task.unit_start)
        span = None if task.whole_unit else rows
        name = shard_name(spec.stage, task.unit_index, span, new_attempt(spec.run_id))
        store = OutputStore(spec.output)
        texts: list[str] = []
        decided = None
        if filtering:
            column = spec.method.diversity_column
            positions = []
            for position, row in enumerate(out.rows):
                text = filtered_text(row, column)
                if text is not None:
                    positions.append(position)
                    texts.append(text)
            decided = np.array(positions, dtype=np.int64)
            table = pa.Table.from_pylist(out.rows, schema=spec.schema)
            table = table.append_column(ROW_ID_COLUMN, pa.array(out.row_ids, pa.string()))
            data_shard = f"{STAGING_DIR}/{name}"
            store.write_table(data_shard, table)
        else:
            data_shard = store.write_data_shard(name, out.rows, spec.schema)
        done = SliceDone(
            key=task.key,
            unit_index=task.unit_index,
            start=task.start,
            data_shard=data_shard,
            stats=out.stats.to_dict(),
            decided=decided,
            **write_beside_data(store, spec, name, task.unit_index, out),
        )
        return done, texts

    @staticmethod
    def _failed(
        task: SliceTask | FinalizeTask, doing: str, err: Exception, writing: bool = False
    ) -> SliceDone:
        """`writing`: the failure was in writing the rows, so a storage error there is this
        replica's storage (re-sent elsewhere); elsewhere it is the job's (input, per-row code)."""
        where = f"{socket.gethostname()}"
        storage = find_storage_error(err)
        cause = storage or f"{type(err).__name__}: {err}"
        error = f"{doing} failed on {where}: {cause}".splitlines()[0][:500]
        start = task.start if isinstance(task, SliceTask) else -1
        return SliceDone(
            task.key,
            task.unit_index,
            start,
            "",
            None,
            {},
            error=error,
            storage_failed=writing and storage is not None,
        )


def write_beside_data(
    store: OutputStore, spec: StageSpec, name: str, unit_index: int, out: UnitRows
) -> dict[str, Any]:
    """Write a slice's error rows, its dropped rows (with `keep_dropped`) and its split rows
    under the data shard's `name`; returns the SliceDone fields naming them. A filtered slice
    writes these at once too: only its data/ rows wait for the unit's decision."""
    stage = spec.stage or spec.method.name
    return {
        "error_shard": store.write_error_shard(name, unit_index, out.errors),
        "dropped_shard": store.write_dropped_shard(name, unit_index, stage, out.dropped),
        "split_shards": store.write_split_shards(name, out.splits, spec.schema),
    }


def check_planned_rows(
    spec: StageSpec,
    task: SliceTask,
    docs: list[Document],
    step: Callable[[], None] | None = None,
) -> None:
    """Raise InputChangedError unless the slice's unit holds the rows it was planned with:
    its id is recomputed from the source ids read now (the whole unit's, for a slice of
    one). The input snapshot's sizes catch a file grown, cut, added or removed; this also
    catches one rewritten in place at the same size."""
    if not isinstance(spec.documents, InputSpec) or not spec.plan_key:
        return  # a later stage's rows: the driver's own, or checked by their reader
    whole = docs
    if not task.whole_unit:
        whole = spec.read(task.unit_start, task.unit_stop, task.unit_seek, step)
    check_unit_rows(spec.documents, spec.plan_key, task, task.unit_id, whole)


ROW_ID_COLUMN = "__synth_ray_row_id"  # staged rows only: each row's id, for the embeddings


def finalize_unit(spec: StageSpec, task: FinalizeTask) -> SliceDone:
    """Write a decided unit as one data shard (its staged rows less the dropped ones, kept
    rows annotated with `nn_similarity`) and one embeddings shard of its kept rows' vectors.
    The staged files stay until the stage ends, so a replica lost in here is simply replaced
    and the unit written again."""
    store = OutputStore(spec.output)
    tables = [store.location.read_table(name) for name in task.staged]
    staged = (
        pa.concat_tables(tables)
        if tables
        else spec.schema.append(pa.field(ROW_ID_COLUMN, pa.string())).empty_table()
    )
    keep = np.ones(len(staged), dtype=bool)
    keep[task.decided] = task.keep
    nn = staged.column("nn_similarity").to_pylist()
    kept_positions = task.decided[task.keep]
    for position, similarity in zip(kept_positions, task.nn_similarity[task.keep], strict=True):
        nn[position] = nn_value(similarity)
    row_ids = staged.column(ROW_ID_COLUMN).to_pylist()
    index = staged.schema.get_field_index("nn_similarity")
    table = staged.set_column(index, NN_FIELD, pa.array(nn, pa.float32()))
    table = table.drop_columns([ROW_ID_COLUMN]).filter(pa.array(keep))
    name = shard_name(spec.stage, task.unit_index, attempt=new_attempt(spec.run_id))
    data_shard = f"{DATA_DIR}/{name}"
    store.write_table(data_shard, table.cast(spec.schema))
    embedding_shard = f"{EMBEDDINGS_DIR}/{name}"
    kept_ids = [row_ids[p] for p in kept_positions]
    store.write_table(embedding_shard, vectors_table(kept_ids, task.kept_vectors))
    kept = UnitStats()  # the distributions of the rows the decision kept
    kept.observe_rows(table)
    return SliceDone(
        key=task.key,
        unit_index=task.unit_index,
        start=-1,
        data_shard=data_shard,
        error_shard=None,
        stats=kept.to_dict(),
        embedding_shard=embedding_shard,
    )
