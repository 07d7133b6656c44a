"""The scheduling policy under a simulated engine: ordering, no barrier, retries, failing fast."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from fake_backend import FakeBackend

from synth_ray.engine.requests import EngineRequest, EngineResult, SamplingSpec
from synth_ray.runtime.scheduler import JobFailed, Scheduler, SchedulerSettings, WorkItem

SAMPLING = SamplingSpec(0.0, 1.0, 8)


def work(n: int) -> list[WorkItem]:
    return [
        WorkItem(EngineRequest(f"r{i}", [1] * (i % 7 + 1), SAMPLING, i, 8), unit_index=i // 10)
        for i in range(n)
    ]


def run(backend: FakeBackend, items: list[WorkItem], clock=None, **settings) -> Counter[str]:
    got: Counter[str] = Counter()
    results: dict[str, EngineResult] = {}

    def sink(item: WorkItem, result: EngineResult) -> None:
        assert item.request.request_id == result.request_id
        got[result.request_id] += 1
        results[result.request_id] = result

    kwargs = {"poll_interval_s": 0.0, **settings}
    scheduler = Scheduler(
        backend,
        iter(items),
        sink,
        SchedulerSettings(**kwargs),
        **({"clock": clock} if clock else {}),
    )
    scheduler.run()
    run.results = results  # type: ignore[attr-defined]
    run.scheduler = scheduler  # type: ignore[attr-defined]
    return got


def test_every_request_answered_exactly_once_across_replicas():
    backend = FakeBackend()
    got = run(backend, work(500), replicas=4, batch_size=7, max_in_flight=40)
    assert set(got) == {f"r{i}" for i in range(500)}
    assert set(got.values()) == {1}
    assert {rid for rid, _, _ in backend.submitted} == {0, 1, 2, 3}


def test_in_flight_cap_is_respected_and_queue_kept_full():
    backend = FakeBackend(latency_polls=5)
    run(backend, work(400), replicas=2, batch_size=8, max_in_flight=32)
    assert max(backend.max_outstanding_seen.values()) <= 32
    # the cap was actually reached: replicas were kept full, not fed one batch at a time
    assert min(backend.max_outstanding_seen.values()) == 32


def refills(backend: FakeBackend) -> list[int]:
    """For each first submission after a batch completed: how many batches were then still in
    flight on that replica. A scheduler with a barrier waits for all of them (0 every time)."""
    found, last_served = [], 0
    for _, served, in_flight in backend.submit_log:
        if served > last_served:
            found.append(in_flight)
            last_served = served
    return found


def test_no_batch_barrier_new_batches_sent_while_others_decode():
    backend = FakeBackend(latency_polls=3)
    run(backend, work(200), replicas=1, batch_size=4, max_in_flight=16)
    assert len(backend.submitted) == 50
    assert backend.max_outstanding_seen[0] == 16
    # a new batch goes out as soon as one finishes, while others still decode
    after = refills(backend)
    assert len(after) >= 20 and all(n >= 1 for n in after), after


def test_dead_replica_is_replaced_and_its_requests_resent():
    backend = FakeBackend(die_after_batches={0: 3})
    got = run(backend, work(300), replicas=2, batch_size=5, max_in_flight=20)
    assert set(got) == {f"r{i}" for i in range(300)} and set(got.values()) == {1}
    assert all(r.error is None for r in run.results.values())  # type: ignore[attr-defined]
    assert backend.started == [0, 1, 2]  # replica 0 replaced by 2
    assert run.scheduler.requests_resent > 0  # type: ignore[attr-defined]


def test_poison_request_becomes_an_error_row_not_a_failed_job():
    backend = FakeBackend(poison_request="r17")
    got = run(
        backend,
        work(60),
        replicas=1,
        batch_size=4,
        max_in_flight=8,
        max_attempts=3,
        max_replica_restarts=5,
    )
    assert set(got.values()) == {1} and len(got) == 60
    results = run.results  # type: ignore[attr-defined]
    assert "lost with its replica 3 times" in results["r17"].error
    # on its last attempt the poison row runs alone, so its batch-mates survive
    assert {rid for rid, r in results.items() if r.error} == {"r17"}


def test_engine_that_cannot_start_fails_fast_with_reason():
    backend = FakeBackend(start_failure="engine.model /nope: no such model folder")
    with pytest.raises(JobFailed, match="failed to start: engine.model /nope"):
        run(backend, work(10), replicas=3)


def test_replicas_never_ready_time_out_naming_resources():
    backend = FakeBackend(never_ready=True)
    ticks = itertools.count(step=10.0)
    with pytest.raises(JobFailed, match=r"within 30s.*needs \{'GPU': 1\}"):
        run(backend, work(10), clock=lambda: next(ticks), replicas=1, start_timeout_s=30)


def test_all_replicas_dying_beyond_restart_budget_fails_job():
    backend = FakeBackend(die_after_batches={i: 0 for i in range(10)})
    with pytest.raises(JobFailed, match="all generator replicas died"):
        run(backend, work(50), replicas=1, max_replica_restarts=2, max_attempts=100)


def test_empty_work_finishes_immediately():
    assert run(FakeBackend(), [], replicas=2) == Counter()


class Deadline(Exception):
    """The virtual clock passed the test's limit: the job would have waited forever."""


