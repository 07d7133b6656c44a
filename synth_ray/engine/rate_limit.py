"""A token bucket per limit (requests per minute, tokens per minute), shared by the replicas of a
remote engine's pool through one Ray actor (runtime/rate_limiter.py).

    python -m pytest tests/test_openai_engine.py -k bucket

Each bucket holds at most one minute's allowance and refills continuously, so a burst never
exceeds what the provider's own per-minute window accepts, and a steady stream runs at the
limit. `acquire` waits, without holding anything, until every bucket can pay; callers are
served in the order they asked (a big request is not starved by small ones).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Bucket:
    per_minute: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.per_minute / 60.0
        self.level = min(self.per_minute, self.level + (now - self.updated) * rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 now); an amount above a minute's allowance
        waits for a full bucket and then takes it all (a request that big still goes)."""
        amount = min(amount, self.per_minute)
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / (self.per_minute / 60.0)


class TokenBuckets:
    """Limits of requests and tokens per minute (None: that one unlimited)."""

    def __init__(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        now = clock()
        self.clock = clock
        self.sleep = sleep
        self.requests = (
            Bucket(requests_per_minute, requests_per_minute, now) if requests_per_minute else None
        )
        self.tokens = (
            Bucket(tokens_per_minute, tokens_per_minute, now) if tokens_per_minute else None
        )
        self._turn = asyncio.Lock()
        self.waited_s = 0.0  # how long callers were held, summed

    def _wait(self, tokens: int) -> float:
        now = self.clock()
        wait = 0.0
        for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait_for(amount))
        return wait

    def _take(self, tokens: int) -> None:
        if self.requests is not None:
            self.requests.level -= 1
        if self.tokens is not None:
            self.tokens.level -= min(tokens, self.tokens.per_minute)

    async def acquire(self, tokens: int) -> float:
        """Wait until one request of `tokens` tokens fits both limits, take it; returns the
        seconds waited."""
        started = self.clock()
        async with self._turn:
            while True:
                wait = self._wait(tokens)
                if wait <= 0:
                    self._take(tokens)
                    break
                await self.sleep(wait)
        waited = self.clock() - started
        self.waited_s += waited
        return waited

    def give_back(self, tokens: int) -> None:
        """Return tokens reserved but not used (the estimate was the request's maximum)."""
        if self.tokens is not None and tokens > 0:
            self.tokens.refill(self.clock())
            self.tokens.level = min(self.tokens.per_minute, self.tokens.level + tokens)
