"""The per-row work of a job, run next to the engine: read, expand, render, generate, parse, write.

    python -m pytest tests/test_slices.py   # runs slices through this with a simulated engine

A generator replica (runtime/generator_actor.py) owns one `SliceWorker` around its engine. For
each `SliceTask` it reads the slice's input rows, expands them with the stage's method, renders
and tokenizes every prompt (a prompt that does not fit `max_model_len` becomes an error row,
stage `prompt`, with its exact token count), sends all requests into the engine at once,
parses each completion, and writes the slice's data and error shards under their deterministic
names. It returns a `SliceDone` naming them; the unit is committed by the driver only when all
its slices are back, so a replica dying anywhere in here loses nothing that was committed.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from synth_ray.engine.requests import EngineRequest, EngineResult
from synth_ray.io.output_store import OutputStore, shard_name
from synth_ray.methods.base import Errored
from synth_ray.runtime.slices import SliceDone, SliceTask, StageSpec
from synth_ray.runtime.units import PendingUnit, UnitBuilder, collect_rows

T = TypeVar("T")
GenerateMany = Callable[[list[EngineRequest]], Awaitable[list[EngineResult]]]
_STAGES_KEPT = 4  # stage specs cached per replica (a multi-round method alternates a few)


class SliceWorker:
    def __init__(self, generate_many: GenerateMany) -> None:
        self.generate_many = generate_many
        self._stages: OrderedDict[str, StageSpec] = OrderedDict()
        self._cpu_lock = threading.Lock()

    def has_stage(self, key: str) -> bool:
        return key in self._stages

    def add_stage(self, spec: StageSpec) -> None:
        self._stages[spec.key] = spec
        self._stages.move_to_end(spec.key)
        while len(self._stages) > _STAGES_KEPT:
            self._stages.popitem(last=False)

    async def run(self, task: SliceTask) -> SliceDone:
        """Generate and write one slice. An engine failure propagates (the replica is replaced
        and the slice re-sent); a failure of the per-row code or of the output storage comes
        back as `SliceDone.error`, which fails the job with that reason: retrying it on
        another replica would fail the same way."""
        spec = self._stages[task.stage_key]
        try:
            pending = await self._cpu(lambda: self._build(spec, task))
        except Exception as err:
            return self._failed(task, "reading or rendering its rows", err)
        if pending.requests and task.fail_reason is None:
            results = await self.generate_many(pending.requests)
        else:
            results = []
        try:
            return await self._cpu(lambda: self._write(spec, task, pending, results))
        except Exception as err:
            return self._failed(task, "parsing or writing its rows", err)

    async def _cpu(self, work: Callable[[], T]) -> T:
        """Run CPU-bound per-row work in a thread, one at a time: the engine's output loop
        shares this event loop, and a tokenizer must not be used by two threads at once."""

        def locked() -> T:
            with self._cpu_lock:
                return work()

        return await asyncio.to_thread(locked)

    @staticmethod
    def _build(spec: StageSpec, task: SliceTask) -> PendingUnit:
        builder = UnitBuilder(
            spec.method, spec.renderer, spec.max_model_len, spec.sampling, spec.seed
        )
        return builder.build(task.as_unit(), spec.read(task.start, task.stop))

    @staticmethod
    def _write(
        spec: StageSpec, task: SliceTask, pending: PendingUnit, results: list[EngineResult]
    ) -> SliceDone:
        candidates = {c.row_id: c for c in pending.candidates}
        if task.fail_reason is not None:
            for request in pending.requests:
                width = candidates[request.request_id].width
                pending.outcomes[request.request_id] = [
                    Errored("generate", task.fail_reason)
                ] * width
        for result in results:
            pending.add_result(spec.method, candidates[result.request_id], result)
        out = collect_rows(pending, spec.annotate_nn)
        offset = None if task.whole_unit else task.start - task.unit_start
        name = shard_name(spec.stage, task.unit_index, offset)
        data_shard, error_shard = OutputStore(spec.output).write_shards(
            name, task.unit_index, out.rows, spec.schema, out.errors
        )
        return SliceDone(
            key=task.key,
            unit_index=task.unit_index,
            start=task.start,
            data_shard=data_shard,
            error_shard=error_shard,
            stats=out.stats.to_dict(),
            requests=len(pending.requests),
        )

    @staticmethod
    def _failed(task: SliceTask, doing: str, err: Exception) -> SliceDone:
        where = f"{socket.gethostname()}"
        error = f"{doing} failed on {where}: {type(err).__name__}: {err}".splitlines()[0][:500]
        return SliceDone(task.key, task.unit_index, task.start, "", None, {}, error=error)