def clock_until(backend: FakeBackend, limit_s: float):
    from fake_backend import VirtualClock

    backend.clock = VirtualClock()

    def now() -> float:
        if backend.clock.now > limit_s:
            raise Deadline(f"still running at t={backend.clock.now:.0f}s")
        return backend.clock.now

    return now


STALL = {"poll_interval_s": 1.0, "stall_timeout_s": 300, "probe_interval_s": 10}


@pytest.mark.parametrize("detect", [True, False])
def test_engine_that_stops_answering_is_replaced_and_its_work_resent(detect):
    # the measured case of issue 11: an engine that stops answering after ~150 requests
    # while its process stays alive, 2 replicas, 600 requests
    backend = FakeBackend(hang_after_batches={0: 150 // 5})
    clock = clock_until(backend, 20_000)
    settings = {**STALL, "stall_timeout_s": 300 if detect else None}
    if not detect:
        with pytest.raises(Deadline):
            run(backend, work(600), clock=clock, replicas=2, batch_size=5, **settings)
        return
    got = run(
        backend, work(600), clock=clock, replicas=2, batch_size=5, max_in_flight=20, **settings
    )
    assert set(got) == {f"r{i}" for i in range(600)} and set(got.values()) == {1}
    assert all(r.error is None for r in run.results.values())  # type: ignore[attr-defined]
    scheduler = run.scheduler  # type: ignore[attr-defined]
    assert (
        len(scheduler.stalls) == 1 and "replica 0 stalled: no progress for" in scheduler.stalls[0]
    )
    assert backend.stopped[0] == 0 and backend.started == [0, 1, 2]
    assert scheduler.requests_resent > 0 and backend.probes > 0
    # declared within one probe interval of the timeout, not long after
    quiet = float(scheduler.stalls[0].split("no progress for ")[1].split("s")[0])
    assert 300 < quiet <= 300 + STALL["probe_interval_s"] + 2 * STALL["poll_interval_s"]


@pytest.mark.parametrize("blocked_s", [0.0, 25.0])
def test_busy_replica_is_never_stalled_by_a_blocked_driver_or_a_late_check(blocked_s):
    """Batches outlast the stall timeout, so only probe answers show progress, and the probe
    interval equals the timeout. A check a little late, or a driver loop blocked for longer
    than the timeout (a diversity decision, GC, a loaded machine), must not count as the
    replica's quiet time: only a probe sent after the window began and answered unchanged
    does. Fails when quiet time is measured on the driver's clock alone."""
    backend = FakeBackend(latency_polls=40)
    backend.clock = clock = __import__("fake_backend").VirtualClock()
    ticks = itertools.count()

    def blocked_driver(_scheduler: Scheduler) -> None:
        if blocked_s and next(ticks) % 7 == 6:
            clock.advance(blocked_s)

    got: Counter[str] = Counter()
    settings = SchedulerSettings(
        replicas=2, batch_size=5, poll_interval_s=1.3, stall_timeout_s=10, probe_interval_s=10
    )
    scheduler = Scheduler(
        backend,
        iter(work(40)),
        lambda item, result: got.update([result.request_id]),
        settings,
        clock=clock,
        on_tick=blocked_driver,
    )
    scheduler.run()
    assert len(got) == 40 and set(got.values()) == {1}
    assert scheduler.stalls == [] and backend.started == [0, 1]


def test_slow_but_busy_replica_is_not_stalled():
    # each batch takes 500 virtual seconds, longer than the stall timeout, but its engine's
    # progress value keeps changing, so nothing is declared stalled
    backend = FakeBackend(latency_polls=500)
    clock = clock_until(backend, 50_000)
    got = run(backend, work(40), clock=clock, replicas=2, batch_size=5, **STALL)
    assert set(got.values()) == {1} and len(got) == 40
    assert run.scheduler.stalls == [] and backend.started == [0, 1]  # type: ignore[attr-defined]
    # the same batches and settings, one replica's progress frozen from its first batch on:
    # that one is taken for stalled, so above it was the progress that kept them alive
    # (the real engine's progress value is checked on a long batch in
    # test_end_to_end.py::test_the_progress_probe_counts_tokens_while_a_long_batch_decodes)
    frozen = FakeBackend(latency_polls=500, hang_after_batches={0: 0})
    got = run(frozen, work(40), clock=clock_until(frozen, 50_000), replicas=2, batch_size=5,
              **STALL)  # fmt: skip
    assert set(got.values()) == {1} and len(got) == 40
    assert len(run.scheduler.stalls) >= 1 and frozen.started[:2] == [0, 1]  # type: ignore[attr-defined]


def test_request_that_hangs_its_engine_ends_as_an_error_row():
    backend = FakeBackend(hang_request="r23")
    clock = clock_until(backend, 50_000)
    got = run(
        backend,
        work(60),
        clock=clock,
        replicas=2,
        batch_size=4,
        max_in_flight=8,
        max_replica_restarts=3,
        **STALL,
    )
    assert set(got.values()) == {1} and len(got) == 60
    results = run.results  # type: ignore[attr-defined]
    assert {rid for rid, r in results.items() if r.error} == {"r23"}
    assert "stalled" in results["r23"].error


def test_replica_stuck_starting_while_others_run_is_replaced():
    backend = FakeBackend(never_ready_ids={1}, latency_polls=20)
    clock = clock_until(backend, 50_000)
    got = run(
        backend,
        work(400),
        clock=clock,
        replicas=2,
        batch_size=5,
        max_in_flight=20,
        start_timeout_s=60,
        **STALL,
    )
    assert set(got.values()) == {1} and len(got) == 400
    scheduler = run.scheduler  # type: ignore[attr-defined]
    assert len(scheduler.stalls) == 1 and "replica 1 stalled: still starting" in scheduler.stalls[0]
    assert backend.started == [0, 1, 2] and 1 in backend.stopped
    assert {rid for rid, _, _ in backend.submitted} == {0, 2}


def test_stop_request_stops_dispatch_and_lets_work_in_flight_finish():
    from synth_ray.runtime.stopping import JobStopped, StopRequest

    backend = FakeBackend(latency_polls=3)
    clock = clock_until(backend, 10_000)
    stop = StopRequest(grace_s=60, clock=clock)
    got: Counter[str] = Counter()

    def sink(item: WorkItem, result: EngineResult) -> None:
        got[result.request_id] += 1
        if len(got) == 50:
            stop.request("SIGTERM")

    settings = SchedulerSettings(replicas=2, batch_size=5, max_in_flight=20, poll_interval_s=1.0)
    scheduler = Scheduler(backend, iter(work(600)), sink, settings, clock=clock, stop=stop)
    with pytest.raises(JobStopped, match="stopped by SIGTERM; work in flight finished"):
        scheduler.run()
    sent = {key for _, _, keys in backend.submitted for key in keys}
    assert set(got) == sent and set(got.values()) == {1}  # everything sent came back
    assert 50 < len(got) < 600  # the in-flight batches finished; nothing more was sent


@pytest.mark.parametrize("dies_after", [None, 7, 8, 9])
def test_a_stop_still_sends_the_writes_of_work_already_generated(dies_after):
    """With the diversity filter a unit commits only after a second item writes it (sent once
    the unit is decided): a stop must send those writes within its grace, not drop them, and
    re-send one whose replica died under it meanwhile."""
    from collections import deque

    from synth_ray.runtime.stopping import JobStopped, StopRequest

    deaths = {} if dies_after is None else {0: dies_after}
    backend = FakeBackend(latency_polls=3, die_after_batches=deaths)
    clock = clock_until(backend, 10_000)
    stop = StopRequest(grace_s=60, clock=clock)
    to_write: deque[WorkItem] = deque()
    generated: set[str] = set()
    written: set[str] = set()

    def sink(item: WorkItem, result: EngineResult) -> None:
        rid = result.request_id
        if rid.startswith("write-"):
            written.add(rid.removeprefix("write-"))
            return
        generated.add(rid)
        to_write.append(WorkItem(EngineRequest(f"write-{rid}", [1], SAMPLING, 0, 8), 0, safe=True))
        if len(generated) == 30:
            stop.request("SIGTERM")

    def items():
        fresh = iter(work(600))
        while True:
            if to_write:
                yield to_write.popleft()
            else:
                item = next(fresh, None)
                if item is None:
                    return
                yield item

    def finishing() -> list[WorkItem]:
        taken = list(to_write)
        to_write.clear()
        return taken

    settings = SchedulerSettings(replicas=2, batch_size=5, max_in_flight=20, poll_interval_s=1.0)
    scheduler = Scheduler(
        backend, items(), sink, settings, clock=clock, stop=stop, finishing=finishing
    )
    with pytest.raises(JobStopped, match="work in flight finished"):
        scheduler.run()
    assert 30 <= len(generated) < 600
    assert written == generated  # every generated item was written before the stop


@pytest.mark.parametrize("seed", range(40))
def test_a_write_failed_on_one_replica_goes_to_another_even_at_the_very_end(seed):
    """Replica 0's storage fails every write: each of its items is re-sent to replica 1, also
    after replica 1 ran out of work (it must be woken for the re-sent item, not left idle
    while the job waits forever)."""
    from synth_ray.runtime.scheduler import SliceWriteFailed

    backend = FakeBackend(seed=seed, latency_polls=seed % 4)
    clock = clock_until(backend, 5_000)
    got: Counter[str] = Counter()

    def sink(item: WorkItem, result: EngineResult) -> None:
        ran_on = next(r for r, _, keys in reversed(backend.submitted) if item.key in keys)
        if ran_on == 0:
            raise SliceWriteFailed(f"{item.key}: output /out: input/output error (EIO)")
        got[result.request_id] += 1

    settings = SchedulerSettings(replicas=2, batch_size=1, max_in_flight=1, poll_interval_s=1.0)
    items = work(40)
    Scheduler(backend, iter(items), sink, settings, clock=clock).run()
    assert set(got) == {item.key for item in items} and set(got.values()) == {1}
    assert any(r == 0 for r, _, _ in backend.submitted)


def test_a_suspect_whose_write_failed_runs_alone_on_a_replica_that_has_not_failed_it():
    """A slice already lost with replicas twice is run alone on a drained replica; when its
    write then fails there, it goes to the other replica, not back to the same one forever."""
    from synth_ray.runtime.scheduler import SliceWriteFailed

    backend = FakeBackend(latency_polls=1)
    clock = clock_until(backend, 5_000)
    got: Counter[str] = Counter()

    def sink(item: WorkItem, result: EngineResult) -> None:
        ran_on = next(r for r, _, keys in reversed(backend.submitted) if item.key in keys)
        if ran_on == 0 and item.key == "r0":
            raise SliceWriteFailed("r0: output /out: input/output error (EIO)")
        got[result.request_id] += 1

    items = work(6)
    items[0].attempts = 2  # the next failure makes it a suspect (max_attempts 3)
    settings = SchedulerSettings(replicas=2, batch_size=1, max_in_flight=1, poll_interval_s=1.0)
    Scheduler(backend, iter(items), sink, settings, clock=clock).run()
    assert got["r0"] == 1 and set(got) == {item.key for item in items}
    assert [r for r, _, keys in backend.submitted if "r0" in keys][-1] == 1


def test_stop_request_gives_up_on_work_in_flight_after_the_grace_period():
    from synth_ray.runtime.stopping import JobStopped, StopRequest

    backend = FakeBackend(hang_after_batches={0: 1, 1: 1})
    clock = clock_until(backend, 10_000)
    stop = StopRequest(grace_s=30, clock=clock)
    got: Counter[str] = Counter()

    def sink(item: WorkItem, result: EngineResult) -> None:
        got[result.request_id] += 1
        stop.request("SIGINT")

    settings = SchedulerSettings(replicas=2, batch_size=5, max_in_flight=20, poll_interval_s=1.0)
    scheduler = Scheduler(backend, iter(work(600)), sink, settings, clock=clock, stop=stop)
    with pytest.raises(JobStopped, match=r"grace period \(30s\) ran out with \d+ requests"):
        scheduler.run()
    assert 30 <= clock() < 40


def test_in_flight_follows_what_each_replicas_engine_decodes_at_once():
    """Without a configured cap, a replica is kept at twice its engine's max_num_seqs (an
    H100's offline vLLM decodes 1024 at once: a fixed 256 left its batch a quarter full)."""
    from synth_ray.runtime.backend import ReplicaReady
    from synth_ray.runtime.scheduler import in_flight_for

    assert in_flight_for({"max_num_seqs": 1024}) == 2048
    assert in_flight_for({"max_num_seqs": 64}) == 256
    assert in_flight_for({}) == 256 and in_flight_for({"max_num_seqs": None}) == 256

    class BigEngines(FakeBackend):
        def poll(self, timeout):
            events = super().poll(timeout)
            return [
                ReplicaReady(e.replica_id, e.info, {"max_num_seqs": 300})
                if isinstance(e, ReplicaReady)
                else e
                for e in events
            ]

    backend = BigEngines(latency_polls=5)
    run(backend, work(2000), replicas=1, batch_size=50)
    assert backend.max_outstanding_seen[0] == 600
    configured = BigEngines(latency_polls=5)
    run(configured, work(500), replicas=1, batch_size=10, max_in_flight=100)
    assert configured.max_outstanding_seen[0] == 100


def test_the_restart_budget_is_a_rate_not_a_lifetime_total():
    """One replica dying every hour or two of a long run is replaced every time: the budget
    (max_replica_restarts per replica per hour) refills, where a lifetime total of 1 would
    have failed the job at the second death."""
    from fake_backend import VirtualClock

    clock = VirtualClock()
    backend = FakeBackend(die_after_batches={i: 3 for i in range(6)}, clock=clock)
    got = run(
        backend,
        work(200),
        clock=clock,
        replicas=1,
        batch_size=5,
        max_in_flight=10,
        max_replica_restarts=1,
        max_attempts=100,
        poll_interval_s=600.0,  # each poll is ten minutes of the virtual clock
        probe_interval_s=1e9,
    )
    assert set(got.values()) == {1} and len(got) == 200
    assert run.scheduler.restarts >= 4 and run.scheduler.shrinks == []  # type: ignore[attr-defined]


def test_a_pool_past_its_budget_shrinks_with_a_warning():
    notices: list[str] = []
    backend = FakeBackend(die_after_batches={i: 0 for i in range(6)})
    scheduler = Scheduler(
        backend,
        iter(work(100)),
        lambda item, result: None,
        SchedulerSettings(replicas=4, max_replica_restarts=1, max_attempts=100, poll_interval_s=0),
        notice=notices.append,
    )
    scheduler.run()
    assert scheduler.restarts == 4 and len(scheduler.shrinks) == 2
    assert "2 of 4 replicas left" in scheduler.shrinks[-1]
    assert [n for n in notices if n.startswith("warning: replica")] == scheduler.shrinks
