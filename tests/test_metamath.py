"""MetaMath question bootstrapping: masking and FOBAR/SV construction, config errors, the
keep/drop rules of both stages on fabricated completions, the whole job on a scripted engine
(accounting, a kill in the answers stage resumed exactly), and one small run on the real engine.

    pytest tests/test_metamath.py
"""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from conftest import REPO, Crash, crash_on_commit, job_config, write_jsonl
from fake_backend import FakeBackend, overlapped

from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult, SamplingSpec
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.base import Dropped, Kept, row_id
from synth_ray.methods.metamath import (
    Masked,
    MetaMathAnswers,
    MetaMathConfig,
    MetaMathQuestions,
    fobar_question,
    mask_for,
    mask_number,
    maskable_numbers,
    split_question_sentence,
    sv_question,
)
from synth_ray.runtime.job import run_job

QUESTIONS = REPO / "examples" / "arith_questions.jsonl"
INPUT = [json.loads(line) for line in QUESTIONS.read_text().splitlines()]
REFERENCES = {r["id"]: r["answer"].split("####")[-1].strip().replace(",", "") for r in INPUT}
FOBAR_SENTENCE = (
    "If we know the answer to the above question is {}, what is the value of unknown variable x?"
)


def config(tmp_path, path=QUESTIONS, **metamath):
    return job_config(
        tmp_path,
        path,
        method="metamath",
        input={"path": str(path), "id_column": "id"},
        engine={"max_model_len": 2048},
        metamath=metamath,
        output={"rows_per_shard": 4},
    )


def rows(path, stage=None):
    return [r for f in OutputStore(path).data_files(stage) for r in pq.read_table(f).to_pylist()]


# --- masking and the bootstrapped questions -------------------------------------------------


def test_only_whole_numbers_other_than_the_answer_are_maskable():
    question = "On the 5th day a 10-minute walk at 3:30 cost $1,200, then 12 (4) more; 50% off."
    values = [v for _, _, v in maskable_numbers(question, answer="12")]
    assert values == ["1200", "50"]  # not "5th", "10-minute", "3:30", "(4)", nor the answer 12
    masked = [mask_number(question, "12", f"k{i}") for i in range(20)]
    assert {m.question for m in masked} == {  # the $ and the trailing punctuation stay
        question.replace("$1,200,", "$x,"),
        question.replace("50%", "x%"),
    }


def test_masked_number_is_chosen_by_the_key_and_the_same_every_time():
    question = "Ann has 3 bags of 7 apples and 11 pears. She eats 2. How many fruits are left?"
    chosen = {mask_number(question, "30", f"q{i}").value for i in range(40)}
    assert chosen == {"3", "7", "11", "2"}  # every number can be picked ...
    first = mask_for("q1", "fobar", question, "30")
    assert all(mask_for("q1", "fobar", question, "30") == first for _ in range(5))  # ... stably
    assert isinstance(first, Masked) and first.question.count("x") == 1
    assert first.question.replace("x", first.token) == question


def test_questions_that_cannot_be_masked_say_why():
    assert mask_number("How many legs do two cats have?", "8", "k") == "no_number"
    assert mask_number("Tom has 8 apples. How many does he have?", "8", "k") == "no_number"
    assert mask_number("A 3 x 4 grid has how many cells?", "12", "k") == "variable_in_question"
    assert isinstance(mask_number("Max has 3 boxes of 3. How many?", "9", "k"), Masked)  # "Max"


def test_fobar_question_is_metamaths_template():
    cfg = MetaMathConfig()
    masked = mask_for("q02", "fobar", INPUT[2]["question"], "180")
    assert isinstance(masked, Masked)
    text = fobar_question(cfg, masked.question, "180")
    assert text == masked.question + "\n" + FOBAR_SENTENCE.format(180)
    assert masked.value in ("60", "3") and masked.value != "180"
    upper = MetaMathConfig(variable="X")
    assert fobar_question(upper, "X apples", "5").endswith("unknown variable X?")


