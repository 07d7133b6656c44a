"""Pools: a generator's and a judge's engines at once, units streaming from one to the other.

    python -m pytest tests/test_pools.py

Each pool runs on its own simulated backend here (the real two-engine run from the CLI is
test_end_to_end.py's); the responses and ratings are the preference method's (ScriptedModel).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from conftest import Crash, crash_on_commit, model_alias
from fake_backend import FakeBackend
from test_preference import (
    RESPONSE_IDS,
    ScriptedModel,
    preference_config,
    read_pairs,
)

from synth_ray.config import validate_config
from synth_ray.errors import ConfigError
from synth_ray.io.output_store import OutputStore
from synth_ray.runtime.job import run_job
from synth_ray.runtime.streaming import UnitFeed, UnitGate, gated


class Judge(ScriptedModel):
    """Rates as ScriptedModel does, and says when it first rated."""

    def __init__(self, embedded_model: str) -> None:
        super().__init__(embedded_model)
        self.rated = threading.Event()

    def __call__(self, request):
        result = super().__call__(request)
        if request.request_id not in RESPONSE_IDS:
            self.rated.set()
        return result


class SlowGenerator(ScriptedModel):
    """Writes responses; those of `late` prompts wait (at most 15 s) until the judge has rated
    something. With stages one after another it never has, and the wait runs out."""

    def __init__(self, embedded_model: str, judge: Judge, late: set[str]) -> None:
        super().__init__(embedded_model)
        self.judge = judge
        self.late = late
        self.waits: list[bool] = []

    def __call__(self, request):
        if RESPONSE_IDS.get(request.request_id, ("",))[0] in self.late:
            self.waits.append(self.judge.rated.wait(15))
        return super().__call__(request)


def pool_config(tmp_path, embedded_model, **scheduler):
    judge = tmp_path / "judge-model"
    if not judge.exists():
        model_alias(embedded_model, judge)
    config = preference_config(tmp_path).model_dump(mode="json")
    config["preference"]["judge_pool"] = "judge"
    config["output"]["rows_per_shard"] = 1  # 7 units: the responses stream unit by unit
    config["pools"] = {"judge": {"engine": {"model": str(judge), "max_model_len": 2048}}}
    config["scheduler"] = {**config["scheduler"], **scheduler}
    return validate_config(config)


def backends(embedded_model, late=frozenset({"p5"})):
    judge = Judge(embedded_model)
    generator = SlowGenerator(embedded_model, judge, set(late))
    return (
        generator,
        judge,
        {
            "default": FakeBackend(responder=generator, latency_polls=0),
            "judge": FakeBackend(responder=judge, latency_polls=0),
        },
    )


def test_the_judge_rates_committed_units_while_the_generator_still_writes(tmp_path, embedded_model):
    """p5's responses are sent only after three units committed (at most 3 batches in flight
    with scheduler.max_in_flight_per_replica 1), and wait until the judge has rated: the judge's
    pool took the committed units while the generator's was still writing. The pairs are the
    sequential run's, exactly once, and the judge's rows name the judge pool's model."""
    sequential = tmp_path / "sequential"
    sequential.mkdir()
    config = pool_config(sequential, embedded_model, stream_stages=False)
    run_job(config, show_progress=False, backend=backends(embedded_model, late=())[2])
    expected = read_pairs(sequential / "out")
    assert sorted(expected) == ["p0", "p3", "p4", "p5"]

    generator, judge, pools = backends(embedded_model)
    config = pool_config(tmp_path, embedded_model, max_in_flight_per_replica=1, batch_size=1)
    summary = run_job(config, show_progress=False, backend=pools)
    assert generator.waits and all(generator.waits), "the judge rated nothing meanwhile"
    assert read_pairs(tmp_path / "out") == expected
    assert {p["judge_model"] for p in expected.values()} == {"judge-model"}
    assert {p["response_model"] for p in expected.values()} == {"SmolLM2-135M-Instruct"}
    stats = summary.stats
    assert stats["accounted"] and stats["rows_out"] == 4
    assert stats["dropped_by_filter"] == {"tie": 1, "too_few_rated": 1, "too_few_responses": 1}
    # each engine got only its own stage's requests
    assert all(r in RESPONSE_IDS for r in pools["default"].generated)
    assert not any(r in RESPONSE_IDS for r in pools["judge"].generated)


def test_stages_one_after_another_never_overlap(tmp_path, embedded_model):
    """The control: with scheduler.stream_stages off, the judge rates only once the generator
    has finished, so p5's responses wait out their 15 s for nothing (shortened here)."""
    generator, judge, pools = backends(embedded_model)
    judge.rated.wait = lambda timeout: judge.rated.is_set()  # noqa: ARG005 - no 15 s wait
    config = pool_config(tmp_path, embedded_model, stream_stages=False)
    run_job(config, show_progress=False, backend=pools)
    assert generator.waits and not any(generator.waits)


