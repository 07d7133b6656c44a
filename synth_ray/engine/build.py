"""Which engine a replica runs: vLLM in this process on a CPU, the async engine elsewhere.

    python -m synth_ray.engine.build   # builds the engine a replica here would run, generates once

Its own module so that neither engine module imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from synth_ray.engine.openai_engine import Limiter
from synth_ray.engine.vllm_engine import EngineSettings, VllmEngine


def build_engine(
    settings: EngineSettings,
    limiter: Limiter | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> Any:
    """The engine a replica runs: a remote endpoint's client (engine/openai_engine.py, paying
    `limiter` before each request); on a CPU (one process, no tensor parallelism) vLLM's
    engine inside this process (engine/inprocess_engine.py: no second process importing vLLM
    and loading the model again, 8 s of a 2-core machine's replica start); elsewhere the
    async engine, whose separate engine core process overlaps scheduling with the GPU's
    work."""
    if settings.remote is not None:
        from synth_ray.engine.openai_engine import OpenAIEngine

        return OpenAIEngine(settings.model, settings.remote, limiter, count_tokens)
    from vllm.platforms import current_platform

    if current_platform.is_cpu() and settings.tensor_parallel_size == 1:
        from synth_ray.engine.inprocess_engine import InProcessEngine

        return InProcessEngine(settings)
    return VllmEngine(settings)


if __name__ == "__main__":
    import asyncio
    import os

    from synth_ray.engine.models import prepare_embedded_model
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.engine.requests import EngineRequest
    from synth_ray.engine.vllm_engine import cpu_engine_env

    os.environ.update(cpu_engine_env(2, len(os.sched_getaffinity(0))))
    model = str(prepare_embedded_model())
    ids = PromptRenderer.from_model(model).render([{"role": "user", "content": "Say hello."}])
    engine = build_engine(EngineSettings(model=model, args={"enforce_eager": True}))
    print(type(engine).__name__, engine.dtype_choice.reason)
    from synth_ray.engine.requests import SamplingSpec

    spec = SamplingSpec(temperature=0.0, top_p=1.0, max_tokens=16)
    print(asyncio.run(engine.generate_many([EngineRequest("r0", ids, spec, 0, 16)])))
    engine.shutdown()