def test_sv_rewrites_only_the_last_sentence():
    before, sentence = split_question_sentence("A box holds x apples. It costs $1.50. How many?")
    assert (before, sentence) == ("A box holds x apples. It costs $1.50.", "How many?")
    assert split_question_sentence("If x ate 35, how many are left?") == (
        "",
        "If x ate 35, how many are left?",
    )
    cfg = MetaMathConfig()
    assert sv_question(cfg, "A box holds x apples. 7 boxes hold 63.") == (
        "A box holds x apples. 7 boxes hold 63. What is the value of unknown variable x?"
    )


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"augmentations": []}, "metamath.augmentations: .*at least one of rephrase, fobar, sv"),
        ({"augmentations": ["fobar", "fobar"]}, "metamath.augmentations: .*fobar is given twice"),
        ({"augmentations": ["ansaug"]}, "metamath.augmentations"),
        ({"n": 2, "k": 3}, "k: 3 is more than n=2"),
        (
            {"templates": {"fobar": "{question} no answer"}},
            "templates.fobar: must contain {answer}",
        ),
        ({"templates": {"hint": "x"}}, "templates.hint: unknown template"),
        ({"variable": "xy"}, "metamath.variable"),
        ({"answer_column": ""}, "metamath.answer_column"),
        ({"mode": "star"}, "metamath.mode"),
    ],
)
def test_bad_metamath_config(section, message):
    from synth_ray.config import validate_config
    from synth_ray.errors import ConfigError

    base = {"method": "metamath", "input": {"path": "x"}, "output": {"path": "o"}}
    with pytest.raises(ConfigError, match=message):
        validate_config({**base, "metamath": section})


def test_recipe_and_paper():
    from synth_ray.config import load_config
    from synth_ray.methods import method_spec
    from synth_ray.methods.papers import PAPERS

    recipe = load_config(REPO / "configs" / "metamath.yaml")
    assert recipe.method == "metamath" and recipe.section.augmentations == [
        "rephrase",
        "fobar",
        "sv",
    ]
    assert method_spec("metamath").papers(recipe) == ["yu2023metamath"]
    assert "2309.12284" in PAPERS["yu2023metamath"].bibtex()


# --- both stages' rules on fabricated completions --------------------------------------------


def result(text, finish="stop", samples=()):
    return EngineResult("r", text, 10, 5, finish, samples=tuple(samples))


def doc(qid="q00", question=INPUT[0]["question"], answer=INPUT[0]["answer"]):
    return Document(0, qid, question, extra={"answer": answer})


def test_questions_stage_expands_rephrase_and_sv_and_errors_bad_rows():
    stage = MetaMathQuestions(MetaMathConfig())
    rephrase, sv = stage.expand(doc())
    assert rephrase.fields["augmentation"] == "rephrase" and sv.fields["augmentation"] == "sv"
    assert rephrase.messages[0]["content"].startswith(
        "You are an AI assistant to help me rephrase questions."
    )
    assert rephrase.messages[0]["content"].endswith(
        f"Question: {INPUT[0]['question']}\nRephrase the above question:"
    )
    assert sv.messages[0]["content"].endswith(
        "Question: How many cows does he have now? The answer is 33.\nResult:"
    )
    assert sv.fields["expected_answer"] == sv.fields["masked_number"] in ("3", "14", "9")
    bad = stage.expand(doc(answer="about forty"))
    assert len(bad) == 1 and bad[0].width == 3 and "no numeric final answer" in bad[0].error
    assert (
        stage.expand(doc(question="What is two plus two?", answer="#### 4"))[0].fields[
            "augmentation"
        ]
        == "rephrase"
    )  # nothing to mask: no SV request (the driver counts no_number)
    only_fobar = MetaMathQuestions(MetaMathConfig(augmentations=["fobar"]))
    assert only_fobar.expand(doc()) == []


def test_questions_stage_drops_unusable_rewrites():
    stage = MetaMathQuestions(MetaMathConfig())
    rephrase, sv = stage.expand(doc())
    original = INPUT[0]["question"]

    def outcome(candidate, text, finish="stop"):
        return stage.finish(candidate, result(text, finish))

    kept = outcome(rephrase, "Rephrase the above question: How many cows remain?\nQuestion: ...")
    assert isinstance(kept, Kept) and kept.row["question"] == "How many cows remain?"
    assert kept.row["expected_answer"] == "33" and kept.row["masked_number"] is None
    assert outcome(rephrase, "  \n") == Dropped("empty_rephrase")
    assert outcome(rephrase, original.upper() + " ") == Dropped("same_as_original")
    assert outcome(rephrase, "If a farmer has 3 fields", "length") == Dropped("truncated")
    assert outcome(rephrase, "He has 42 - 9 = 33 cows.") == Dropped("not_a_question")
    statement = outcome(sv, "Result: He has 33 cows now.")
    assert isinstance(statement, Kept) and statement.row["masked_number"] == "3"
    assert statement.row["question"] == (
        "A farmer has x fields with 14 cows each. He sells 9 cows. He has 33 cows now. "
        "What is the value of unknown variable x?"
    )
    assert outcome(sv, "He has some cows now.") == Dropped("lost_answer")
    assert outcome(sv, "") == Dropped("empty_statement")
    # the masked number sits in the question sentence, and the rewrite lost it
    lena = Document(0, "q06", INPUT[6]["question"], extra={"answer": INPUT[6]["answer"]})
    sv6 = MetaMathQuestions(MetaMathConfig(augmentations=["sv"])).expand(lena)[0]
    assert "$x" in sv6.messages[0]["content"].splitlines()[-2]
    assert stage.finish(sv6, result("It takes 8 weeks.")) == Dropped("lost_variable")
    assert isinstance(stage.finish(sv6, result("It takes 8 weeks until she has $x.")), Kept)


