"""Stages sharing one pool's scheduler: a later stage's work streams in beside an earlier one's.

    python -m pytest tests/test_shared_scheduler.py

Two lanes on one simulated backend: the earlier stage's requests (a*), and a later stage
that makes one request (b*) from each of the earlier stage's results, as a judge rates
committed responses. Each lane's stage waits for it in a thread of its own, as run_together's
parts do.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import Counter

import pytest
from fake_backend import FakeBackend

from synth_ray.engine.requests import EngineRequest, EngineResult, SamplingSpec
from synth_ray.runtime.scheduler import JobFailed, Scheduler, SchedulerSettings, WorkItem
from synth_ray.runtime.shared_scheduler import Lane, SharedScheduler
from synth_ray.runtime.stopping import JobStopped, StopRequest
from synth_ray.runtime.streaming import StageBesideFailed, UnitFeed

SAMPLING = SamplingSpec(0.0, 1.0, 8)


def request(key: str, unit: int) -> WorkItem:
    return WorkItem(EngineRequest(key, [1, 2, 3], SAMPLING, unit, 8), unit_index=unit)


class Pipeline:
    """Stage a: `n` requests; stage b: one request per result of a, as each comes back."""

    def __init__(self, n: int, fail_a_after: int | None = None) -> None:
        self.n = n
        self.fail_a_after = fail_a_after
        self.got: dict[str, Counter[str]] = {"a": Counter(), "b": Counter()}
        self.errors: dict[str, list[str]] = {"a": [], "b": []}
        self.fed: queue.SimpleQueue[WorkItem] = queue.SimpleQueue()
        self.a_ended = threading.Event()

    def a_work(self):
        for i in range(self.n):
            if self.fail_a_after is not None and i == self.fail_a_after:
                raise ValueError("stage a's input is unreadable")
            yield request(f"a{i}", i)

    def b_work(self):
        made = 0
        while made < self.n:
            try:
                item = self.fed.get_nowait()
            except queue.Empty:
                yield None  # nothing to rate yet: a's results are still to come
                continue
            made += 1
            yield item

    def sink(self, stage: str):
        def take(item: WorkItem, result: EngineResult) -> None:
            assert item.request.request_id == result.request_id
            self.got[stage][result.request_id] += 1
            if result.error:
                self.errors[stage].append(result.request_id)
            if stage == "a":
                i = int(result.request_id[1:])
                self.fed.put(request(f"b{i}", i))

        return take


def run_lanes(pipeline: Pipeline, backend: FakeBackend, stop: StopRequest | None = None, **kw):
    """Both lanes on one shared scheduler, each waited on in its own thread; returns what each
    lane's wait raised (None: it finished)."""
    shared = SharedScheduler("default")
    settings = SchedulerSettings(**{"poll_interval_s": 0.0, **kw})

    def start(s: SharedScheduler) -> Scheduler:
        return Scheduler(
            backend, s.work(), s.sink, settings, split=s.split, on_exhausted=s.exhausted,
            finishing=s.finishing, on_tick=s.tick, notice=s.notice, stop=stop,
            fed_from_outside=True,
        )  # fmt: skip

    ended: list[Scheduler] = []
    outcome: dict[str, BaseException | None] = {}

    def stage(name: str, rank: int, work) -> None:
        lane = shared.add(Lane(rank, work, pipeline.sink(name)), start, ended.append)
        try:
            lane.wait()
            outcome[name] = None
        except BaseException as err:  # noqa: BLE001 - the test reads it
            outcome[name] = err

    threads = [
        threading.Thread(target=stage, args=("a", 0, pipeline.a_work())),
        threading.Thread(target=stage, args=("b", 1, pipeline.b_work())),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    shared.close()
    assert not any(t.is_alive() for t in threads), "a lane never ended"
    assert len(ended) == 1, "the shared scheduler did not end exactly once"
    return outcome


def stage_of(key: str) -> str:
    return key[0]


def test_a_later_stage_streams_beside_an_earlier_one_and_goes_first():
    """Every request of both stages answered once, each in its own lane; the later stage's
    first request went out while the earlier stage still had requests to send, and in any
    batch holding both, the later stage's requests come first."""
    pipeline = Pipeline(60)
    backend = FakeBackend(latency_polls=2)
    outcome = run_lanes(pipeline, backend, replicas=2, batch_size=4, max_in_flight=8)
    assert outcome == {"a": None, "b": None}
    assert pipeline.got["a"] == Counter({f"a{i}": 1 for i in range(60)})
    assert pipeline.got["b"] == Counter({f"b{i}": 1 for i in range(60)})
    batches = [keys for _, _, keys in backend.submitted]
    first_b = next(i for i, keys in enumerate(batches) if any(k[0] == "b" for k in keys))
    last_a = max(i for i, keys in enumerate(batches) if any(k[0] == "a" for k in keys))
    assert first_b < last_a / 2, "the later stage waited for the earlier one"
    mixed = [keys for keys in batches if len({stage_of(k) for k in keys}) == 2]
    assert mixed, "no batch held both stages: the replicas' room was not shared"
    for keys in mixed:
        stages = [stage_of(k) for k in keys]
        assert stages == sorted(stages, reverse=True), keys  # b's first


def test_a_lane_whose_work_fails_fails_itself_and_ends_the_others():
    """Stage a's input breaks after 5 requests: a's wait raises that error, b's a
    StageBesideFailed naming it, and the scheduler ends (close returns)."""
    pipeline = Pipeline(40, fail_a_after=5)
    outcome = run_lanes(pipeline, FakeBackend(), replicas=1, batch_size=2, max_in_flight=4)
    assert isinstance(outcome["a"], ValueError)
    assert isinstance(outcome["b"], StageBesideFailed)
    assert "stage a's input is unreadable" in str(outcome["b"])


def test_a_poison_request_ends_as_an_error_row_of_its_own_lane():
    """b7 kills every replica that runs it: it is retried, run alone, and ends as an error
    result in stage b's sink; stage a loses nothing and gets no error."""
    pipeline = Pipeline(20)
    backend = FakeBackend(poison_request="b7")
    outcome = run_lanes(
        pipeline, backend, replicas=2, batch_size=2, max_in_flight=4, max_attempts=3,
        max_replica_restarts=10,
    )  # fmt: skip
    assert outcome == {"a": None, "b": None}
    assert pipeline.errors == {"a": [], "b": ["b7"]}
    assert set(pipeline.got["a"].values()) == set(pipeline.got["b"].values()) == {1}
    assert len(pipeline.got["b"]) == 20


def test_a_stop_stops_every_lane():
    """A stop requested while both stages have work: each lane's wait raises JobStopped."""
    stop = StopRequest(grace_s=30)
    pipeline = Pipeline(200)
    answered = itertools.count()
    backend = FakeBackend()
    respond = backend._generate_many

    async def stop_midway(requests):
        if next(answered) == 10:
            stop.request("SIGTERM")
        return await respond(requests)

    backend._generate_many = stop_midway
    backend.worker.generate_many = stop_midway
    outcome = run_lanes(pipeline, backend, stop=stop, replicas=1, batch_size=2, max_in_flight=4)
    assert isinstance(outcome["a"], JobStopped) and isinstance(outcome["b"], JobStopped)
    assert 0 < sum(pipeline.got["a"].values()) < 200


def test_a_lane_added_after_the_scheduler_failed_ends_with_that_failure():
    shared = SharedScheduler("judge")
    backend = FakeBackend(start_failure="no GPU here")

    def start(s: SharedScheduler) -> Scheduler:
        return Scheduler(
            backend, s.work(), s.sink, SchedulerSettings(poll_interval_s=0.0),
            fed_from_outside=True,
        )  # fmt: skip

    first = shared.add(Lane(0, iter([request("a0", 0)]), lambda *_: None), start, lambda _: None)
    with pytest.raises(Exception, match="no GPU here"):
        first.wait()
    late = shared.add(Lane(1, iter([request("b0", 0)]), lambda *_: None), start, lambda _: None)
    with pytest.raises(StageBesideFailed, match="pool judge failed"):
        late.wait()
    shared.close()


def test_the_scheduler_ends_when_closed_even_with_no_replica_ready():
    """The lane's last result arrives, then its replica dies idle and no replacement becomes
    ready: closing ends the scheduler at once, without a failure (nothing was left to do)."""
    backend = FakeBackend(latency_polls=0)
    shared = SharedScheduler("default")
    settings = SchedulerSettings(poll_interval_s=0.0, start_timeout_s=1.0)

    def start(s: SharedScheduler) -> Scheduler:
        return Scheduler(
            backend, s.work(), s.sink, settings, fed_from_outside=s.fed_from_outside,
            work_closed=s.closed,
        )  # fmt: skip

    def last_result(item, result):  # on the scheduler's thread: its replica is lost now
        backend.never_ready_ids.add(1)
        backend._kill(0, "lost its node while idle")

    lane = shared.add(Lane(0, iter([request("a0", 0)]), last_result), start, lambda _: None)
    lane.wait()
    shared.close()
    assert shared._failure is None and backend.started == [0, 1]


def test_a_lane_waiting_on_nothing_fails_instead_of_hanging():
    """A lane not fed by a stage beside it whose work says 'later' while nothing is in
    flight would wait for good: the job fails, saying so."""
    shared = SharedScheduler("default")
    backend = FakeBackend()

    def start(s: SharedScheduler) -> Scheduler:
        return Scheduler(
            backend, s.work(), s.sink, SchedulerSettings(poll_interval_s=0.0),
            fed_from_outside=s.fed_from_outside, work_closed=s.closed,
        )  # fmt: skip

    def never():
        while True:
            yield None

    lane = shared.add(Lane(0, never(), lambda *_: None), start, lambda _: None)
    waited = threading.Thread(target=lambda: pytest.raises(JobFailed, lane.wait))
    waited.start()
    waited.join(10)
    assert not waited.is_alive() and isinstance(lane.error, JobFailed)
    assert "waits on results nothing will send" in str(lane.error)
    shared.close()


def test_a_stage_waiting_for_an_earlier_ones_plan_stops_when_told():
    feed = UnitFeed("out", "questions")

    def check():
        raise StageBesideFailed("a stage running beside this one failed (boom)")

    with pytest.raises(StageBesideFailed, match="boom"):
        feed.planned(check)
