"""Evol-Instruct through the whole job path with a scripted engine: operations, the paper's
elimination rules by name, rounds over survivors, accounting, and a run killed mid-round."""

from __future__ import annotations

import hashlib

import pyarrow.parquet as pq
import pytest
from conftest import Crash, crash_on_commit, job_config, write_jsonl
from fake_backend import FakeBackend, overlapped, units_sent

from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult, SamplingSpec
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.evol_instruct import (
    JUDGE_MAX_TOKENS,
    EvolveStep,
    JudgeStep,
    RespondStep,
    choose_operation,
    copies_scaffolding,
    response_drop,
)
from synth_ray.runtime.job import run_job


def test_the_equality_judge_is_greedy_whatever_the_job_samples():
    job = SamplingSpec(temperature=0.9, top_p=0.95, max_tokens=2048, n=3, stop=("###",))
    judge = JudgeStep().stage_sampling(job)
    assert (judge.temperature, judge.top_p, judge.n, judge.stop) == (0.0, 1.0, 1, ())
    assert judge.max_tokens == JUDGE_MAX_TOKENS <= 8
    assert EvolveStep(0).stage_sampling(job) == job
    assert RespondStep("m").stage_sampling(job) == job


def test_elimination_rules_on_hand_made_text():
    assert copies_scaffolding("#Rewritten Prompt#: list three birds")
    assert copies_scaffolding("Rewrite the given prompt so it is harder")
    assert not copies_scaffolding("List three birds that migrate in winter and say why.")
    assert response_drop("Sorry, I cannot help with that.") == "model_could_not_answer"
    assert response_drop("I am sorry " + "but here is a long answer " * 30) is None
    assert response_drop("the and of, to... it!") == "response_only_stopwords"
    assert response_drop("") == "response_only_stopwords"
    assert response_drop("Paris is the capital of France.") is None
    ops = ["add_constraints", "breadth"]
    assert choose_operation(0, 1, "x", ops) == choose_operation(0, 1, "x", ops)


class ScriptedEngine:
    """Evolves by appending a clause; the hash of the request id decides which rule (if any)
    eliminates the evolution, so each rule fires for some rows."""

    def __init__(self, embedded_model):
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.sampling = {}  # request kind -> the sampling settings its requests came with

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        h = int(hashlib.sha256(request.request_id.encode()).hexdigest(), 16) % 10
        s = request.sampling
        settings = (s.temperature, s.top_p, request.max_tokens, s.n)
        if "#Rewritten Prompt#:" in prompt or "#Created Prompt#:" in prompt:
            self.sampling.setdefault("evolve", set()).add(settings)
            given = prompt.split("Prompt#:\n")[1].split("\n#")[0].strip()
            text = f"#Rewritten Prompt#: {given}" if h == 0 else f"{given} Also explain step {h}."
        elif "Your Judgement" in prompt:
            self.sampling.setdefault("judge", set()).add(settings)
            text = "Equal" if h == 1 else "Not Equal"
        elif h == 2:
            text = "Sorry, I can't."
        elif h == 3:
            text = "the and of it"
        else:
            text = f"A careful answer number {h} with real content."
        if "Your Judgement" not in prompt and "Prompt#:" not in prompt:
            self.sampling.setdefault("respond", set()).add(settings)
        return EngineResult(request.request_id, text, len(request.prompt_token_ids), 5, "stop")


def config(tmp_path, inputs, rows_per_shard=4):
    return job_config(
        tmp_path,
        inputs,
        method="evol_instruct",
        input={"path": str(inputs), "text_column": "prompt", "id_column": "id"},
        output={"rows_per_shard": rows_per_shard},
        evol_instruct={"rounds": 3},
    )


@pytest.fixture()
def inputs(tmp_path):
    return write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": f"p{i}", "prompt": f"Describe topic number {i} briefly."} for i in range(24)],
    )