def test_answers_stage_keeps_up_to_k_correct_samples():
    stage = MetaMathAnswers(MetaMathConfig(n=5, k=2), "model")
    extra = {
        "augmentation": "fobar",
        "original_question": "q",
        "expected_answer": "14",
        "masked_number": "14",
    }
    (candidate,) = stage.expand(Document(0, "q00", "A farmer has 3 fields ...", extra=extra))
    assert candidate.width == 5 and stage.sampling_overrides() == {"n": 5}
    prompt = candidate.messages[0]["content"]
    assert prompt.startswith("Solve each problem.") and prompt.endswith(
        "Q: A farmer has 3 fields ...\nA:"
    )
    assert FOBAR_SENTENCE.format(18) in prompt  # the backward exemplars, FOBAR-shaped
    samples = [
        ("3 * x - 9 = 33, x = 14.\n#### 14\nQ: invented next\n#### 99", 9, "stop"),
        ("x = 13\n#### 13", 5, "stop"),
        ("so the answer is 14 and then", 6, "length"),  # no #### line: not guessed
        ("so x is 14\n#### 14", 6, "stop"),
        ("#### 14", 2, "stop"),
    ]
    outcomes = stage.finish(candidate, result("", samples=samples))
    assert outcomes[1:3] == [Dropped("incorrect"), Dropped("no_answer")]
    assert isinstance(outcomes[0], Kept) and isinstance(outcomes[3], Kept)
    assert outcomes[4] == Dropped("over_k")
    first = outcomes[0].row
    assert first["rationale"] == "3 * x - 9 = 33, x = 14.\n#### 14"  # cut at its first answer
    assert first["answer"] == first["expected_answer"] == "14" and first["n_output_tokens"] == 9
    assert first["id"] != outcomes[3].row["id"] == candidate.sample_id(3)
    rephrase = MetaMathAnswers(MetaMathConfig(), "m").prompt("rephrase", "Q?")
    assert "A baker makes 12 muffins per tray and bakes 4 trays." in rephrase
    assert "unknown variable" not in rephrase  # forward exemplars for rephrased questions


# --- metamath.constrain: the answers stage's format, against the parser that scores it -------


def constrained_config(tmp_path, max_tokens=128, constrain=True, **metamath):
    """A job on the example questions with `metamath.constrain` (None: left out)."""
    section = {**metamath, **({} if constrain is None else {"constrain": constrain})}
    return job_config(
        tmp_path,
        QUESTIONS,
        method="metamath",
        input={"path": str(QUESTIONS), "id_column": "id"},
        engine={"max_model_len": 2048},
        sampling={"max_tokens": max_tokens},
        metamath=section,
    )


@pytest.mark.parametrize("max_tokens", [23, 64, 128])
def test_every_constrained_rationale_is_scored_on_its_answer_line(max_tokens):
    """Property, over random strings of the answers stage's language (hypothesis is not a
    dependency): no sample is dropped as `no_answer`; each is scored on its `#### N`."""
    import random

    from test_self_improve import sample_constrained

    from synth_ray.methods.checkers import normalize_number
    from synth_ray.methods.self_improve import answer_line_regex

    answers = MetaMathAnswers(MetaMathConfig(n=1, constrain=True), "m")
    sampling = answers.stage_sampling(SamplingSpec(0.7, 0.95, max_tokens))
    assert sampling.constraint.value == answer_line_regex(max_tokens) and sampling.n == 1
    extra = {
        "augmentation": "fobar",
        "original_question": "q",
        "expected_answer": "14",
        "masked_number": "14",
    }
    (question,) = answers.expand(Document(0, "q00", "q?", extra=extra))
    rng = random.Random(max_tokens)
    for _ in range(1000):
        text, number = sample_constrained(rng, max_tokens)
        [outcome] = answers.finish(question, result(text))
        if normalize_number(number) == "14":
            assert isinstance(outcome, Kept) and outcome.row["answer"] == "14", text
        else:
            assert outcome == Dropped("incorrect"), text
    [kept] = answers.finish(question, result(" 3 * x - 9 = 33, so x = 14.\n#### 14"))
    assert kept.row["rationale"] == "3 * x - 9 = 33, so x = 14.\n#### 14"


