"""Method `preference`: the rating parser, the pair chosen through the shuffled order, every
drop counted, and a kill between and inside its stages resumed exactly (simulated engine; the
real engine runs it in test_end_to_end.py).

    pytest tests/test_preference.py
"""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest
from conftest import Crash, crash_on_commit, write_jsonl
from fake_backend import FakeBackend

from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.preference_prompts import parse_ratings, rating_prompt
from synth_ray.runtime.job import run_job


def test_ratings_parsed_per_text_in_the_papers_format():
    answer = (
        "#### Output for Text 2\nRating: 3\nRationale: fine\n\n"
        "#### Output for Text 1\nRating: **5**\nRationale: best\n\n"
        "#### Output for Text 3\nRating: N/A\nRationale: creative\n\n"
        "#### Output for Text 4\nRating: 9\nRationale: off the scale"
    )
    assert parse_ratings(answer, 4) == [5.0, 3.0, None, None]
    assert parse_ratings("Rating: 2\nRating: 4", 2) == [2.0, 4.0]  # no headers: in order
    assert parse_ratings("Rating: 2", 2) == [None, None]  # ambiguous: nothing guessed
    prompt = rating_prompt("instruction_following", "Say hi", ["hi", "hello", "hey"])
    assert "# Instruction Following Assessment" in prompt
    assert prompt.endswith(
        "Instruction: Say hi\n\nTexts:\n<text 1> hi\n<text 2> hello\n<text 3> hey\n\n### Output\n"
    )
    assert "#### Output for Text 3\nRating: [Rating]" in prompt


PROMPTS = [{"id": f"p{i}", "prompt": f"Question number {i}?"} for i in range(6)]
PROMPTS.append({"id": "p6", "prompt": ""})  # no responses: counted as too_few_responses
# per prompt: the rating of response k (None: the judge leaves it unrated)
RATINGS = {
    "p0": [2, 5, 1, 3],
    "p1": [4, 4, 4, 4],  # a tie
    "p2": [None, 3, None, None],  # only one rated
    "p3": [1, 2, 3, 4],
    "p4": [5, 1, 1, 2],
    "p5": [3, 3, 1, 5],
}


class ScriptedModel:
    """Responses "p3 answer k"; ratings from RATINGS, written for the order shown."""

    def __init__(self, embedded_model: str) -> None:
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.shown: list[list[int]] = []  # the response order of each rating prompt

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        rid, tokens = request.request_id, len(request.prompt_token_ids)
        if "Instruction Following Assessment" not in prompt:
            pid = "p" + re.search(r"Question number (\d+)", prompt).group(1)
            samples = tuple((f"{pid} answer {k}", 3, "stop") for k in range(request.sampling.n))
            return EngineResult(rid, samples[0][0], tokens, 12, "stop", samples=samples)
        shown = re.findall(r"<text (\d+)> (p\d) answer (\d)", prompt)
        self.shown.append([int(k) for _, _, k in shown])
        blocks = []
        for position, pid, k in shown:
            rating = RATINGS[pid][int(k)]
            if rating is not None:
                blocks.append(f"#### Output for Text {position}\nRating: {rating}\nRationale: ok")
        return EngineResult(rid, "\n\n".join(blocks), tokens, 40, "stop")


def preference_config(tmp_path, **preference):
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    return validate_config(
        {
            "method": "preference",
            "input": {"path": str(data), "text_column": "prompt", "id_column": "id"},
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 2},
            "engine": {"max_model_len": 2048},
            "sampling": {"max_tokens": 16, "temperature": 0.8},
            "preference": preference,
        }
    )


def read_pairs(path):
    return {
        r["source_id"]: r
        for f in OutputStore(path).data_files()
        for r in pq.read_table(f).to_pylist()
    }


def test_pairs_are_the_best_and_worst_rated_through_the_shuffle(tmp_path, embedded_model):
    engine = ScriptedModel(embedded_model)
    summary = run_job(
        preference_config(tmp_path), show_progress=False, backend=FakeBackend(responder=engine)
    )
    pairs = read_pairs(tmp_path / "out")
    assert sorted(pairs) == ["p0", "p3", "p4", "p5"]
    assert (pairs["p0"]["chosen"], pairs["p0"]["rejected"]) == ("p0 answer 1", "p0 answer 2")
    assert (pairs["p0"]["chosen_rating"], pairs["p0"]["rejected_rating"]) == (5.0, 1.0)
    assert pairs["p0"]["ratings"] == [2.0, 5.0, 1.0, 3.0]  # in response order, not shown order
    assert pairs["p4"]["rejected"] == "p4 answer 1"  # the first of the lowest
    assert pairs["p3"]["responses"] == [f"p3 answer {k}" for k in range(4)]
    stats = summary.stats
    assert stats["dropped_by_filter"] == {"tie": 1, "too_few_rated": 1, "too_few_responses": 1}
    assert stats["accounted"] and stats["rows_in"] == 7 and stats["rows_out"] == 4
    responses = stats["preference"]["responses_stage"]
    assert responses["rows_out"] == 24 and responses["errored_by_stage"] == {"input": 4}
    # the shown order is shuffled per prompt: not every prompt shows response 0 first
    assert len(engine.shown) == 6 and all(sorted(o) == [0, 1, 2, 3] for o in engine.shown)
    assert any(order != [0, 1, 2, 3] for order in engine.shown)


