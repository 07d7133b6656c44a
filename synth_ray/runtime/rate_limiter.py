"""The pool's one rate limiter: a Ray actor holding the token buckets every replica of a remote
engine's pool pays before each request (engine/rate_limit.py).

    python -m pytest tests/test_openai_engine.py -k limit

One actor per pool, so the limit holds across replicas and nodes (a provider counts a key's
requests, not a replica's); each acquire is one actor call, small beside a remote request.
"""

from __future__ import annotations

import uuid
from typing import Any

from synth_ray.engine.rate_limit import TokenBuckets


class RateLimiter:
    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.buckets = TokenBuckets(requests_per_minute, tokens_per_minute)

    async def acquire(self, tokens: int) -> float:
        return await self.buckets.acquire(tokens)

    def waited_s(self) -> float:
        return self.buckets.waited_s


def start_rate_limiter(
    requests_per_minute: float | None, tokens_per_minute: float | None
) -> tuple[str, Any]:
    """A named limiter actor (no CPU reserved) and its name, which replicas look it up by."""
    import ray

    name = f"synth-ray-rate-limit-{uuid.uuid4().hex[:12]}"
    actor = (
        ray.remote(RateLimiter)
        .options(name=name, num_cpus=0, max_concurrency=10_000, max_restarts=-1)
        .remote(requests_per_minute, tokens_per_minute)
    )
    return name, actor
