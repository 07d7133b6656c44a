"""Replicas move from a pool idle for lack of input to a pool whose replicas are all busy.

    python -m pytest tests/test_balancer.py

The policy (PoolBalancer) on stand-in schedulers and a virtual clock; a scheduler giving back
an idle replica; then a preference job whose judge pool starves while its generator is busy,
on simulated engines.
"""

from __future__ import annotations

import queue
import threading
import time
from types import SimpleNamespace

from fake_backend import FakeBackend
from test_pools import backends, pool_config
from test_preference import read_pairs

from synth_ray.config import validate_config
from synth_ray.engine.requests import EngineRequest, SamplingSpec
from synth_ray.runtime.balancer import PoolBalancer, PoolState
from synth_ray.runtime.job import run_job
from synth_ray.runtime.scheduler import Scheduler, SchedulerSettings, WorkItem


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class StandIn:
    """What the balancer reads of a scheduler, and what it asks of one."""

    def __init__(self, replicas: int, starved_since=None, saturated_since=None) -> None:
        self.live_replicas = self.wanted_replicas = replicas
        self.starved_since = starved_since
        self.saturated_since = saturated_since
        self.released = 0
        self.asked = 0

    def release_idle_replica(self) -> None:
        self.asked += 1

    def grow_to(self, replicas: int) -> None:
        self.wanted_replicas = max(self.wanted_replicas, replicas)


def balancer_of(pools: dict[str, PoolState], clock: Clock) -> PoolBalancer:
    lines: list[str] = []
    balancer = PoolBalancer(lambda: pools, after_s=30, clock=clock, notice=lines.append)
    balancer.lines = lines  # type: ignore[attr-defined]
    return balancer


def test_a_replica_moves_only_once_one_pool_starved_and_another_was_busy_long_enough():
    clock = Clock()
    judge = StandIn(2, starved_since=clock.now)
    generator = StandIn(1, saturated_since=clock.now)
    balancer = balancer_of(
        {"judge": PoolState(judge, None, 2), "default": PoolState(generator, None, 2)}, clock
    )
    clock.now += 29
    balancer.step()
    assert judge.asked == 0  # not yet: 29 s of 30
    clock.now += 1
    balancer.step()
    assert judge.asked == 1 and generator.wanted_replicas == 1  # asked; not given back yet
    balancer.step()
    assert generator.wanted_replicas == 1
    judge.released = 1  # its loop stopped an idle replica
    balancer.step()
    assert generator.wanted_replicas == 2
    assert balancer.lines == [  # type: ignore[attr-defined]
        "pool judge had a replica idle for lack of input for 30s: it gave it back, and pool "
        "default, all of whose replicas were busy, grows to 2"
    ]
    clock.now += 10
    balancer.step()
    assert judge.asked == 1  # the next move waits until this one settled (30 s)


def test_no_move_without_room_a_fit_or_a_second_replica_to_give():
    clock = Clock()
    since = clock.now - 60
    gpu = SimpleNamespace(num_cpus=1, num_gpus=1)
    two_gpus = SimpleNamespace(num_cpus=1, num_gpus=2)
    cases = [
        (StandIn(2, starved_since=since), StandIn(2, saturated_since=since), None, None, 2),
        (StandIn(1, starved_since=since), StandIn(1, saturated_since=since), None, None, 2),
        (StandIn(2, starved_since=since), StandIn(1, saturated_since=since), gpu, two_gpus, 2),
        (StandIn(2, starved_since=since), StandIn(1), None, None, 2),
    ]  # at its cap; the giver's last replica; a TP-2 replica in a 1-GPU hole; not busy
    for giver, taker, freed, needed, cap in cases:
        pools = {"a": PoolState(giver, freed, 2), "b": PoolState(taker, needed, cap)}
        balancer_of(pools, clock).step()
        assert giver.asked == 0
    giver, taker = StandIn(2, starved_since=since), StandIn(1, saturated_since=since)
    pools = {"a": PoolState(giver, gpu, 2), "b": PoolState(taker, gpu, 2)}
    balancer_of(pools, clock).step()
    assert giver.asked == 1  # the control: the same with a fit


def test_a_move_whose_giver_got_work_meanwhile_is_dropped():
    clock = Clock()
    judge = StandIn(2, starved_since=clock.now - 60)
    generator = StandIn(1, saturated_since=clock.now - 60)
    balancer = balancer_of(
        {"judge": PoolState(judge, None, 2), "default": PoolState(generator, None, 2)}, clock
    )
    balancer.step()
    assert judge.asked == 1
    clock.now += 30  # never released: its replicas all got work
    balancer.step()
    assert generator.wanted_replicas == 1 and balancer.moves == []


