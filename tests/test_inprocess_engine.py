"""The in-process engine's threading: requests from the event loop into a stepped engine.

    python -m pytest tests/test_inprocess_engine.py

vLLM's `LLMEngine` is replaced by a small stand-in with its interface (add_request, step,
abort_request, has_unfinished_requests), so each failure is injected exactly where it
happens; the real engine behind the same class runs in every end-to-end test on a CPU.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from synth_ray.engine.inprocess_engine import InProcessEngine
from synth_ray.engine.requests import EngineRequest, SamplingSpec
from synth_ray.engine.vllm_engine import EngineDead, EngineSettings

MAX_PROMPT = 8


class StandInEngine:
    """Decodes one token per step for every request; refuses prompts over MAX_PROMPT."""

    def __init__(self) -> None:
        self.remaining: dict[str, int] = {}
        self.aborted: list[str] = []
        self.fail_steps = threading.Event()
        self.threads: set[int] = {threading.get_ident()}
        self.output_processor = SimpleNamespace(request_states={})
        self.engine_core = SimpleNamespace(shutdown=lambda: None)

    def add_request(self, key: str, prompt: dict, params) -> str:
        if len(prompt["prompt_token_ids"]) > MAX_PROMPT:
            raise ValueError(f"prompt of {len(prompt['prompt_token_ids'])} tokens is too long")
        self.remaining[key] = params.max_tokens
        return key

    def has_unfinished_requests(self) -> bool:
        return bool(self.remaining)

    def abort_request(self, keys: list[str]) -> None:
        self.aborted.extend(keys)
        for key in keys:
            self.remaining.pop(key, None)

    def step(self) -> list:
        self.threads.add(threading.get_ident())
        if self.fail_steps.is_set():
            raise RuntimeError("kernel crashed")
        finished = []
        for key in list(self.remaining):
            self.remaining[key] -= 1
            if self.remaining[key] <= 0:
                del self.remaining[key]
                completion = SimpleNamespace(
                    index=0, text=f"answer to {key}", token_ids=[7] * 3, finish_reason="length"
                )
                finished.append(
                    SimpleNamespace(request_id=key, finished=True, outputs=[completion])
                )
        return finished


class StandInInProcessEngine(InProcessEngine):
    def __init__(self, engine: StandInEngine | Exception) -> None:
        self.stand_in = engine
        super().__init__(EngineSettings(model="stand-in"))

    def _build_engine(self) -> StandInEngine:
        if isinstance(self.stand_in, Exception):
            raise self.stand_in
        self.stand_in.threads = {threading.get_ident()}
        return self.stand_in


def request(name: str, tokens: int = 3, prompt: int = 4) -> EngineRequest:
    spec = SamplingSpec(temperature=0.0, top_p=1.0, max_tokens=tokens)
    return EngineRequest(name, list(range(prompt)), spec, 0, tokens)


async def within(awaitable, seconds: float = 30.0):
    return await asyncio.wait_for(awaitable, seconds)


def test_concurrent_requests_come_back_in_order_and_a_refused_one_is_an_error_row():
    stand_in = StandInEngine()
    engine = StandInInProcessEngine(stand_in)
    requests = [request("a", tokens=5), request("b", tokens=1), request("long", prompt=20)]
    requests.append(request("a", tokens=2))  # the same id twice is two requests
    results = asyncio.run(within(engine.generate_many(requests)))
    assert [r.request_id for r in results] == ["a", "b", "long", "a"]
    assert [r.error is None for r in results] == [True, True, False, True]
    assert "ValueError: prompt of 20 tokens is too long" in (results[2].error or "")
    assert results[0].text.startswith("answer to a#") and results[0].n_output_tokens == 3
    assert engine.finished_requests == 3 and engine.finished_tokens == 9
    # built and stepped on one thread, not the caller's: vLLM's CPU worker sets up the OpenMP
    # threads of the thread that loads the model
    assert len(stand_in.threads) == 1 and threading.get_ident() not in stand_in.threads
    engine.shutdown()


async def in_the_engine(stand_in: StandInEngine, timeout_s: float = 10) -> None:
    """Until the engine holds a request (added by its step thread), with a timeout."""
    deadline = time.monotonic() + timeout_s
    while not stand_in.remaining:
        assert time.monotonic() < deadline, "the request never reached the engine"
        await asyncio.sleep(0.001)


def test_a_failed_step_fails_every_request_in_flight_and_every_later_one():
    stand_in = StandInEngine()
    engine = StandInInProcessEngine(stand_in)

    async def scenario() -> None:
        waiting = asyncio.ensure_future(engine.generate_many([request("x", tokens=10**9)]))
        await in_the_engine(stand_in)
        stand_in.fail_steps.set()
        with pytest.raises(EngineDead, match="kernel crashed"):
            await within(waiting)
        with pytest.raises(EngineDead, match="kernel crashed"):
            await within(engine.generate_one(request("late")))

    asyncio.run(scenario())
    engine.shutdown()


def test_a_cancelled_request_is_aborted_in_the_engine():
    stand_in = StandInEngine()
    engine = StandInInProcessEngine(stand_in)

    async def scenario() -> None:
        slow = asyncio.ensure_future(engine.generate_one(request("slow", tokens=10**9)))
        await in_the_engine(stand_in)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        quick = await within(engine.generate_one(request("quick", tokens=2)))
        assert quick.error is None

    asyncio.run(scenario())
    assert [key.split("#")[0] for key in stand_in.aborted] == ["slow"]
    assert not stand_in.remaining
    engine.shutdown()


def test_an_engine_that_cannot_be_built_raises_in_the_constructor():
    with pytest.raises(OSError, match="no weights"):
        StandInInProcessEngine(OSError("no weights in the model folder"))
