"""Replicas move from a pool starved of input to a pool with a backlog, while pools run at once.

    python -m pytest tests/test_balancer.py

While `run_together` runs stages of several pools, each pool's scheduler notes since when a
ready replica of it has had nothing to do while more work is to come (`starved_since`: a judge
waiting for responses) and since when all its replicas have been full (`saturated_since`: the
generator it waits for). Once one pool has starved and another has been saturated for
`scheduler.rebalance_after_s`, the starved pool gives one idle replica back (never its last,
never one holding work) and the saturated pool starts one in its place, up to its
`max_replicas` (a pool that gave replicas away may take them back up to its `replicas`). One
move at a time, each after the last has settled: a move costs an engine start (seconds on a
CPU, a minute or more on a GPU), so the wait keeps replicas from going back and forth.

A move is made only where the placement allows: the saturated pool's replica must need no more
CPUs or GPUs than the one given back frees (a tensor-parallel teacher's replica is not made of
one small model's GPU). Replicas of a pool that finished all its stages go to the others at once
(`PoolRunner._pool_done`), without waiting.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synth_ray.runtime.scheduler import Scheduler


@dataclass
class PoolState:
    """What the balancer needs of a running pool: its scheduler, its replica's resources
    (None: unknown, e.g. a simulated backend) and how far it may grow."""

    scheduler: Scheduler
    resources: Any
    cap: int


class PoolBalancer:
    """Moves replicas between the running pools `pools()` (pool name -> PoolState)."""

    def __init__(
        self,
        pools: Callable[[], dict[str, PoolState]],
        after_s: float,
        clock: Callable[[], float] = time.monotonic,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.pools = pools
        self.after_s = after_s
        self.clock = clock
        self.notice = notice or (lambda line: print(line, file=sys.stderr, flush=True))
        self.moves: list[str] = []
        # a move under way: (from, to, released before, asked at)
        self._moving: tuple[str, str, int, float] | None = None
        self._settled_at = float("-inf")  # when the last move settled

    def step(self) -> None:
        """Finish the move under way, or start one where a pool starved and another was
        saturated long enough."""
        now = self.clock()
        pools = self.pools()
        if self._moving is not None:
            self._finish_move(pools, now)
            return
        if now - self._settled_at < self.after_s:
            return
        for give, giver in pools.items():
            since = giver.scheduler.starved_since
            if since is None or now - since < self.after_s or giver.scheduler.live_replicas < 2:
                continue
            for take, taker in pools.items():
                busy = taker.scheduler.saturated_since
                if take == give or busy is None or now - busy < self.after_s:
                    continue
                if taker.scheduler.wanted_replicas >= taker.cap:
                    continue
                if not _fits(taker.resources, giver.resources):
                    continue
                self._moving = (give, take, giver.scheduler.released, now)
                giver.scheduler.release_idle_replica()
                return

    def _finish_move(self, pools: dict[str, PoolState], now: float) -> None:
        give, take, before, asked = self._moving  # type: ignore[misc]
        giver, taker = pools.get(give), pools.get(take)
        if giver is not None and giver.scheduler.released > before:
            self._moving = None
            self._settled_at = now
            if taker is None:
                return  # the stage that wanted it finished meanwhile: the replica stays free
            wanted = taker.scheduler.wanted_replicas
            if wanted >= taker.cap:
                return  # it grew into a finished pool's replicas meanwhile
            taker.scheduler.grow_to(wanted + 1)
            line = (
                f"pool {give} had a replica idle for lack of input for {self.after_s:g}s: "
                f"it gave it back, and pool {take}, all of whose replicas were busy, grows "
                f"to {taker.scheduler.wanted_replicas}"
            )
            self.moves.append(line)
            self.notice(line)
        elif giver is None or now - asked >= self.after_s:
            self._moving = None  # its replicas got work meanwhile: no move
            self._settled_at = now


def _fits(need: Any, freed: Any) -> bool:
    """Whether a replica needing `need` fits where one holding `freed` was."""
    if need is None or freed is None:
        return True
    return need.num_cpus <= freed.num_cpus and need.num_gpus <= freed.num_gpus


class BalancerThread:
    """Runs `balancer.step()` a few times a second until `stop()`."""

    def __init__(self, balancer: PoolBalancer) -> None:
        self.balancer = balancer
        self._done = threading.Event()
        every = min(1.0, balancer.after_s / 4)
        self._thread = threading.Thread(target=self._run, args=(every,), name="pool-balancer")
        self._thread.daemon = True
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._done.wait(every):
            try:
                self.balancer.step()
            except Exception as err:  # noqa: BLE001 - balancing is best effort
                print(f"warning: pools not rebalanced ({err})", file=sys.stderr)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