SAMPLING = SamplingSpec(0.0, 1.0, 4)


def test_a_scheduler_gives_back_only_an_idle_replica_and_never_its_last():
    """Two replicas, each holding one request: asked to give one back, the scheduler gives
    none. Once r1's replica is done, it gives that one back; asked again, nothing (its
    last)."""
    backend = FakeBackend(latency_polls=0)
    held = {"r0", "r1"}
    real_poll = backend.poll

    def poll(timeout):
        for rid, batches in backend.in_flight.items():  # held requests stay in flight
            backend.in_flight[rid] = [
                (1 if {r.request_id for r in requests} & held else p, b, requests)
                for p, b, requests in batches
            ]
        return real_poll(timeout)

    backend.poll = poll
    feed: queue.SimpleQueue[WorkItem | None] = queue.SimpleQueue()
    for key in ("r0", "r1"):
        feed.put(WorkItem(EngineRequest(key, [1, 2], SAMPLING, 0, 4), 0))

    def work():
        while True:
            item = feed.get()
            if item is None:
                return
            yield item
            while feed.empty():
                yield None

    settings = SchedulerSettings(
        replicas=2, batch_size=1, max_in_flight=1, min_batches_in_flight=1, poll_interval_s=0.0
    )
    scheduler = Scheduler(backend, work(), lambda *_: None, settings, fed_from_outside=True)
    thread = threading.Thread(target=scheduler.run)
    thread.start()

    def wait_for(condition):
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert condition()

    wait_for(lambda: len(backend.submitted) == 2)
    on = {keys[0]: replica for replica, _, keys in backend.submitted}
    assert set(on.values()) == {0, 1}  # one request on each replica
    scheduler.release_idle_replica()
    wait_for(lambda: not scheduler._release_asked)
    assert scheduler.released == 0 and backend.stopped == []  # both busy: none given back
    held.discard("r1")
    wait_for(lambda: not backend.in_flight[on["r1"]])
    scheduler.release_idle_replica()
    wait_for(lambda: scheduler.released == 1)
    assert backend.stopped == [on["r1"]]
    held.clear()
    wait_for(lambda: not backend.in_flight[on["r0"]])
    scheduler.release_idle_replica()  # idle, but its last replica: kept
    wait_for(lambda: not scheduler._release_asked)
    feed.put(None)
    thread.join(10)
    assert not thread.is_alive() and scheduler.released == 1 and backend.stopped == [on["r1"]]
    assert scheduler.wanted_replicas == 1


class HeldUntilGrown(FakeBackend):
    """The generator's engine: its batches finish only once its pool has grown to a second
    replica (or after 20 s, and the test fails), so its replicas stay busy and the judge's
    idle until the balancer moved one."""

    def poll(self, timeout):
        if len(self.started) < 2 and time.monotonic() < self.deadline:
            events, self.pending_events = self.pending_events, []
            time.sleep(0.002)
            return events
        return super().poll(timeout)


def test_an_idle_judge_pool_gives_a_replica_to_its_busy_generator(tmp_path, embedded_model):
    """The judge pool (2 replicas) has nothing to rate while the generator's one replica is
    full: after scheduler.rebalance_after_s the judge gives one back and the generator's pool
    (max_replicas 2) starts a second, which takes the responses still to write. The pairs are
    a plain run's, and the move is in the run's summary."""
    sequential = tmp_path / "sequential"
    sequential.mkdir()
    plain = pool_config(sequential, embedded_model, stream_stages=False)
    run_job(plain, show_progress=False, backend=backends(embedded_model, late=())[2])

    generator, _, pools = backends(embedded_model, late=())
    held = HeldUntilGrown(responder=generator, latency_polls=0)
    held.deadline = time.monotonic() + 20
    pools["default"] = held
    config = pool_config(
        tmp_path, embedded_model, max_in_flight_per_replica=1, batch_size=1,
        rebalance_after_s=0.3,
    ).model_dump(mode="json")  # fmt: skip
    config["resources"]["max_replicas"] = 2
    config["pools"]["judge"]["replicas"] = 2
    summary = run_job(validate_config(config), show_progress=False, backend=pools)
    assert held.started == [0, 1], "the generator's pool never grew"
    assert {replica for replica, _, _ in held.submitted} == {0, 1}
    assert pools["judge"].stopped[:1] in ([0], [1])
    assert (
        len(summary.replica_moves) == 1
        and "pool judge had a replica idle" in (summary.replica_moves[0])
    )
    assert read_pairs(tmp_path / "out") == read_pairs(sequential / "out")