def test_killed_mid_pipeline_resumes_each_stage_exactly_once(tmp_path, embedded_model, monkeypatch):
    """A kill at the first rating commit, while the generator's units are still uncommitted:
    the rerun asks no committed response again, rates no committed unit again, and its pairs
    are a clean run's."""
    clean = tmp_path / "clean"
    clean.mkdir()
    run_job(
        pool_config(clean, embedded_model),
        show_progress=False,
        backend=backends(embedded_model, late=())[2],
    )
    expected = read_pairs(clean / "out")

    config = pool_config(tmp_path, embedded_model, max_in_flight_per_replica=1, batch_size=1)
    work = OutputStore(tmp_path / "out" / "stages")
    at_kill: list[int] = []

    def first_rating(record):
        if record.stage == "pairs":
            at_kill.append(len(work.committed("responses")))
            return True
        return False

    with monkeypatch.context() as patch:
        crash_on_commit(patch, first_rating)
        with pytest.raises(Crash):
            run_job(config, show_progress=False, backend=backends(embedded_model)[2])
    assert at_kill and at_kill[0] < 7, "killed after the generator finished: not mid-pipeline"
    committed = {r.unit_index for r in work.committed("responses").values()}

    _, _, pools = backends(embedded_model, late=())
    summary = run_job(config, show_progress=False, backend=pools)
    assert read_pairs(tmp_path / "out") == expected
    asked = {RESPONSE_IDS[r][0] for r in pools["default"].generated if r in RESPONSE_IDS}
    assert not asked & {f"p{i}" for i in committed}  # committed responses were not redone
    generated = pools["default"].generated + pools["judge"].generated
    assert len(generated) == len(set(generated))
    assert summary.units_skipped >= len(committed) and summary.stats["accounted"]


def test_a_pool_that_finished_gives_its_replicas_to_one_still_working(
    tmp_path, embedded_model, monkeypatch
):
    """The judge pool (max_replicas 2) grows by the generator's replica once the generator's
    pool finished, while units wait to be rated: its first rating waits for that (at most 3
    batches in flight, so 4 of the 7 units wait unsent)."""
    from synth_ray.runtime.scheduler import Scheduler

    asked = threading.Event()
    sizes: list[int] = []
    real_grow = Scheduler.grow_to

    def grow_to(self, replicas):
        sizes.append(replicas)
        real_grow(self, replicas)
        asked.set()

    monkeypatch.setattr(Scheduler, "grow_to", grow_to)
    _, judge, pools = backends(embedded_model, late=())
    rate = pools["judge"].responder

    def rate_once_asked(request):
        asked.wait(15)
        return rate(request)

    pools["judge"].responder = rate_once_asked
    config = pool_config(tmp_path, embedded_model, max_in_flight_per_replica=1, batch_size=1)
    config = config.model_dump(mode="json")
    config["pools"]["judge"]["max_replicas"] = 2
    run_job(validate_config(config), show_progress=False, backend=pools)
    assert sizes == [2] and pools["judge"].started == [0, 1]
    assert {replica for replica, _, _ in pools["judge"].submitted} == {0, 1}
    assert sorted(read_pairs(tmp_path / "out")) == ["p0", "p3", "p4", "p5"]


def test_a_scheduler_asked_to_grow_starts_a_replica_that_takes_work():
    """`grow_to` from outside the loop: the next loop starts the replica, and it gets work;
    a replica lost afterwards is not brought back by the growth."""
    from fake_backend import VirtualClock

    from synth_ray.engine.requests import EngineRequest, SamplingSpec
    from synth_ray.runtime.scheduler import Scheduler, SchedulerSettings, WorkItem

    clock = VirtualClock()
    backend = FakeBackend(clock=clock, latency_polls=3)
    requests = [
        WorkItem(EngineRequest(f"r{i}", [1, 2], SamplingSpec(0.0, 1.0, 4), 0, 4), i)
        for i in range(40)
    ]
    results = {}
    state = {"scheduler": None}

    def work():
        for i, item in enumerate(requests):
            if i == 10:
                state["scheduler"].grow_to(2)
            yield item

    settings = SchedulerSettings(replicas=1, batch_size=1, max_in_flight=2, min_batches_in_flight=1)
    scheduler = Scheduler(backend, work(), lambda item, r: results.setdefault(item.key, r),
                          settings, clock=clock)  # fmt: skip
    state["scheduler"] = scheduler
    scheduler.run()
    assert backend.started == [0, 1] and len(results) == 40
    assert {replica for replica, _, _ in backend.submitted} == {0, 1}