def test_constrain_decodes_only_the_answers_stage_and_enters_the_fingerprint(tmp_path):
    """Stage 1 stays free (its checks judge whether the model rephrased or restated at all);
    off, nothing is constrained; the option is in the fingerprint only when on; the recipe
    has it on."""
    from synth_ray.config import load_config

    questions = MetaMathQuestions(MetaMathConfig(constrain=True))
    assert questions.stage_sampling(SamplingSpec(0.7, 0.95, 128)).constraint is None
    answers = MetaMathAnswers(MetaMathConfig(), "m")
    assert answers.stage_sampling(SamplingSpec(0.7, 0.95, 128)).constraint is None
    off = constrained_config(tmp_path, constrain=False)
    assert off.fingerprint() == constrained_config(tmp_path, constrain=None).fingerprint()
    assert off.fingerprint() != constrained_config(tmp_path).fingerprint()
    with pytest.raises(ConfigError, match="metamath.constrain: sampling.max_tokens 22 leaves"):
        constrained_config(tmp_path, max_tokens=22)
    assert load_config(REPO / "configs" / "metamath.yaml").section.constrain


# --- the whole job on a scripted engine -------------------------------------------------------


class ScriptedEngine:
    """Rephrases as "In other words, <question>", states an SV answer as "It comes to N.", and
    answers the bootstrapped questions with `samples` ("right": the expected answer)."""

    def __init__(self, embedded_model, inputs=INPUT, samples=("999", "right", "right")):
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.samples = samples
        cfg = MetaMathConfig()
        self.expected: dict[str, str] = {}
        for row in inputs:
            question = row["question"]
            ref = row["answer"].split("####")[-1].strip().replace(",", "")
            self.expected[f"In other words, {question}"] = ref
            fobar = mask_for(row["id"], "fobar", question, ref)
            if isinstance(fobar, Masked):
                self.expected[fobar_question(cfg, fobar.question, ref)] = fobar.value
            sv = mask_for(row["id"], "sv", question, ref)
            if isinstance(sv, Masked):
                before = split_question_sentence(sv.question)[0]
                statement = f"{before} It comes to {ref}.".strip()
                self.expected[sv_question(cfg, statement)] = sv.value

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        if "Rephrase the above question:" in prompt:
            question = prompt.split("Question: ")[-1].split("\nRephrase the above question:")[0]
            samples = [f"In other words, {question}"]
        elif "\nResult:" in prompt:
            answer = re.findall(r"The answer is (\S+)\.", prompt)[-1]
            samples = [f"It comes to {answer}."]
        else:
            right = self.expected[prompt.split("Q: ")[-1].split("\nA:")[0]]
            answers = [right if a == "right" else a for a in self.samples]
            samples = [f"Reasoning.\n#### {a}" for a in answers]
        outs = tuple((text, 4, "stop") for text in samples)
        return EngineResult(
            request.request_id,
            outs[0][0],
            len(request.prompt_token_ids),
            4 * len(outs),
            "stop",
            samples=outs if len(outs) > 1 else (),
        )


