"""The generator replica: a Ray async actor hosting one vLLM engine and the per-row work.

Ray runs many `run_slices` calls on it at once (an async actor), each awaiting its own
requests inside the one engine, so new slices enter the engine while earlier ones are still
decoding. Reading rows, rendering, tokenizing, parsing and writing shards happen here, next to
the engine (runtime/slice_worker.py), in a worker thread so the engine's event loop keeps
streaming; the driver only sends slice bounds and gets back shard names and counts.
Its engine processes die with it, however it dies (runtime/reaper.py), and run at normal CPU
priority rather than Ray's worker niceness (runtime/priority.py).
The model is resolved on the actor's node (the embedded model is converted there if that node
has not done it yet), so a cluster needs no shared model folder for the default.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from typing import Any

from synth_ray.engine.build import build_engine
from synth_ray.engine.models import resolve_model
from synth_ray.engine.openai_engine import Limiter
from synth_ray.engine.prompts import renderer_for
from synth_ray.engine.vllm_engine import EngineSettings
from synth_ray.runtime.priority import run_at_normal_priority
from synth_ray.runtime.reaper import start_reaper
from synth_ray.runtime.slice_worker import SliceWorker
from synth_ray.runtime.slices import FinalizeTask, SliceDone, SliceTask


def pool_limiter(name: str | None) -> Limiter | None:
    """`await limit(tokens)` through the pool's rate-limit actor (None: no limit)."""
    if name is None:
        return None
    import ray

    handle = ray.get_actor(name)

    async def limit(tokens: int) -> None:
        await handle.acquire.remote(tokens)

    return limit


class GeneratorActor:
    tensor_parallel_size = 1  # its engine's ranks (a subclass with its own engine keeps 1)

    def __init__(self, settings: EngineSettings) -> None:
        start_reaper()  # the engine's processes must not outlive this actor (see reaper.py)
        # before the engine spawns its processes, which inherit this priority
        self.niceness = run_at_normal_priority()
        configured_model = settings.tokenizer or settings.model
        if settings.remote is None:
            settings = dataclasses.replace(settings, model=resolve_model(settings.model))
            self.engine = build_engine(settings)
        else:  # the model is served elsewhere: its requests pay the pool's rate limit
            tokenizer = renderer_for(configured_model).tokenizer
            self.engine = build_engine(
                settings,
                limiter=pool_limiter(settings.limiter),
                count_tokens=lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
            )
        self.tensor_parallel_size = settings.tensor_parallel_size
        self.slices = SliceWorker(self.engine.generate_many)
        # Load the tokenizer slices render with now, not inside the first slice: a stage's
        # renderer unpickles to this same cached one (its source is the configured model).
        renderer_for(configured_model)

    async def ready(self) -> dict[str, Any]:
        """Answers once the engine is loaded: where the replica runs and what its engine runs
        (the dtype chosen on this node and why, the niceness of its processes)."""
        return {
            "where": f"{socket.gethostname()} pid {os.getpid()}",
            "dtype": self.engine.dtype_choice.dtype,
            "dtype_reason": self.engine.dtype_choice.reason,
            "niceness": self.niceness,
            "max_num_seqs": self.engine.max_num_seqs,
            "tensor_parallel_size": self.tensor_parallel_size,
        }

    async def run_slices(
        self, specs: list[tuple[str, Any]], tasks: list[SliceTask | FinalizeTask]
    ) -> list[SliceDone]:
        """Run slices of the stages in `specs`: (stage key, object ref of its StageSpec)
        pairs, each fetched once per replica and stage (inside a list, so Ray does not fetch
        it for every call). A batch holds slices of several stages where they share a pool."""
        held = {}  # this batch's specs, whatever the cache evicts meanwhile
        for key, ref in specs:
            spec = self.slices.stage(key)
            if spec is None:
                spec = await ref
                self.slices.add_stage(spec)
            held[key] = spec
        running = [
            asyncio.ensure_future(self.slices.run(task, held[task.stage_key])) for task in tasks
        ]
        try:
            return list(await asyncio.gather(*running))
        except BaseException:
            for other in running:  # a dead engine: the others must not write late shards
                other.cancel()
            raise

    async def progress(self) -> tuple[int, int, int]:
        """How far this replica got: (output tokens its engine generated in its lifetime,
        the engine's progress value, per-row phases finished). Cheap, answered on the actor's
        event loop; the driver's stall detection compares it between probes (an engine that
        stops answering leaves it unchanged), and the run's timeline reads its first figure."""
        return self.engine.output_tokens(), self.engine.progress(), self.slices.steps_done

    def pid(self) -> int:
        return os.getpid()