def one_pool_config(tmp_path, **scheduler):
    """The preference job with responses and ratings on the job's one engine."""
    config = preference_config(tmp_path).model_dump(mode="json")
    config["output"]["rows_per_shard"] = 1  # 7 units, as pool_config's
    config["scheduler"] = {**config["scheduler"], **scheduler}
    return validate_config(config)


def first_rating_and_last_response(backend: FakeBackend) -> tuple[int, int]:
    """Where, in the order the one engine got its requests, the first rating request and
    the last response request came."""
    order = backend.generated
    ratings = [i for i, r in enumerate(order) if r not in RESPONSE_IDS]
    return ratings[0], max(i for i, r in enumerate(order) if r in RESPONSE_IDS)


def test_two_stages_on_one_pool_stream_through_its_one_scheduler(tmp_path, embedded_model):
    """Responses and ratings on one engine: with stages one after another it rates only once
    every response is written; running together (the default), the first rating request
    reaches it while responses are still to come, the ratings of committed units going
    first. The pairs are the sequential run's, each request asked once."""
    sequential = tmp_path / "sequential"
    sequential.mkdir()
    backend = FakeBackend(responder=ScriptedModel(embedded_model), latency_polls=0)
    config = one_pool_config(sequential, stream_stages=False)
    run_job(config, show_progress=False, backend=backend)
    expected = read_pairs(sequential / "out")
    first_rating, last_response = first_rating_and_last_response(backend)
    assert first_rating > last_response

    backend = FakeBackend(responder=ScriptedModel(embedded_model), latency_polls=0)
    config = one_pool_config(tmp_path, max_in_flight_per_replica=1, batch_size=1)
    summary = run_job(config, show_progress=False, backend=backend)
    first_rating, last_response = first_rating_and_last_response(backend)
    assert first_rating < last_response, "the ratings waited for the last response"
    assert read_pairs(tmp_path / "out") == expected
    assert len(backend.generated) == len(set(backend.generated))
    assert summary.stats["accounted"] and summary.stats["rows_out"] == 4
    runs = [
        json.loads(line)
        for folder in (tmp_path / "out", tmp_path / "out" / "stages")
        for line in (folder / "_runs.jsonl").read_text().splitlines()
    ]
    assert sorted(run["units_committed"] for run in runs) == [7, 7]  # a record per stage


def test_one_pool_pipeline_killed_mid_way_resumes_each_stage_exactly_once(
    tmp_path, embedded_model, monkeypatch
):
    """Killed at the first rating commit while responses are still uncommitted, on one
    engine: the rerun asks no committed response or rating again, and its pairs are a clean
    run's."""
    clean = tmp_path / "clean"
    clean.mkdir()
    backend = FakeBackend(responder=ScriptedModel(embedded_model), latency_polls=0)
    run_job(one_pool_config(clean), show_progress=False, backend=backend)
    expected = read_pairs(clean / "out")

    config = one_pool_config(tmp_path, max_in_flight_per_replica=1, batch_size=1)
    work = OutputStore(tmp_path / "out" / "stages")
    at_kill: list[int] = []

    def first_rating(record):
        if record.stage == "pairs":
            at_kill.append(len(work.committed("responses")))
            return True
        return False

    killed = FakeBackend(responder=ScriptedModel(embedded_model), latency_polls=0)
    with monkeypatch.context() as patch:
        crash_on_commit(patch, first_rating)
        with pytest.raises(Crash):
            run_job(config, show_progress=False, backend=killed)
    assert at_kill and at_kill[0] < 7, "killed after every response committed: not mid-way"
    committed = {r.unit_index for r in work.committed("responses").values()}

    backend = FakeBackend(responder=ScriptedModel(embedded_model), latency_polls=0)
    summary = run_job(config, show_progress=False, backend=backend)
    assert read_pairs(tmp_path / "out") == expected
    asked = {RESPONSE_IDS[r][0] for r in backend.generated if r in RESPONSE_IDS}
    assert not asked & {f"p{i}" for i in committed}  # committed responses were not redone
    assert len(backend.generated) == len(set(backend.generated))
    assert summary.units_skipped >= len(committed) and summary.stats["accounted"]


def test_a_stage_naming_a_pool_that_is_not_declared_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"preference.judge_pool: no pool 'big' \(pools: default"):
        preference_config(tmp_path, judge_pool="big")
    with pytest.raises(ConfigError, match="give it or judge_engine, not both"):
        preference_config(tmp_path, judge_pool="default", judge_engine={"model": "x"})


def test_pool_sizes_are_not_part_of_what_the_job_is_but_their_models_are(tmp_path, embedded_model):
    config = pool_config(tmp_path, embedded_model).model_dump(mode="json")
    bigger = {**config, "pools": {"judge": {**config["pools"]["judge"], "replicas": 4}}}
    other = {**config, "pools": {"judge": {"engine": {"model": "embedded:smollm2-135m-instruct"}}}}
    fingerprint = validate_config(config).fingerprint()
    assert validate_config(bigger).fingerprint() == fingerprint
    assert validate_config(other).fingerprint() != fingerprint


