"""Method `label` and co-annotation: votes to a label (majority, tie rule, entropy), the
prompt, the config's checks, Label Studio tasks and exports, a whole job on a scripted engine
with export and merge from the CLI, and one real-engine run from the CLI killed and resumed.

    pytest tests/test_label.py -m "not engine"
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pyarrow.parquet as pq
import pytest
from conftest import REPO
from fake_backend import FakeBackend
from typer.testing import CliRunner

from synth_ray.cli import app
from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.base import Kept
from synth_ray.methods.label import (
    UNCERTAIN,
    LabelConfig,
    LabelMethod,
    build_prompt,
    majority,
    vote_entropy,
)
from synth_ray.methods.label_studio import (
    ExportError,
    data_keys,
    labeling_config,
    read_export,
    task,
)
from synth_ray.runtime.job import run_job

SENTENCES = REPO / "examples" / "sentiment_sentences.jsonl"
LABELS = ["positive", "negative"]


def section(**overrides) -> LabelConfig:
    return LabelConfig(
        **{
            "labels": {"positive": "likes it", "negative": "dislikes it"},
            "instruction": "Label the sentiment.",
            **overrides,
        }
    )


def result(*votes: str, reasons: tuple[str, ...] = ()) -> EngineResult:
    samples = tuple((v, 1, reasons[i] if i < len(reasons) else "stop") for i, v in enumerate(votes))
    return EngineResult("r", votes[0], 90, len(votes), samples[0][2], samples=samples)


def test_the_majority_wins_and_a_tie_goes_to_the_label_listed_first():
    assert majority(["negative", "positive", "negative"], LABELS) == ("negative", 2 / 3)
    # the same tie in either order: the first label of the set
    assert majority(["negative", "positive"], LABELS) == ("positive", 0.5)
    assert majority(["positive", "negative"], ["negative", "positive"]) == ("negative", 0.5)
    # a vote that is no label counts in k, never for a label
    assert majority(["positive", None, None], LABELS) == ("positive", 1 / 3)
    assert majority([None, None], LABELS) == (None, 0.0)


def test_entropy_is_coannotatings_with_a_non_label_as_its_own_outcome():
    assert vote_entropy(["positive"] * 5) == 0.0
    assert vote_entropy(["positive"]) == 0.0
    assert vote_entropy(["positive", "negative"]) == pytest.approx(1.0)
    p = [3 / 5, 2 / 5]
    assert vote_entropy(["positive"] * 3 + ["negative"] * 2) == pytest.approx(
        -sum(x * math.log2(x) for x in p)
    )
    # CoAnnotating's check() maps an unparsable answer to a class of its own (2)
    assert vote_entropy(["positive", "negative", None]) == pytest.approx(math.log2(3))


def test_the_prompt_asks_coannotatings_way_then_shows_labels_examples_and_the_row():
    config = section(few_shot=[{"text": "Lovely.", "label": "positive"}])
    prompt = build_prompt(config, ["review"], {"review": "Awful food."})
    assert prompt == (
        "Label the sentiment. Please give your answer as “positive” or “negative”.\n\n"
        "positive: likes it\nnegative: dislikes it\n\n"
        "Text: Lovely.\nLabel: positive\n\n"
        "Text: Awful food."
    )
    pair = section(labels=["same", "different", "unrelated"], text_columns=["a", "b"])
    assert build_prompt(pair, ["a", "b"], {"a": "x", "b": "y"}) == (
        "Label the sentiment. Please give your answer as “same”, “different” or “unrelated”."
        "\n\na: x\nb: y"
    )


def test_k_votes_are_one_request_of_n_samples_each_decoded_as_a_label():
    method = LabelMethod(section(votes=7), "m", ["text"])
    job = SamplingSpec(temperature=1.0, top_p=0.9, max_tokens=8)
    sampling = method.stage_sampling(job)
    assert sampling.n == 7 and sampling.temperature == 1.0 and sampling.top_p == 0.9
    assert sampling.constraint == Constraint("choice", choices=("positive", "negative"))


def _candidate(method: LabelMethod, text: str = "Nice phone.", gold: str | None = "positive"):
    extra = {"gold": gold} if gold is not None else {}
    [candidate] = method.expand(Document(0, "s1", text, extra=extra))
    return candidate


def test_agreeing_votes_are_kept_in_data_and_disagreeing_ones_in_the_uncertain_split():
    method = LabelMethod(section(min_agreement=0.8, gold_column="gold"), "SmolLM2", ["text"])
    candidate = _candidate(method)
    sure = method.finish(
        candidate, result("positive", "positive", "positive", "negative", "positive")
    )
    assert isinstance(sure, Kept) and sure.split is None
    assert sure.row["label"] == "positive" and sure.row["vote_share"] == 0.8
    assert sure.row["votes"] == ["positive", "positive", "positive", "negative", "positive"]
    assert sure.row["labelled_by"] == "SmolLM2" and sure.row["gold"] == "positive"
    assert sure.row["text"] == "Nice phone." and sure.row["n_output_tokens"] == 5
    assert sure.row["entropy"] == pytest.approx(vote_entropy(sure.row["votes"]))
    unsure = method.finish(
        candidate, result("negative", "positive", "negative", "positive", "negative")
    )
    assert unsure.split == UNCERTAIN and unsure.row["label"] == "negative"
    assert unsure.row["vote_share"] == 0.6


def test_a_vote_that_is_no_label_is_a_null_and_lowers_the_agreement():
    method = LabelMethod(section(min_agreement=0.8), "m", ["text"])
    cut = method.finish(
        _candidate(method, gold=None),
        result("positive", "posi", "positive", "positive", reasons=("stop", "length")),
    )
    assert cut.row["votes"] == ["positive", None, "positive", "positive"]
    assert cut.row["vote_share"] == 0.75 and cut.split == UNCERTAIN
    assert cut.row["finish_reason"] == "length"
    none = method.finish(_candidate(method, gold=None), result("maybe", "dunno"))
    assert none.row["label"] is None and none.row["vote_share"] == 0.0 and none.split == UNCERTAIN


def test_an_empty_row_is_an_error_before_any_request():
    method = LabelMethod(section(), "m", ["text"])
    [candidate] = method.expand(Document(0, "s1", "  "))
    assert candidate.error == "column text is empty"


BASE = {
    "method": "label",
    "input": {"path": str(SENTENCES), "id_column": "id"},
    "output": {"path": "o"},
    "sampling": {"temperature": 1.0},
}
GOOD = {"labels": LABELS, "instruction": "Label the sentiment."}


@pytest.mark.parametrize(
    ("label", "extra", "message"),
    [
        ({"labels": ["positive"]}, {}, "label.labels: at least two labels"),
        ({"labels": ["a", "a"]}, {}, "label.labels: expected distinct labels"),
        ({"labels": [" a", "b"]}, {}, "without surrounding space"),
        ({"instruction": " "}, {}, "label.instruction: empty"),
        ({"votes": 0}, {}, "label.votes"),
        ({"min_agreement": 0}, {}, "label.min_agreement"),
        (
            {"few_shot": [{"text": "x", "label": "meh"}]},
            {},
            "example 1's label 'meh' is not one of positive, negative",
        ),
        ({"few_shot": [{"body": "x", "label": "positive"}]}, {}, "needs text or text and label"),
        (
            {"text_columns": ["a", "b"], "few_shot": [{"a": "x", "label": "positive"}]},
            {},
            "needs a, b and label",
        ),
        ({"text_columns": ["label"]}, {}, "input column 'label' clashes"),
        ({"gold_column": "text"}, {}, "label.gold_column: 'text' is shown to the model"),
        ({}, {"sampling": {"temperature": 0}}, "5 votes at sampling.temperature 0"),
        ({}, {"filters": {"diversity": {"enabled": True}}}, "labeling writes no new text"),
        ({"few_shot": "/nonexistent/shots.jsonl"}, {}, "no such file /nonexistent/shots.jsonl"),
    ],
)
def test_bad_label_configs_are_one_line(label, extra, message):
    with pytest.raises(ConfigError, match="config key") as err:
        validate_config({**BASE, "label": {**GOOD, **label}, **extra})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_few_shot_from_a_file_is_read_into_the_config_and_the_label_order_decides():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        shots = Path(tmp) / "shots.jsonl"
        shots.write_text(
            '{"text": "Good.", "label": "positive"}\n\n{"text": "Bad.", "label": "negative"}\n'
        )
        config = validate_config({**BASE, "label": {**GOOD, "few_shot": str(shots)}})
        assert config.section_as(LabelConfig).few_shot == [
            {"text": "Good.", "label": "positive"},
            {"text": "Bad.", "label": "negative"},
        ]
        before = config.fingerprint()
        shots.write_text('{"text": "Fine.", "label": "positive"}\n')
        changed = validate_config({**BASE, "label": {**GOOD, "few_shot": str(shots)}})
        assert changed.fingerprint() != before  # the content, not the path, is fingerprinted
        shots.write_text("not json\n")
        with pytest.raises(ConfigError, match="line 1: not JSON"):
            validate_config({**BASE, "label": {**GOOD, "few_shot": str(shots)}})
    swapped = validate_config({**BASE, "label": {**GOOD, "labels": LABELS[::-1]}})
    plain = validate_config({**BASE, "label": GOOD})
    assert swapped.fingerprint() != plain.fingerprint()  # the order decides ties and the prompt


def test_every_text_column_gets_its_own_task_field():
    assert data_keys(["text", "my col", "text_1"]) == ["text", "text_1_", "text_1"]
    assert data_keys(["my col", "text_0"]) == ["text_0_", "text_0"]
    assert data_keys(["row_id", "a b"]) == ["text_0", "text_1"]
    config = labeling_config(["my col", "text_0"], {"a": "", "b": ""}, "Label it.")
    assert config.count('<Text name="text_0"') == 1 and '<Text name="text_0_"' in config


def test_label_studio_tasks_carry_the_row_and_the_votes_as_predictions():
    row = {
        "id": "abc",
        "text": "Meh.",
        "votes": ["negative", "positive", "negative", None],
        "label": "negative",
    }
    made = task(row, ["text"], LABELS, "SmolLM2")
    assert made["data"] == {"text": "Meh.", "row_id": "abc"}
    assert [(p["result"][0]["value"]["choices"], p["score"]) for p in made["predictions"]] == [
        (["negative"], 0.5),
        (["positive"], 0.25),
    ]
    first = made["predictions"][0]
    assert first["model_version"] == "SmolLM2"
    assert first["result"][0] | {"value": None} == {
        "from_name": "label",
        "to_name": "text",
        "type": "choices",
        "value": None,
    }
    xml = labeling_config(["premise", "row_id"], {"yes": "it follows", "no": ""}, "Does it?")
    view = ET.fromstring(xml)
    texts = [(t.get("name"), t.get("value")) for t in view.iter("Text")]
    assert texts == [("premise", "$premise"), ("text_1", "$text_1")]
    [choices] = view.iter("Choices")
    assert choices.get("name") == "label" and choices.get("toName") == "premise"
    assert [c.get("value") for c in choices.iter("Choice")] == ["yes", "no"]


def _annotation(label, when="2024-01-01T00:00:00Z", who=None, cancelled=False):
    return {
        "result": [
            {
                "from_name": "label",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": label if isinstance(label, list) else [label]},
            }
        ],
        "was_cancelled": cancelled,
        "updated_at": when,
        "completed_by": who,
    }


def test_an_export_gives_each_row_its_latest_label_and_who_gave_it():
    tasks = [
        {
            "id": 1,
            "data": {"text": "a", "row_id": "r1"},
            "annotations": [
                _annotation("negative", "2024-01-02T00:00:00Z", {"id": 3, "email": "ann@x.org"}),
                _annotation("positive", "2024-01-01T00:00:00Z", 4),
                _annotation("positive", "2024-01-03T00:00:00Z", 5, cancelled=True),
            ],
        },
        {
            "id": 2,
            "data": {"text": "b", "row_id": "r2"},
            "annotations": [_annotation("positive", who=7)],
        },
        {"id": 3, "data": {"text": "c", "row_id": "r3"}, "annotations": []},
    ]
    got = read_export(tasks, {"r1", "r2", "r3", "r4"}, LABELS)
    assert {k: (v.label, v.annotator) for k, v in got.items()} == {
        "r1": ("negative", "ann@x.org"),
        "r2": ("positive", "label-studio user 7"),
    }


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ({"data": {}}, "not a Label Studio JSON export"),
        ([{"id": 9, "data": {"text": "a"}}], "task 9: no data.row_id"),
        ([{"id": 9, "data": {"row_id": "zz"}}], "task 9 (row zz): not an uncertain row"),
        (
            [{"id": 9, "data": {"row_id": "r1"}, "annotations": [_annotation("neutral")]}],
            "task 9 (row r1): label 'neutral' is not one of positive, negative",
        ),
        (
            [{"id": 9, "data": {"row_id": "r1"}, "annotations": [_annotation(LABELS)]}],
            "an annotation chose 2 labels",
        ),
        (
            [{"id": 1, "data": {"row_id": "r1"}}, {"id": 2, "data": {"row_id": "r1"}}],
            "task 2 (row r1): the row is in two tasks",
        ),
    ],
)
def test_a_bad_export_is_one_line_naming_the_task(tasks, message):
    with pytest.raises(ExportError) as err:
        read_export(tasks, {"r1"}, LABELS)
    assert message in str(err.value) and "\n" not in str(err.value)


GOLD = {
    json.loads(line)["text"]: json.loads(line)["gold"]
    for line in SENTENCES.read_text().splitlines()
}


class ScriptedLabeler:
    """Votes like a small labeler: unanimous and right for most sentences, split 3-2 (the
    majority right) for every third one, and one vote cut for every fifth."""

    def __init__(self, embedded_model: str) -> None:
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.sampling: list[SamplingSpec] = []

    def __call__(self, request):
        self.sampling.append(request.sampling)
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        text = prompt.split("Text: ")[-1].split("<|im_end|>")[0].strip()
        right = GOLD[text]
        wrong = "negative" if right == "positive" else "positive"
        k = request.sampling.n
        votes = [right] * k
        number = sorted(GOLD).index(text)
        if number % 3 == 0:
            votes = [right, wrong, right, wrong, right][:k]
        samples = [(v, 1, "stop") for v in votes]
        if number % 5 == 0:
            samples[1] = ("posi", 1, "length")
        return EngineResult(
            request.request_id,
            samples[0][0],
            len(request.prompt_token_ids),
            k,
            "stop",
            samples=tuple(samples),
        )


def label_job(tmp_path, **label):
    return validate_config(
        {
            **BASE,
            "input": {"path": str(SENTENCES), "id_column": "id", "limit": 12},
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 5},
            "engine": {"max_model_len": 1024},
            "sampling": {"temperature": 1.0, "max_tokens": 8},
            "label": {**GOOD, "gold_column": "gold", **label},
        }
    )


def test_a_job_splits_rows_by_agreement_then_people_label_the_uncertain_ones(
    tmp_path, embedded_model
):
    engine = ScriptedLabeler(embedded_model)
    summary = run_job(
        label_job(tmp_path), show_progress=False, backend=FakeBackend(responder=engine)
    )
    assert {s.n for s in engine.sampling} == {5}
    assert {s.constraint for s in engine.sampling} == {Constraint("choice", choices=tuple(LABELS))}
    out = tmp_path / "out"
    store = OutputStore(out)
    confident = [r for t in store.data_tables() for r in t.to_pylist()]
    uncertain = [r for t in store.data_tables(split=UNCERTAIN) for r in t.to_pylist()]
    assert len(confident) + len(uncertain) == 12 and uncertain
    assert all(r["vote_share"] >= 0.8 for r in confident)
    assert all(r["vote_share"] < 0.8 for r in uncertain)
    assert all(r["label"] == r["gold"] for r in confident + uncertain)
    stats = summary.stats
    assert stats["rows_out"] == 12 and stats["accounted"]
    report = json.loads((out / "stats.json").read_text())["label"]
    assert report["rows"] == {"data": len(confident), "uncertain": len(uncertain)}
    assert report["votes"] == 60 and report["votes_not_a_label"] == sum(
        v is None for r in confident + uncertain for v in r["votes"]
    )
    assert report["gold"]["accuracy"] == 1.0 and report["gold"]["rows"] == 12
    from synth_ray.dataset.card import write_card

    write_card(store)
    card = (out / "README.md").read_text()
    assert "config_name: uncertain" in card and "@misc{li2023coannotating" in card

    # export: one task per uncertain row; people answer some, one of them against the model
    runner = CliRunner()
    done = runner.invoke(app, ["annotations", "export", str(out), "--to", str(tmp_path / "ls")])
    assert done.exit_code == 0, done.output
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert sorted(t["data"]["row_id"] for t in tasks) == sorted(r["id"] for r in uncertain)
    ET.fromstring((tmp_path / "ls" / "labeling_config.xml").read_text())
    by_id = {r["id"]: r for r in uncertain}
    export = []
    for i, t in enumerate(tasks):
        row = by_id[t["data"]["row_id"]]
        other = "negative" if row["label"] == "positive" else "positive"
        answer = (
            []
            if i == 0
            else [
                _annotation(other if i == 1 else row["label"], who={"id": 2, "email": "ann@x.org"})
            ]
        )
        export.append({**t, "id": 100 + i, "annotations": answer})
    export_path = tmp_path / "export.json"
    export_path.write_text(json.dumps(export))
    final = tmp_path / "final"
    merged = runner.invoke(
        app, ["annotations", "merge", str(out), str(export_path), "--to", str(final)]
    )
    assert merged.exit_code == 0, merged.output
    assert "1 uncertain rows nobody labelled (left out)" in merged.output
    rows = pq.read_table(final / "data.parquet").to_pylist()
    assert len(rows) == 11
    human = [r for r in rows if r["label_source"] == "human"]
    assert len(human) == len(uncertain) - 1
    assert {r["labelled_by"] for r in human} == {"human:ann@x.org"}
    assert {r["labelled_by"] for r in rows if r["label_source"] == "model"} == {
        "SmolLM2-135M-Instruct"
    }
    flipped = [r for r in human if r["label"] != r["model_label"]]
    assert len(flipped) == 1
    first = (final / "data.parquet").read_bytes()
    again = runner.invoke(
        app, ["annotations", "merge", str(out), str(export_path), "--to", str(final)]
    )
    assert again.exit_code == 0 and (final / "data.parquet").read_bytes() == first
    kept = runner.invoke(
        app,
        [
            "annotations",
            "merge",
            str(out),
            str(export_path),
            "--to",
            str(tmp_path / "all"),
            "--keep-unlabelled",
        ],
    )
    assert kept.exit_code == 0
    assert pq.read_table(tmp_path / "all" / "data.parquet").num_rows == 12

    # a bad export: one line, exit 2, the merged file untouched
    export[1]["annotations"][0]["result"][0]["value"]["choices"] = ["neutral"]
    export_path.write_text(json.dumps(export))
    bad = runner.invoke(
        app, ["annotations", "merge", str(out), str(export_path), "--to", str(final)]
    )
    assert bad.exit_code == 2
    assert "label 'neutral' is not one of positive, negative" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    assert (final / "data.parquet").read_bytes() == first


def test_annotations_refuse_an_output_that_is_no_label_job(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(
        app, ["annotations", "export", str(tmp_path / "none"), "--to", str(tmp_path / "x")]
    )
    assert missing.exit_code == 2 and "no synth-ray job here" in missing.output
    judged = tmp_path / "judged"
    judged.mkdir()
    (judged / "_job.json").write_text(json.dumps({"config": {"method": "judge"}}))
    other = runner.invoke(app, ["annotations", "merge", str(judged), "e.json", "--to", "x"])
    assert other.exit_code == 2 and "holds a judge job's output" in other.output


@pytest.mark.engine
def test_label_recipe_on_the_real_engine(tmp_path, shared_engine):
    """The recipe on the real engine (the session's warm one): every vote decoded as a label
    and every input row in exactly one split, by agreement; its card cites the papers. (Its
    resume after a kill is the stage path's, killed on real replicas in
    test_kill_anywhere.py; from the CLI, scripts/check_recipes.py runs it.)"""
    from synth_ray.config import load_config
    from synth_ray.dataset.card import write_card

    out = tmp_path / "out"
    overrides = [
        f"output.path={out}", "input.limit=24", "output.rows_per_shard=2", "label.votes=3",
        "scheduler.batch_size=2", "scheduler.max_in_flight_per_replica=2",
    ]  # fmt: skip
    config = load_config(REPO / "configs" / "label.yaml", overrides)
    run_job(config, show_progress=False, backend=shared_engine)
    write_card(OutputStore(out))
    store = OutputStore(out)
    confident = [r for t in store.data_tables() for r in t.to_pylist()]
    uncertain = [r for t in store.data_tables(split=UNCERTAIN) for r in t.to_pylist()]
    ids = [r["source_id"] for r in confident + uncertain]
    expected = [json.loads(line)["id"] for line in SENTENCES.read_text().splitlines()[:24]]
    assert sorted(ids) == sorted(expected)  # each row once, in one split
    for row in confident + uncertain:
        assert len(row["votes"]) == 3 and set(row["votes"]) <= set(LABELS), row
        assert row["labelled_by"] == "SmolLM2-135M-Instruct"
    assert all(r["vote_share"] >= 0.8 for r in confident)
    assert all(r["vote_share"] < 0.8 for r in uncertain)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accounted"] and stats["rows_in"] == 24
    assert stats["label"]["votes_not_a_label"] == 0 and stats["label"]["gold"]["rows"] == 24
    card = (out / "README.md").read_text()
    assert "@misc{li2023coannotating" in card and "@misc{gilardi2023chatgpt" in card
