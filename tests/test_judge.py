"""Method `judge`: the rubrics' parsers, its config checks, and whole jobs on the simulated
engine (filtering, unparsable answers counted, labels, resume). The real engine runs it in
test_end_to_end.py.

    pytest tests/test_judge.py
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from conftest import REPO, Crash, crash_on_commit
from fake_backend import FakeBackend

from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.judge import parse_label
from synth_ray.methods.judge_rubrics import ALPAGASUS_SYSTEM, RUBRICS, score_from_first_line
from synth_ray.methods.templating import fill
from synth_ray.runtime.job import run_job

PAIRS = REPO / "examples" / "alpaca_pairs.jsonl"


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("4.5\nThe response is accurate.", 4.5),
        ("Score: 3\nPartly right.", 3.0),
        ("**5**\n\nPerfect.", 5.0),
        ("  \n2/5 because it is wrong", 2.0),
        ("The response is accurate, so 4.", None),  # the score must open the answer
        ("", None),
    ],
)
def test_alpagasus_score_is_the_first_line(answer, score):
    assert score_from_first_line(answer) == score


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("Basic facts, coherent.\nEducational score: 3", 3.0),
        ("Educational score: 1 ... on reflection\nEducational score: **4**", 4.0),
        ("It is a recipe. Score 2", None),
    ],
)
def test_fineweb_edu_score_is_the_last_educational_score(answer, score):
    assert RUBRICS["fineweb_edu"].parse(answer) == score


def test_labels_and_placeholders():
    labels = ["science", "cooking", "other"]
    assert parse_label("Reasoning...\nLabel: Cooking.", labels) == "cooking"
    assert parse_label("This page is about science and cooking.", labels) == "science"
    assert parse_label("Label: sports", labels) is None
    assert parse_label("nothing here", labels) is None
    # braces in a row (code, JSON) are left alone, and a value is never re-filled
    assert fill("Q: {question} A: {answer}", {"question": "{answer}", "answer": '{"a": 1}'}) == (
        'Q: {answer} A: {"a": 1}'
    )


BASE = {
    "method": "judge",
    "input": {"path": str(PAIRS), "id_column": "id"},
    "output": {"path": "o"},
}


@pytest.mark.parametrize(
    ("judge", "extra", "message"),
    [
        ({"rubric": "helpfulness"}, {}, "judge.rubric: unknown rubric 'helpfulness'"),
        ({"rubric": "custom"}, {}, "judge.template: required for rubric custom"),
        ({"template": "Rate {text}"}, {}, "rubric alpagasus has its paper's prompt"),
        ({"columns": {"question": "q"}}, {}, "'question' is not a placeholder of the prompt"),
        ({"columns": {"response": "score"}}, {}, "input column 'score' clashes"),
        (
            {"rubric": "custom", "template": "{text}", "labels": ["a"], "min_score": 1},
            {},
            "min_score: a label set has no score",
        ),
        ({"score_pattern": "(unclosed"}, {}, "score_pattern: not a regular expression"),
        ({}, {"filters": {"diversity": {"enabled": True}}}, "a judge writes no new text"),
    ],
)
def test_bad_judge_config_is_one_line(judge, extra, message):
    with pytest.raises(ConfigError, match="config key") as err:
        validate_config({**BASE, "judge": judge, **extra})
    assert message in str(err.value) and "\n" not in str(err.value)


class ScriptedJudge:
    """Answers like a judge would: a score per row, read from the row's response."""

    def __init__(self, embedded_model: str, answers: dict[str, str]) -> None:
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.answers = answers  # a word of the response -> the judge's answer
        self.prompts: list[str] = []

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        self.prompts.append(prompt)
        response = prompt.split("### Response:")[-1]
        text = next((a for key, a in self.answers.items() if key in response), "5\nFine.")
        return EngineResult(request.request_id, text, len(request.prompt_token_ids), 7, "stop")


ANSWERS = {
    "52": "1\nWrong: 17 + 25 is 42.",
    "Mars": "0\nJupiter is the largest.",
    "21 is a prime": "I cannot tell.",  # no score: unparsable
    "joyful": "7\nOff the scale.",  # out of range
    "Bonjour": "4\nGood, informal.",
}