def test_random_rejected_is_a_lower_rated_response(tmp_path, embedded_model):
    engine = ScriptedModel(embedded_model)
    run_job(
        preference_config(tmp_path, rejected="random"),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    for pid, pair in read_pairs(tmp_path / "out").items():
        assert (
            pair["rejected_rating"]
            < pair["chosen_rating"]
            == max(r for r in RATINGS[pid] if r is not None)
        )


def test_killed_in_the_rating_stage_resumes_exactly(tmp_path, embedded_model, monkeypatch):
    engine = ScriptedModel(embedded_model)
    run_job(
        preference_config(tmp_path / "clean"),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    for stage in ("responses", "pairs"):
        with monkeypatch.context() as patch:
            crash_on_commit(patch, lambda r, s=stage: r.stage == s and r.unit_index == 1)
            with pytest.raises(Crash):
                run_job(
                    preference_config(tmp_path),
                    show_progress=False,
                    backend=FakeBackend(responder=engine),
                )
    backend = FakeBackend(responder=engine)
    summary = run_job(preference_config(tmp_path), show_progress=False, backend=backend)
    assert len(backend.generated) == len(set(backend.generated)) < 6
    clean = read_pairs(tmp_path / "clean" / "out")
    assert read_pairs(tmp_path / "out") == clean
    assert summary.stats["accounted"] and summary.stats["rows_in"] == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sampling": {"temperature": 0}}, "sampling.temperature: 0 makes the n responses one"),
        ({"preference": {"n": 1}}, "config key preference.n"),
        ({"preference": {"aspect": "honesty"}}, "config key preference.aspect"),
    ],
)
def test_bad_preference_config(tmp_path, change, message):
    data = {
        "method": "preference",
        "input": {"path": "x.jsonl"},
        "output": {"path": "o"},
        **change,
    }
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(data)


def test_a_judge_engine_rates_with_another_model(tmp_path, embedded_model):
    """`preference.judge_engine`: the rating stage renders with the judge model's template and
    its rows name both models (the simulated backend stands in for both engines)."""
    import shutil

    judge = tmp_path / "judge-model"
    shutil.copytree(embedded_model, judge)
    engine = ScriptedModel(embedded_model)
    config = preference_config(tmp_path, judge_engine={"model": str(judge), "max_model_len": 2048})
    run_job(config, show_progress=False, backend=FakeBackend(responder=engine))
    pairs = read_pairs(tmp_path / "out")
    assert {p["judge_model"] for p in pairs.values()} == {"judge-model"}
    assert {p["response_model"] for p in pairs.values()} == {"SmolLM2-135M-Instruct"}
    # the judge's model is part of what the job is: another judge is another job
    other = preference_config(tmp_path, judge_engine={"model": str(judge), "max_model_len": 1024})
    assert other.fingerprint() != config.fingerprint() != preference_config(tmp_path).fingerprint()


def test_use_engine_stops_the_old_replicas_and_loads_the_new_template(tmp_path, embedded_model):
    import shutil

    from synth_ray.config import EngineConfig
    from synth_ray.runtime.stage import RunSummary, StageRunner

    class Replicas:
        closed = False

        def close(self):
            self.closed = True

    config = preference_config(tmp_path)
    runner = StageRunner(config, PromptRenderer.from_model(embedded_model), RunSummary("o"))
    old = runner.backend = Replicas()
    assert runner.use_engine(config.engine) == "SmolLM2-135M-Instruct" and not old.closed
    judge = tmp_path / "judge"
    shutil.copytree(embedded_model, judge)
    assert runner.use_engine(EngineConfig(model=str(judge), max_model_len=512)) == "judge"
    assert old.closed and runner.backend is None  # started again, on the judge, when needed
    assert runner.config.engine.max_model_len == 512 and runner.config.method == "preference"
    assert runner.config.section.n == 4  # the method's own section survives the copy


def test_the_driver_reads_no_response_to_build_the_rating_stage(
    tmp_path, embedded_model, monkeypatch
):
    """The rating stage goes by reference: each unit's replica reads the committed responses
    of its responses units and builds its prompts' documents. From the responses stage's end
    on, the driver reads neither an input row nor an output shard, and the counts hold."""
    from conftest import watch_driver_reads

    seen = watch_driver_reads(monkeypatch, after_stage="responses")
    backend = FakeBackend(responder=ScriptedModel(embedded_model))
    specs = []
    real_add = backend.add_stage
    backend.add_stage = lambda spec: (specs.append(spec), real_add(spec))[-1]
    summary = run_job(preference_config(tmp_path), show_progress=False, backend=backend)
    assert seen["watching"] and seen["reads"] == []
    [pairs] = [spec for spec in specs if spec.stage == "pairs"]
    assert not isinstance(pairs.documents, list)  # no response travels with it
    stats = summary.stats
    assert stats["dropped_by_filter"]["too_few_responses"] == 1 and stats["accounted"]
    assert stats["preference"]["prompts"] == 7