def test_job_bootstraps_every_question_and_accounts_for_every_row(tmp_path, embedded_model):
    backend = FakeBackend(responder=ScriptedEngine(embedded_model))
    summary = run_job(config(tmp_path, n=3, k=1), show_progress=False, backend=backend)
    out = rows(tmp_path / "out")
    stats = summary.stats
    # q06's SV masks the $120 of its question sentence, which "It comes to 8." loses
    assert stats["dropped_by_filter"] == {"incorrect": 29, "over_k": 29, "lost_variable": 3}
    assert stats["rows_in"] == 10 * 3 * 3 and stats["rows_out"] == 29 and stats["accounted"]
    assert stats["input_documents"] == 10 and stats["rows_errored"] == 0
    per = stats["metamath"]["augmentations"]
    assert per["rephrase"] == {"asked": 10, "bootstrapped": 10, "rows_out": 10}
    assert per["fobar"] == {"asked": 10, "bootstrapped": 10, "rows_out": 10}
    assert per["sv"] == {"asked": 10, "bootstrapped": 9, "rows_out": 9}
    assert all(r["answer"] == r["expected_answer"] for r in out)
    assert len({r["id"] for r in out}) == 29
    for r in out:
        if r["augmentation"] == "rephrase":
            assert r["masked_number"] is None and r["expected_answer"] == REFERENCES[r["source_id"]]
        else:
            assert r["expected_answer"] == r["masked_number"] != REFERENCES[r["source_id"]]
            assert "unknown variable x" in r["question"]
        assert r["original_question"] == INPUT[int(r["source_id"][1:])]["question"]
    names = sorted(p.name for p in (tmp_path / "out" / "data").iterdir())
    assert all(name.startswith("answers-part-") for name in names)
    again = FakeBackend(responder=ScriptedEngine(embedded_model))
    rerun = run_job(config(tmp_path, n=3, k=1), show_progress=False, backend=again)
    assert again.generated == [] and rerun.stats["rows_out"] == 29  # done: nothing re-asked


def test_the_driver_reads_no_row_to_build_the_answers_stage(tmp_path, embedded_model, monkeypatch):
    """The answers stage goes by reference: each unit's replica reads its stage-1 unit's input
    rows and committed questions and builds the bootstrapped questions. From stage 1's end on,
    the driver reads neither an input row nor an output shard, and the per-augmentation
    counts come from the units' stats."""
    from conftest import watch_driver_reads

    seen = watch_driver_reads(monkeypatch, after_stage="questions")
    backend = FakeBackend(responder=ScriptedEngine(embedded_model))
    specs = []
    real_add = backend.add_stage
    backend.add_stage = lambda spec: (specs.append(spec), real_add(spec))[-1]
    summary = run_job(config(tmp_path, n=3, k=1), show_progress=False, backend=backend)
    assert seen["watching"] and seen["reads"] == []
    [answers] = [spec for spec in specs if spec.stage == "answers"]
    assert not isinstance(answers.documents, list)  # no question travels with it
    per = summary.stats["metamath"]["augmentations"]
    assert per["sv"] == {"asked": 10, "bootstrapped": 9, "rows_out": 9}
    assert per["fobar"] == {"asked": 10, "bootstrapped": 10, "rows_out": 10}


def test_answers_are_asked_while_questions_are_still_coming(tmp_path, embedded_model):
    """The two stages share the job's replicas: a unit's answers go out as soon as its
    questions commit, before the last questions are sent (one question per unit, at most 3
    in flight); the rows are those of the stages one after the other."""
    engine = ScriptedEngine(embedded_model)
    apart = config(tmp_path / "apart", n=3, k=1).model_dump(mode="json")
    apart["output"]["rows_per_shard"] = 1
    apart["scheduler"]["stream_stages"] = False
    run_job(validate_config(apart), show_progress=False, backend=FakeBackend(responder=engine))
    together = config(tmp_path, n=3, k=1).model_dump(mode="json")
    together["output"]["rows_per_shard"] = 1
    together["scheduler"] |= {"max_in_flight_per_replica": 1, "batch_size": 1}
    backend = FakeBackend(responder=engine)
    summary = run_job(validate_config(together), show_progress=False, backend=backend)
    assert overlapped(backend, "questions", "answers")
    assert sorted(r["id"] for r in rows(tmp_path / "out")) == sorted(
        r["id"] for r in rows(tmp_path / "apart" / "out")
    )
    assert summary.stats["accounted"] and summary.stats["rows_out"] == 29