def judge_config(tmp_path, **judge):
    return validate_config(
        {
            **BASE,
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 3},
            "engine": {"max_model_len": 1024},
            "sampling": {"max_tokens": 32},
            "judge": {"min_score": 4.5, **judge},
        }
    )


def test_alpagasus_job_keeps_high_scores_and_counts_every_status(tmp_path, embedded_model):
    engine = ScriptedJudge(embedded_model, ANSWERS)
    summary = run_job(
        judge_config(tmp_path), show_progress=False, backend=FakeBackend(responder=engine)
    )
    table = pq.read_table(tmp_path / "out" / "data")
    rows = {r["source_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["a01", "a05", "a06"]  # scored 5; a03 scored 4 < 4.5
    assert rows["a05"]["input"] == "[5, 2, 9, 1]" and rows["a05"]["output"] == "[1, 2, 5, 9]"
    assert rows["a01"]["input"] == ""  # Alpaca's empty input stays empty, not "None"
    assert rows["a01"]["score"] == 5.0 and rows["a01"]["parse_status"] == "ok"
    assert rows["a01"]["rationale"] == "5\nFine."
    stats = summary.stats
    assert stats["dropped_by_filter"] == {
        "below_min_score": 3,
        "unparsable_score": 1,
        "score_out_of_range": 1,
    }
    assert stats["accounted"] and stats["rows_in"] == 8
    assert stats["judge"]["parse_status"] == {"ok": 6, "out_of_range": 1, "unparsable": 1}
    assert stats["judge"]["judged"] == 8 and stats["judge"]["kept_scores"] == {"5": 3}
    # the prompt is the paper's: system text, then the triplet and the rating request
    first = next(p for p in engine.prompts if "capital of France" in p)
    assert ALPAGASUS_SYSTEM in first
    assert "###Instruction:\nGive the capital of France.\n\n### Input:\n\n\n### Response:" in first
    assert first.index(ALPAGASUS_SYSTEM) < first.index("Please rate according to the accuracy")


def test_unparsable_kept_when_asked_and_labels(tmp_path, embedded_model):
    engine = ScriptedJudge(embedded_model, ANSWERS)
    config = judge_config(tmp_path, min_score=None, on_unparsable="keep")
    summary = run_job(config, show_progress=False, backend=FakeBackend(responder=engine))
    rows = {r["source_id"]: r for r in pq.read_table(tmp_path / "out" / "data").to_pylist()}
    assert len(rows) == 8
    assert (rows["a07"]["score"], rows["a07"]["parse_status"]) == (None, "unparsable")
    assert (rows["a08"]["score"], rows["a08"]["parse_status"]) == (None, "out_of_range")
    assert summary.stats["judge"]["parse_status"] == {"ok": 6, "out_of_range": 1, "unparsable": 1}

    labels = validate_config(
        {
            **BASE,
            "output": {"path": str(tmp_path / "labels"), "rows_per_shard": 3},
            "engine": {"max_model_len": 1024},
            "judge": {
                "rubric": "custom",
                "template": "Task: {instruction}\nAnswer: {output}\nIs the answer right?",
                "labels": ["right", "wrong"],
            },
        }
    )
    labeler = ScriptedJudge(embedded_model, {})
    labeler.answers = {"": "Label: wrong"}
    run_job(labels, show_progress=False, backend=FakeBackend(responder=labeler))
    labeled = pq.read_table(tmp_path / "labels" / "data").to_pylist()
    assert len(labeled) == 8 and {r["label"] for r in labeled} == {"wrong"}
    assert {"instruction", "output"} <= set(labeled[0]) and "input" not in labeled[0]


def test_killed_judge_job_resumes_exactly(tmp_path, embedded_model, monkeypatch):
    engine = ScriptedJudge(embedded_model, ANSWERS)
    clean = judge_config(tmp_path / "clean", min_score=None)
    run_job(clean, show_progress=False, backend=FakeBackend(responder=engine))
    with monkeypatch.context() as patch:
        crash_on_commit(patch, lambda record: record.unit_index == 1)
        with pytest.raises(Crash):
            run_job(
                judge_config(tmp_path, min_score=None),
                show_progress=False,
                backend=FakeBackend(responder=engine),
            )
    backend = FakeBackend(responder=engine)
    summary = run_job(judge_config(tmp_path, min_score=None), show_progress=False, backend=backend)
    assert len(backend.generated) < 8  # the committed unit was not judged again

    def ids(path):
        return sorted(
            r["id"] for f in OutputStore(path).data_files() for r in pq.read_table(f).to_pylist()
        )

    assert ids(tmp_path / "out") == ids(tmp_path / "clean" / "out")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["accounted"] and stats["rows_in"] == 8 == summary.stats["judge"]["judged"]


def _method(**judge):
    from synth_ray.methods.judge import JudgeConfig, JudgeMethod, _text_placeholder

    config = JudgeConfig(**judge)
    return JudgeMethod(config, "m", _text_placeholder(config))


CONSTRAINED_ANSWERS = {
    # answers inside each constrained language, as a small judge writes them under it
    "alpagasus": [
        (f"{s}\n{why}", float(s))
        for s in ["0", "0.5", "1", "2.5", "3", "4", "4.5", "5"]
        for why in ["x", "The response is accurate. Score 2 for style, 9/10 overall." * 5]
    ],
    "fineweb_edu": [
        ("Basic facts about cats.\nEducational score: 2", 2.0),
        ("It says Educational score: 5 is deserved; it is not.\nEducational score: 1", 1.0),
        ("a" * 300 + "\nEducational score: 0", 0.0),
    ],
}


@pytest.mark.parametrize("rubric", sorted(CONSTRAINED_ANSWERS))
def test_a_constrained_judge_decodes_into_what_its_parser_reads(rubric):
    """Every answer the engine may write under `judge.constrain` parses to a score in the
    rubric's scale: the regex and the parser agree (the engine enforces the regex)."""
    import re

    from synth_ray.engine.requests import Constraint, SamplingSpec

    method = _method(rubric=rubric, constrain=True)
    sampling = method.stage_sampling(SamplingSpec(0.7, 0.9, 96))
    assert sampling.constraint == Constraint("regex", method.rubric.answer_regex)
    assert sampling.temperature == 0.0
    language = re.compile(sampling.constraint.value)
    for answer, score in CONSTRAINED_ANSWERS[rubric]:
        assert language.fullmatch(answer), answer
        assert method.judgment(answer) == (score, None, "ok"), answer
    assert not language.fullmatch("Sure! Here is my rating: 4")  # free text is outside it
    assert _method(rubric=rubric).stage_sampling(SamplingSpec(0.7, 0.9, 96)).constraint is None


def test_constrained_custom_labels_and_scores():
    import re

    from synth_ray.engine.requests import SamplingSpec

    labels = _method(
        rubric="custom",
        template="Is {text} spam?",
        labels=["spam", "not spam (ham)"],
        constrain=True,
    )
    language = re.compile(labels.stage_sampling(SamplingSpec(0.7, 0.9, 64)).constraint.value)
    for answer, label in [
        ("Label: spam", "spam"),
        ("It sells pills. Label: not spam (ham)\nLabel: spam", "spam"),
        ("Friendly note.\nLabel: not spam (ham)", "not spam (ham)"),
    ]:
        assert language.fullmatch(answer) and labels.judgment(answer) == (None, label, "ok")
    assert not language.fullmatch("Label: eggs")
    scores = _method(rubric="custom", template="Rate {text}", scale=[1, 10], constrain=True)
    language = re.compile(scores.stage_sampling(SamplingSpec(0.7, 0.9, 64)).constraint.value)
    assert language.fullmatch("Good.\nScore: 10") and not language.fullmatch("Score: 11")
    assert scores.judgment("Good, score 3 of 10 at first.\nScore: 7") == (7.0, None, "ok")
    with pytest.raises(ValueError, match="constrain: a custom score_pattern"):
        _method(rubric="custom", template="Rate {text}", score_pattern=r"(\d+)/10", constrain=True)