def test_a_gate_releases_a_unit_once_every_earlier_unit_it_reads_committed():
    """Unit 0 reads earlier units 0 and 1 of one stage and unit 0 of another: released only
    once all three committed, with their shards in order; a failed earlier stage fails the
    later one's work with its reason."""
    from synth_ray.io.manifest import UnitRecord
    from synth_ray.runtime.scheduler import JobFailed, WorkItem
    from synth_ray.runtime.slice_task import SliceTask

    def record(index, shard):
        return UnitRecord(index, f"u{index}", shard, None, 1, {}, stage="s")

    a, b = UnitFeed("a", "s"), UnitFeed("b", "s")
    a.add(record(1, "a1"))  # committed before the gate subscribed
    gate = UnitGate(
        {0: [(a, 0), (a, 1), (b, 0)], 1: [(a, 2)]},
        lambda records: tuple(r.data_shard for r in records),
    )
    items = [WorkItem(SliceTask("k", unit, f"u{unit}", 0, 1, 0, 1), unit) for unit in (0, 1)]
    work = gated(iter(items), gate, lambda: None)
    assert next(work) is None
    a.add(record(0, "a0"))
    assert next(work) is None  # still waits on b
    b.add(record(0, "b0"))
    released = next(work)
    assert released.unit_index == 0 and released.payload.earlier_shards == ("a0", "a1", "b0")
    a.fail("engine died")
    with pytest.raises(JobFailed, match="stage s failed: engine died"):
        next(work)
    # the earlier stages finished without unit 2 (unit 1 reads it): no wait for ever
    c = UnitFeed("c", "t")
    gate = UnitGate({1: [(c, 2)]}, lambda records: ())
    c.finish()
    work = gated(iter([items[1]]), gate, lambda: None)
    with pytest.raises(JobFailed, match="unit 1 of stage k reads earlier units that were never"):
        next(work)


@pytest.mark.engine
def test_a_tensor_parallel_engine_runs_over_two_cpu_ranks(tmp_path, embedded_model):
    """engine.tensor_parallel_size 2 from `synth-ray run`: vLLM's CPU build splits the model
    over a worker process per rank, each on one of the 2 cores, and the replica reports its
    2 ranks. The model is random weights at a tiny shape whose heads divide by 2 (the
    embedded model's 9 do not), so the rows are only counted, never read."""
    import json
    import subprocess
    import sys

    from conftest import REPO

    from synth_ray.bench.random_model import make_random_model

    model = make_random_model(tmp_path / "tiny", "embedded", Path(embedded_model))
    shape = json.loads((model / "config.json").read_text())
    shape.update(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=64)  # fmt: skip
    (model / "config.json").write_text(json.dumps(shape))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "synth_ray", "run", str(REPO / "configs" / "generate.yaml"),
         "--no-progress", "--set", f"output.path={out}", "--set", "input.limit=4",
         "--set", f"engine.model={model}", "--set", "engine.extra_args.load_format=dummy",
         "--set", "engine.tensor_parallel_size=2", "--set", "engine.max_model_len=512",
         "--set", "engine.enforce_eager=true", "--set", "sampling.max_tokens=8",
         "--set", "sampling.ignore_eos=true", "--set", "filters.diversity.enabled=false",
         "--set", "ray.num_cpus=2"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accounted"] and stats["rows_out"] == 4 and stats["output_tokens"] == 32
    runs = [json.loads(x) for x in (out / "_runs.jsonl").read_text().splitlines()]
    assert runs[-1]["engine_tensor_parallel_size"] == 2


def test_configs_without_pools_keep_the_fingerprints_they_had_before_pools():
    """Pools added keys to preference and conversation (judge_pool, generator_pools,
    user_pool) and to the job (pools): a config that sets none of them is the same job as
    before, so its old outputs resume (values computed at 164cf38, before pools)."""
    base = {
        "input": {"path": "examples/prompts.jsonl", "text_column": "prompt"},
        "output": {"path": "/tmp/x"},
    }
    judge = {"judge_engine": {"model": "embedded:smollm2-135m-instruct", "max_model_len": 1024}}
    before = [
        ("preference", judge, "cf5c086c1a8e4337"),
        ("preference", {}, "13a4b63a08092430"),
        ("conversation", {"kind": "ultrachat"}, "5b54e2c400dda1c3"),
        ("conversation", {"kind": "magpie"}, "806f7c5b88dda716"),
    ]
    for method, section, fingerprint in before:
        config = validate_config({"method": method, **base, method: section})
        assert config.fingerprint() == fingerprint, (method, section)