def rows(path):
    return [r for f in OutputStore(path).data_files() for r in pq.read_table(f).to_pylist()]


def test_rounds_eliminate_by_rule_and_chain_parents(tmp_path, inputs, embedded_model):
    engine = ScriptedEngine(embedded_model)
    summary = run_job(
        config(tmp_path, inputs),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    # the equality judge is greedy and short; evolving and answering sample as the job says
    assert engine.sampling == {
        "evolve": {(0.7, 0.9, 16, 1)},
        "judge": {(0.0, 1.0, JUDGE_MAX_TOKENS, 1)},
        "respond": {(0.7, 0.9, 16, 1)},
    }
    out = rows(tmp_path / "out")
    assert {"instruction", "response", "round", "operation", "parent_id"} <= set(out[0])
    by_id = {r["id"]: r for r in out}
    rounds = {r["round"] for r in out}
    assert rounds == {0, 1, 2}
    retried = 0
    for row in out:
        if row["round"] == 0 or row["parent_id"].startswith("p"):
            # evolved from an input row: in round 0, or later after its evolution failed
            assert row["parent_id"].startswith("p")
            retried += row["round"] > 0
        else:
            parent = by_id[row["parent_id"]]  # evolved from a survivor of an earlier round
            assert parent["round"] < row["round"] and row["instruction"].startswith(
                parent["instruction"]
            )
        assert row["source_id"].startswith("p")
        assert "Rewritten" not in row["instruction"] and "Sorry" not in row["response"]
    stats = summary.stats
    drops = stats["dropped_by_filter"]
    for rule in (
        "copies_prompt_scaffolding",
        "no_information_gain",
        "model_could_not_answer",
        "response_only_stopwords",
    ):
        assert drops.get(rule, 0) > 0, rule
    assert stats["accounted"] and stats["input_documents"] == 24
    # issue 12, fix 4: a failed evolution goes back into the pool (the paper), so the pool
    # does not shrink: every round attempts 24 evolutions, and all are accounted for
    assert retried > 0
    assert stats["rows_in"] == 24 * 3
    assert stats["rows_out"] == len(out)
    assert summary.stats["evol_instruct"]["pool_after_last_round"] == 24


def test_a_lineage_evolves_again_while_other_lineages_are_still_in_round_0(
    tmp_path, inputs, embedded_model
):
    """Every stage of every round shares the job's replicas: a lineage's round-1 evolution
    goes out before the last round-0 evolution does (one lineage per unit, at most 3 slices
    in flight), and the rows are those of the stages one after the other."""
    engine = ScriptedEngine(embedded_model)

    def rounds(folder, **scheduler):
        data = config(folder, inputs, rows_per_shard=1).model_dump(mode="json")
        data["scheduler"] |= scheduler
        return validate_config(data)

    apart = run_job(
        rounds(tmp_path / "apart", stream_stages=False),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    backend = FakeBackend(responder=engine)
    summary = run_job(
        rounds(tmp_path, max_in_flight_per_replica=1, batch_size=1),
        show_progress=False,
        backend=backend,
    )
    assert overlapped(backend, "evolve-r0", "evolve-r1")
    assert overlapped(backend, "r1", "evolve-r2")
    assert sorted(r["id"] for r in rows(tmp_path / "out")) == sorted(
        r["id"] for r in rows(tmp_path / "apart" / "out")
    )
    for key in ("rows_in", "rows_out", "dropped_by_filter", "evol_instruct", "accounted"):
        assert summary.stats[key] == apart.stats[key]


def test_killed_in_a_judge_stage_resumes_exactly(tmp_path, inputs, embedded_model, monkeypatch):
    engine = ScriptedEngine(embedded_model)
    clean = run_job(
        config(tmp_path / "clean", inputs),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )

    with monkeypatch.context() as patch:
        crash_on_commit(patch, lambda record: record.stage == "judge-r1" and record.unit_index == 1)
        with pytest.raises(Crash):
            run_job(
                config(tmp_path, inputs), show_progress=False, backend=FakeBackend(responder=engine)
            )
    # the stages run at once: no unit any of them had committed at the crash is sent again
    done = {
        (record.stage, record.unit_index)
        for store in (OutputStore(tmp_path / "out"), OutputStore(tmp_path / "out" / "stages"))
        for record in store.committed().values()
    }
    backend = FakeBackend(responder=engine)
    summary = run_job(config(tmp_path, inputs), show_progress=False, backend=backend)
    assert ("evolve-r0", 0) in done and ("judge-r1", 1) not in done
    assert summary.units_skipped == len(done)
    assert units_sent(backend) and not units_sent(backend) & done
    ids = sorted(r["id"] for r in rows(tmp_path / "out"))
    assert ids == sorted(r["id"] for r in rows(tmp_path / "clean" / "out"))
    clean_stats = clean.stats
    assert summary.stats["rows_in"] == clean_stats["rows_in"]
    assert summary.stats["dropped_by_filter"] == clean_stats["dropped_by_filter"]
    # status (which reads only the folder) reports the same balanced accounting
    from synth_ray.status import collect_status

    report = collect_status(tmp_path / "out")
    assert report["accounted"] and report["rows_in"] == clean_stats["rows_in"]


def test_evolve_requests_grouped_by_operation_and_templates_overridable(
    tmp_path, inputs, embedded_model
):
    engine = ScriptedEngine(embedded_model)
    seen = {}

    def recording(request):
        prompt = engine.tokenizer.decode(request.prompt_token_ids)
        seen[request.request_id] = prompt
        if "BREADTH " in prompt:  # the overridden template has its own shape
            given = prompt.split("BREADTH ")[1].split("\n")[0]
            return EngineResult(request.request_id, f"{given} In a rarer setting.", 5, 5, "stop")
        return engine(request)

    cfg = config(tmp_path, inputs, rows_per_shard=100)
    cfg.section.rounds = 1
    cfg.section.templates = {"in_breadth": "BREADTH {instruction}\\n#Created Prompt#:\\n"}
    backend = FakeBackend(responder=recording, latency_polls=0)
    run_job(cfg, show_progress=False, backend=backend)
    in_submission_order = [seen[rid] for rid in backend.generated]
    evolve = [p for p in in_submission_order if "Prompt#:" in p][:24]
    methods = [
        next(
            (
                m
                for m in (
                    "constraints",
                    "depth and",
                    "specific",
                    "multiple-step",
                    "complex input",
                    "BREADTH",
                )
                if m in p
            ),
            "?",
        )
        for p in evolve
    ]
    # each operation's requests form one contiguous run
    runs = [m for i, m in enumerate(methods) if i == 0 or m != methods[i - 1]]
    assert len(runs) == len(set(runs))
    assert "BREADTH" in methods  # the overridden in-breadth template was used


def test_bad_template_overrides():
    from synth_ray.config import validate_config
    from synth_ray.errors import ConfigError

    base = {"method": "evol_instruct", "input": {"path": "x"}, "output": {"path": "o"}}
    with pytest.raises(ConfigError, match=r"evol_instruct.templates.judge: must contain \{first\}"):
        validate_config({**base, "evol_instruct": {"templates": {"judge": "Same? {second}"}}})
    with pytest.raises(ConfigError, match="evol_instruct.templates.rewrite: unknown template"):
        validate_config({**base, "evol_instruct": {"templates": {"rewrite": "x"}}})
    with pytest.raises(ConfigError, match=r"self_improve.templates.hint: must contain \{answer\}"):
        validate_config(
            {**base, "method": "self_improve", "self_improve": {"templates": {"hint": "no"}}}
        )


def test_the_driver_reads_no_row_after_planning(tmp_path, inputs, embedded_model, monkeypatch):
    """Every stage of every round goes by reference: each lineage unit's replica builds its
    evolve, judge and respond documents from the input and committed shards. From the first
    stage's end on, the driver reads neither an input row nor an output shard."""
    from conftest import watch_driver_reads

    seen = watch_driver_reads(monkeypatch, after_stage="evolve-r0")
    backend = FakeBackend(responder=ScriptedEngine(embedded_model))
    specs = []
    real_add = backend.add_stage
    backend.add_stage = lambda spec: (specs.append(spec), real_add(spec))[-1]
    summary = run_job(config(tmp_path, inputs), show_progress=False, backend=backend)
    assert seen["watching"] and seen["reads"] == []
    assert {spec.stage for spec in specs} >= {"evolve-r2", "judge-r2", "r2"}
    assert not any(isinstance(spec.documents, list) for spec in specs)
    assert summary.stats["accounted"] and summary.stats["rows_in"] == 24 * 3


DISTINCT = [
    "Explain in detail how photosynthesis turns sunlight into sugar in plants.",
    "Write a limerick about a cat who refuses to leave the bathtub.",
    "List five famous suspension bridges and the year each one opened.",
    "Compare the tax systems of Norway and Singapore for a small business owner.",
    "Debug this Python loop that never terminates when the list is empty.",
]


class SameEvolution(ScriptedEngine):
    """Evolves rows p0 and p1 into one and the same instruction; the others stay apart."""

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        if "Prompt#:" in prompt:
            given = prompt.split("Prompt#:\n")[1].split("\n#")[0].strip()
            number = given.split("number ")[1].split(" ")[0]
            text = DISTINCT[max(0, int(number) - 1)]  # rows 0 and 1: the same one
            return EngineResult(request.request_id, text, 5, 5, "stop")
        return EngineResult(request.request_id, "A careful answer with content.", 5, 5, "stop")


def test_near_duplicate_evolutions_are_dropped_by_the_diversity_filter(
    tmp_path, embedded_model, ray_local
):
    """The respond stage is filtered on the evolved instruction: of two identical evolutions
    one is kept, the other dropped as `diversity`, and every attempt is accounted for."""
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": f"p{i}", "prompt": f"Describe topic number {i} briefly."} for i in range(6)],
    )
    cfg = job_config(
        tmp_path,
        path,
        method="evol_instruct",
        input={"path": str(path), "text_column": "prompt", "id_column": "id"},
        output={"rows_per_shard": 2},
        evol_instruct={"rounds": 1, "judge_information_gain": False},
        filters={"diversity": {"enabled": True, "threshold": 0.9}},
    )
    backend = FakeBackend(responder=SameEvolution(embedded_model))
    summary = run_job(cfg, show_progress=False, backend=backend)
    out = rows(tmp_path / "out")
    stats = summary.stats
    assert stats["dropped_by_filter"] == {"diversity": 1} and stats["accounted"]
    assert stats["rows_in"] == 6 and len(out) == 5
    assert sum("photosynthesis" in r["instruction"] for r in out) == 1
    assert all("nn_similarity" in r for r in out)

    # two rounds: two stages the filter decides, which it does one at a time, so the rounds
    # run one after another (one unit per lineage, at most 3 slices in flight: else streamed)
    two = cfg.model_dump(mode="json")
    two["output"] = {**two["output"], "path": str(tmp_path / "two"), "rows_per_shard": 1}
    two["evol_instruct"]["rounds"] = 2
    two["scheduler"] |= {"max_in_flight_per_replica": 1, "batch_size": 1}
    backend = FakeBackend(responder=ScriptedEngine(embedded_model))
    summary = run_job(validate_config(two), show_progress=False, backend=backend)
    assert not overlapped(backend, "evolve-r0", "r0") and not overlapped(backend, "r0", "r1")
    assert summary.stats["accounted"] and summary.stats["rows_in"] == 12