def test_killed_in_answers_stage_resumes_exactly(tmp_path, embedded_model, monkeypatch):
    engine = ScriptedEngine(embedded_model, samples=("999", "right"))
    clean = run_job(
        config(tmp_path / "clean", n=2, k=2),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    with monkeypatch.context() as patch:
        crash_on_commit(patch, lambda record: record.stage == "answers" and record.unit_index == 2)
        with pytest.raises(Crash):
            run_job(
                config(tmp_path, n=2, k=2),
                show_progress=False,
                backend=FakeBackend(responder=engine),
            )
    work = OutputStore(tmp_path / "out" / "stages")
    committed = {q["source_id"] for q in rows(tmp_path / "out" / "stages", "questions")}
    assert committed and work.committed("questions")
    backend = FakeBackend(responder=engine)
    resumed = run_job(config(tmp_path, n=2, k=2), show_progress=False, backend=backend)
    asked = {
        row_id(r["id"], "metamath", a, "question")
        for r in INPUT
        if r["id"] in committed
        for a in ("rephrase", "sv")
    }
    assert asked.isdisjoint(backend.generated)  # committed questions were not re-asked
    assert 0 < len(backend.generated) < 29  # only what no committed unit holds
    assert resumed.units_skipped > 0
    assert sorted(r["id"] for r in rows(tmp_path / "out")) == sorted(
        r["id"] for r in rows(tmp_path / "clean" / "out")
    )
    for key in ("rows_in", "rows_out", "dropped_by_filter", "input_documents", "metamath"):
        assert resumed.stats[key] == clean.stats[key]


def test_bad_rows_and_unmaskable_questions_are_counted(tmp_path, embedded_model):
    inputs = [
        {
            "id": "a",
            "question": "Tom has 4 bags of 5 apples. How many apples?",
            "answer": "#### 20",
        },
        {"id": "b", "question": "What is two plus two?", "answer": "It is 4.\n#### 4"},
        {"id": "c", "question": "How many legs do 3 cats have?", "answer": "about a dozen"},
        {"id": "d", "question": "", "answer": "#### 1"},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", inputs)
    engine = ScriptedEngine(embedded_model, inputs=inputs, samples=("right",))
    summary = run_job(
        config(tmp_path, path, n=1), show_progress=False, backend=FakeBackend(responder=engine)
    )
    stats = summary.stats
    assert stats["errored_by_stage"] == {"input": 6}  # c and d, once per augmentation
    assert stats["dropped_by_filter"] == {"no_number": 2}  # b: fobar and sv
    assert stats["rows_out"] == 4 and stats["rows_in"] == 12 and stats["accounted"]
    errors = pq.read_table(tmp_path / "out" / "stages" / "errors").to_pylist()
    assert {e["error"] for e in errors} == {
        "empty question",
        "reference answer has no numeric final answer",
    }
    # FOBAR alone asks the model nothing in stage 1 (its units hold only the bad rows)
    fobar = FakeBackend(responder=engine)
    only = run_job(
        config(tmp_path / "fobar", path, n=1, augmentations=["fobar"]),
        show_progress=False,
        backend=fobar,
    )
    assert only.stats["rows_out"] == 1 and only.stats["rows_in"] == 4 and only.stats["accounted"]
    assert len(fobar.generated) == 1


# --- the real engine --------------------------------------------------------------------------


@pytest.mark.engine
def test_metamath_on_real_engine_then_resume_is_a_no_op(tmp_path, shared_engine):
    from synth_ray.methods.self_improve import answer_line_regex

    cfg = job_config(
        tmp_path,
        QUESTIONS,
        method="metamath",
        input={"path": str(QUESTIONS), "id_column": "id", "limit": 2},
        engine={"max_model_len": 2048},
        sampling={"max_tokens": 64, "temperature": 0.8},
        metamath={"n": 2, "k": 2, "constrain": True},
    )
    summary = run_job(cfg, show_progress=False, backend=shared_engine)
    stats = summary.stats
    assert stats["accounted"] and stats["input_documents"] == 2
    assert stats["rows_in"] == 2 * 3 * 2 and stats["rows_errored"] == 0
    # constrained: every rationale (at least FOBAR's 2 x 2) ends in its answer line
    assert "no_answer" not in stats["dropped_by_filter"], stats["dropped_by_filter"]
    per = stats["metamath"]["augmentations"]
    assert set(per) == {"rephrase", "fobar", "sv"}
    assert per["fobar"]["asked"] == per["fobar"]["bootstrapped"] == 2  # template only
    out = rows(tmp_path / "out")
    assert len(out) == stats["rows_out"] == sum(p["rows_out"] for p in per.values())
    language = re.compile(answer_line_regex(64))
    for r in out:
        assert r["answer"] == r["expected_answer"] and r["model"] == "SmolLM2-135M-Instruct"
        assert language.fullmatch(r["rationale"]) and r["finish_reason"] == "stop", r
    again = run_job(cfg, show_progress=False, backend=shared_engine)
    assert again.units_skipped == again.units_total
    assert rows(tmp_path / "out") == out and again.stats["rows_in"] == stats["rows_in"]
