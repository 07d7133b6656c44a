"""Self-improvement (STaR, rejection sampling, self-consistency) through the whole job path
with a scripted engine whose answers are known, including STaR killed between its stages."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from conftest import REPO, Crash, crash_on_commit, job_config
from fake_backend import FakeBackend, overlapped

from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult
from synth_ray.io.output_store import OutputStore
from synth_ray.runtime.job import run_job

QUESTIONS = REPO / "examples" / "arith_questions.jsonl"
REFERENCES = {
    json.loads(line)["id"]: json.loads(line)["answer"].split("####")[-1].strip().replace(",", "")
    for line in QUESTIONS.read_text().splitlines()
}


def config(tmp_path, **self_improve):
    return job_config(
        tmp_path,
        QUESTIONS,
        method="self_improve",
        input={"path": str(QUESTIONS), "id_column": "id"},
        self_improve={"checker": "numeric", **self_improve},
        output={"rows_per_shard": 3},
    )


class ScriptedEngine:
    """Answers from the prompt: correct when the hint is present or the question's id-number
    is even (for STaR); a fixed list of sample answers otherwise."""

    def __init__(self, embedded_model, samples=None):
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.samples = samples
        self.questions = {
            json.loads(line)["question"]: json.loads(line)["id"]
            for line in QUESTIONS.read_text().splitlines()
        }

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        last_q = prompt.split("Q: ")[-1]
        hinted = "(Hint:" in last_q
        question = last_q.split(" (Hint:")[0].split("\nA:")[0].strip()
        qid = self.questions[question]
        right = REFERENCES[qid]
        if self.samples is not None:
            answers = [right if a == "right" else a for a in self.samples]
        else:
            answers = [right if hinted or int(qid[1:]) % 2 == 0 else "999"]
        samples = tuple(
            (f"Reasoning for {qid}.\n#### {a}" if a else "no idea", 7, "stop") for a in answers
        )
        return EngineResult(
            request.request_id,
            samples[0][0],
            len(request.prompt_token_ids),
            7 * len(samples),
            "stop",
            samples=samples if len(samples) > 1 else (),
        )


def rows(path, stage=None):
    files = OutputStore(path).data_files(stage)
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def test_star_direct_then_rationalized(tmp_path, embedded_model):
    summary = run_job(
        config(tmp_path, mode="star"),
        show_progress=False,
        backend=FakeBackend(responder=ScriptedEngine(embedded_model)),
    )
    out = rows(tmp_path / "out")
    by_source = {r["source_id"]: r for r in out}
    assert set(by_source) == set(REFERENCES)  # every question ends with one kept rationale
    for qid, row in by_source.items():
        assert row["source"] == ("direct" if int(qid[1:]) % 2 == 0 else "rationalized")
        assert (
            row["correct"] is True and row["answer"] == REFERENCES[qid] == row["reference_answer"]
        )
        assert "Hint" not in row["question"]  # stored without the hint
        assert row["iteration"] == 0
    stats = summary.stats
    assert stats["rows_out"] == 10 and stats["dropped_by_filter"] == {"incorrect": 5}
    assert stats["rows_in"] == 15 and stats["accounted"]
    assert stats["input_documents"] == 10  # the 5 re-asked questions are not new input
    names = sorted(p.name for p in (tmp_path / "out" / "data").iterdir())
    assert names[0].startswith("direct-part-") and names[-1].startswith("rationalize-part-")


def test_star_rationalizes_a_unit_while_later_ones_are_still_asked(tmp_path, embedded_model):
    """The two stages share the job's replicas: a direct unit's wrong answers are
    rationalized as soon as it commits, before the last direct question is sent (one
    question per unit, at most 3 in flight); the rows are the stages' one after the other."""
    engine = ScriptedEngine(embedded_model)

    def star(folder, **scheduler):
        return job_config(
            folder, QUESTIONS, method="self_improve", input={"id_column": "id"},
            self_improve={"checker": "numeric", "mode": "star"},
            output={"rows_per_shard": 1}, scheduler=scheduler,
        )  # fmt: skip

    run_job(
        star(tmp_path / "apart", stream_stages=False),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    backend = FakeBackend(responder=engine)
    summary = run_job(
        star(tmp_path, max_in_flight_per_replica=1, batch_size=1),
        show_progress=False,
        backend=backend,
    )
    assert overlapped(backend, "direct", "rationalize")
    assert sorted(r["id"] for r in rows(tmp_path / "out")) == sorted(
        r["id"] for r in rows(tmp_path / "apart" / "out")
    )
    assert summary.stats["rows_out"] == 10 and summary.stats["accounted"]


def test_star_killed_in_rationalize_stage_resumes_exactly(tmp_path, embedded_model, monkeypatch):
    engine = ScriptedEngine(embedded_model)
    clean = run_job(
        config(tmp_path / "clean", mode="star"),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )

    with monkeypatch.context() as patch:
        crash_on_commit(patch, lambda record: record.stage == "rationalize")
        with pytest.raises(Crash):
            run_job(
                config(tmp_path, mode="star"),
                show_progress=False,
                backend=FakeBackend(responder=engine),
            )
    store = OutputStore(tmp_path / "out")
    direct = store.committed("direct")  # the stages run at once: some may be uncommitted
    assert direct and not store.committed("rationalize")
    unasked = 10 - store.totals("direct").input_documents
    backend = FakeBackend(responder=engine)
    resumed = run_job(config(tmp_path, mode="star"), show_progress=False, backend=backend)
    assert resumed.units_skipped == len(direct)  # no committed direct unit regenerated
    sent = set(backend.generated)
    assert len(sent) == 5 + unasked  # the 5 wrong questions, rationalized, and the unasked
    ids = sorted(r["id"] for r in rows(tmp_path / "out"))
    assert ids == sorted(r["id"] for r in rows(tmp_path / "clean" / "out")) and len(
        set(ids)
    ) == len(ids)
    assert resumed.stats["rows_in"] == clean.stats["rows_in"]


def test_rejection_keeps_up_to_k_correct(tmp_path, embedded_model):
    engine = ScriptedEngine(embedded_model, samples=["5", "right", "right", "right"])
    summary = run_job(
        config(tmp_path, mode="rejection", n=4, k=2),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    out = rows(tmp_path / "out")
    assert len(out) == 20 and {r["source"] for r in out} == {"direct"}
    assert all(r["correct"] for r in out)
    assert summary.stats["dropped_by_filter"] == {"incorrect": 10, "over_k": 10}
    assert summary.stats["rows_in"] == 40 and summary.stats["accounted"]
    assert len({r["id"] for r in out}) == 20


@pytest.mark.parametrize(
    ("samples", "min_agreement", "kept", "drops"),
    [
        (["5", "5", "7", None], 0.5, 20, {"disagrees_with_majority": 20}),
        (["5", "6", "7", "8"], 0.5, 0, {"no_majority": 40}),
        ([None, None, None, None], 0.5, 0, {"no_answer": 40}),
        (["right", "right", "right", "4"], 0.75, 30, {"disagrees_with_majority": 10}),
    ],
)
def test_self_consistency_majority_vote(
    tmp_path, embedded_model, samples, min_agreement, kept, drops
):
    engine = ScriptedEngine(embedded_model, samples=samples)
    cfg = config(tmp_path, mode="self_consistency", n=4, min_agreement=min_agreement)
    summary = run_job(cfg, show_progress=False, backend=FakeBackend(responder=engine))
    out = rows(tmp_path / "out")
    assert len(out) == kept and summary.stats["dropped_by_filter"] == drops
    assert all(r["source"] == "majority" for r in out)
    if samples[0] == "right":
        assert all(r["correct"] for r in out)


def test_question_without_reference_answer_is_an_error_row(tmp_path, embedded_model):
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"id": "a", "question": "What is 2+2?", "answer": "four, I think"}) + "\n"
    )
    cfg = job_config(
        tmp_path,
        path,
        method="self_improve",
        input={"path": str(path), "id_column": "id"},
        self_improve={"mode": "rejection", "n": 2, "k": 1},
    )
    summary = run_job(cfg, show_progress=False, backend=FakeBackend())
    assert summary.stats["errored_by_stage"] == {"input": 2}  # both planned samples accounted
    error = pq.read_table(tmp_path / "out" / "errors").to_pylist()[0]
    assert re.search("no numeric final answer", error["error"])


def test_bad_self_improve_config(tmp_path):
    from synth_ray.config import validate_config
    from synth_ray.errors import ConfigError

    base = {"method": "self_improve", "input": {"path": "x"}, "output": {"path": "o"}}
    with pytest.raises(ConfigError, match="self_improve.answer_column"):
        validate_config({**base, "self_improve": {"mode": "star", "answer_column": None}})
    with pytest.raises(ConfigError, match="k: 5 is more than n=2"):
        validate_config({**base, "self_improve": {"mode": "rejection", "n": 2, "k": 5}})
    with pytest.raises(ConfigError, match="self_improve.mode"):
        validate_config({**base, "self_improve": {"mode": "bootstrap"}})


def test_cli_prints_samples_of_any_method(tmp_path, embedded_model, capsys):
    from synth_ray import cli

    engine = ScriptedEngine(embedded_model, samples=["right", "right"])
    run_job(
        config(tmp_path, mode="rejection", n=2, k=2),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    cli._print_samples(tmp_path / "out", 2)
    printed = capsys.readouterr().out
    assert "A farmer has 3 fields" in printed and "Reasoning for q00" in printed
    empty = tmp_path / "empty"
    engine = ScriptedEngine(embedded_model, samples=["999", "998"])  # wrong for every question
    run_job(
        config(empty, mode="rejection", n=2, k=1),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    cli._print_samples(empty / "out", 2)
    assert "no output rows to show" in capsys.readouterr().out


def _method(stage="direct", **overrides):
    from synth_ray.methods.base import Candidate
    from synth_ray.methods.self_improve import SelfImproveConfig, SelfImproveMethod

    method = SelfImproveMethod(SelfImproveConfig(**overrides), "m", stage=stage)
    candidate = Candidate(
        "r1", "q1", fields={"question": "How many?", "reference_answer": "18"}, width=1
    )
    return method, candidate


def _finish(method, candidate, text):
    return method.finish(candidate, EngineResult("r1", text, 10, 5, "length"))


def test_first_answer_line_is_scored_and_the_invented_next_problem_is_cut():
    # the model answers 18, then invents the next few-shot problem and answers it too
    text = (
        "She bakes 12 * 4 = 48. 48 - 30 = 18.\n#### 18\n\n"
        "Q: A train goes 60 km in 1 hour. How far in 3 hours?\nA: 60 * 3 = 180.\n#### 180"
    )
    method, candidate = _method()
    [outcome] = _finish(method, candidate, text)
    assert outcome.row["answer"] == "18" and outcome.row["correct"] is True
    assert outcome.row["rationale"] == "She bakes 12 * 4 = 48. 48 - 30 = 18.\n#### 18"
    # and the reverse: a wrong first answer is not rescued by an invented problem's answer
    wrong = "12 * 4 = 48, so 40.\n#### 40\n\nQ: What is 9 + 9?\nA: 9 + 9 = 18.\n#### 18"
    [outcome] = _finish(method, candidate, wrong)
    assert outcome.filter_name == "incorrect"


def test_without_an_answer_line_the_invented_question_is_cut_before_scoring():
    from synth_ray.methods.self_improve import cut_at_first_answer

    text = "48 - 30 = 18 muffins are left.\n\nQ: Tom has 7 apples and eats 2.\nA: 5"
    assert cut_at_first_answer(text) == "48 - 30 = 18 muffins are left."
    method, candidate = _method()
    [outcome] = _finish(method, candidate, text)
    assert outcome.row["answer"] == "18"


@pytest.mark.parametrize(
    "text",
    [
        "The hint says the answer is 18, so 48 - 30 = 18.\n#### 18",
        "Using the given answer of 18: 48 - 30 = 18.\n#### 18",
        "As the correct answer is 18, we check 48 - 30 = 18.\n#### 18",
        # knowing the answer from the hint without naming it
        "We know the answer is 18, so she bakes 12 * 4 = 48 and 48 - 30 = 18.\n#### 18",
        "We are told that the answer is 18. 12 * 4 = 48 muffins, 48 - 30 = 18.\n#### 18",
        "We already know that the final answer is 18: 48 - 30 = 18.\n#### 18",
        "Since the answer is 18, she must have sold 48 - 18 = 30.\n#### 18",
        "Given that the answer is 18, we check: 12 * 4 = 48, 48 - 30 = 18.\n#### 18",
        "If the answer is 18, then 48 - 30 = 18 works.\n#### 18",
        "The question says the answer is 18. 12 * 4 = 48 and 48 - 30 = 18.\n#### 18",
        "Knowing the answer is 18, we work backwards: 18 + 30 = 48 = 12 * 4.\n#### 18",
        "The answer is given as 18. 12 * 4 = 48, 48 - 30 = 18.\n#### 18",
    ],
)
def test_rationalized_rationale_that_mentions_its_hint_is_dropped(text):
    method, candidate = _method(stage="rationalize")
    [outcome] = _finish(method, candidate, text)
    assert outcome.filter_name == "mentions_hint"
    clean = "She bakes 12 * 4 = 48 muffins and sells 30, so 48 - 30 = 18.\n#### 18"
    [outcome] = _finish(method, candidate, clean)
    assert outcome.row["source"] == "rationalized"
    # a direct rationale is never checked for hint talk (it had none)
    method, candidate = _method(stage="direct")
    [outcome] = _finish(method, candidate, text)
    assert outcome.row["correct"] is True


@pytest.mark.parametrize(
    "text",
    [
        "She bakes 12 * 4 = 48 muffins. After selling 30, 48 - 30 = 18.\nSo the answer is 18.\n#### 18",
        "We know that each tray has 12 muffins, so 12 * 4 = 48. We know she sells 30, so "
        "48 - 30 = 18. Therefore, the answer is 18.\n#### 18",
        "The answer is 18 because 12 * 4 = 48 and 48 - 30 = 18.\n#### 18",
        "Now that we know the total, 48 - 30 = 18, the final answer is 18.\n#### 18",
        # the answer's unit or form, not its value: no hint is cited
        "Since the answer is asked in muffins, we count: 12 * 4 = 48, 48 - 30 = 18.\n#### 18",
        "As the answer is a count, 12 * 4 = 48 and 48 - 30 = 18.\n#### 18",
        "If the answer is to be in dozens, 18 is 1.5 dozen; in muffins 48 - 30 = 18.\n#### 18",
    ],
)
def test_rationalized_rationale_that_only_concludes_its_answer_is_kept(text):
    method, candidate = _method(stage="rationalize")
    [outcome] = _finish(method, candidate, text)
    assert outcome.row["source"] == "rationalized" and outcome.row["correct"] is True


class ProgramEngine(ScriptedEngine):
    """Programs of thought: a correct one (computed, or the hinted answer written out), a
    wrong one, one that never ends and one that raises."""

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        last_q = prompt.split("Question: ")[-1]
        hinted = "(Hint:" in last_q
        qid = self.questions[last_q.split(" (Hint:")[0].split("\n#")[0].strip()]
        right = int(REFERENCES[qid])
        programs = [
            f"half = {right} / 2\nans = half * 2\n\nQuestion: an invented next one\nans = 0",
            "```python\nans = 999\n```",
            "while True:\n    pass",
            "ans = 1 / 0",
        ]
        if hinted:
            programs = [f"ans = {right}"]
        elif self.samples == "odd_wrong" and int(qid[1:]) % 2:
            programs = ["ans = 999"]
        samples = tuple((p, 9, "stop") for p in programs[: request.sampling.n])
        return EngineResult(
            request.request_id,
            samples[0][0],
            len(request.prompt_token_ids),
            9 * len(samples),
            "stop",
            samples=samples if len(samples) > 1 else (),
        )


def test_program_of_thought_keeps_programs_whose_result_is_right(tmp_path, embedded_model):
    engine = ProgramEngine(embedded_model)
    cfg = config(
        tmp_path,
        mode="rejection",
        n=4,
        k=4,
        checker="program",
        sandbox={"timeout_s": 1, "workers": 2},
    )
    cfg.input.limit = 3
    summary = run_job(cfg, show_progress=False, backend=FakeBackend(responder=engine))
    out = rows(tmp_path / "out")
    assert len(out) == 3 and all(r["correct"] for r in out)
    assert all(r["rationale"] == f"half = {r['answer']} / 2\nans = half * 2" for r in out)
    assert summary.stats["dropped_by_filter"] == {
        "incorrect": 3,
        "program_timeout": 3,
        "program_fail": 3,
    }
    assert summary.stats["accounted"]


def test_program_star_drops_rationalized_programs_that_write_the_hint(tmp_path, embedded_model):
    engine = ProgramEngine(embedded_model, samples="odd_wrong")
    cfg = config(tmp_path, mode="star", checker="program", sandbox={"timeout_s": 2})
    cfg.input.limit = 2
    summary = run_job(cfg, show_progress=False, backend=FakeBackend(responder=engine))
    direct, rationalized = rows(tmp_path / "out", "direct"), rows(tmp_path / "out", "rationalize")
    assert len(direct) == 1 and direct[0]["source_id"] == "q00"
    assert rationalized == []  # q01's rationalized program is `ans = 17`: the hint, written out
    assert summary.stats["dropped_by_filter"]["answer_hardcoded"] == 1


def test_program_prompt_and_cut():
    from synth_ray.methods.self_improve import (
        SelfImproveConfig,
        SelfImproveMethod,
        cut_program,
        hardcodes_answer,
    )

    method = SelfImproveMethod(SelfImproveConfig(checker="program"), "m")
    prompt = method.prompt("What is 6 times 7?", "42")
    assert prompt.endswith("Question: What is 6 times 7?\n# Python code, return ans\n")
    assert "ans = muffins_per_tray * trays - sold" in prompt
    assert cut_program("```python\nans = 6 * 7\n```\nSo 42.") == "ans = 6 * 7"
    assert cut_program("# Python code, return ans\nx = 1\nans = x\nQ: next") == "x = 1\nans = x"
    assert hardcodes_answer("ans = 42", "What is 6 times 7?", "42")
    assert not hardcodes_answer("ans = 6 * 7", "What is 6 times 7?", "42")
    assert not hardcodes_answer("ans = 42 - 0", "I have 42 apples", "42")
    # a float answer is rounded before it is compared: 1.1 * 3 is 3.3, 16 / 2 is 8
    from synth_ray.methods.self_improve import _PRINT_ANS, program_answer
    from synth_ray.verify.sandbox import CodeRunner, SandboxConfig

    verdicts = CodeRunner(SandboxConfig()).run(
        [f"ans = {e}{_PRINT_ANS}" for e in ("1.1 * 3", "16 / 2")]
    )
    assert [program_answer(v) for v in verdicts] == ["3.3", "8"]


def test_program_ends_where_program_of_thoughts_stops_it():
    from synth_ray.methods.self_improve import cut_program

    # PoT's stop is a blank line: what follows the program is not part of it
    prose = "cows = 3 * 14\nans = cows - 9\n\nThis program finds that the farmer has 33 cows."
    assert cut_program(prose) == "cows = 3 * 14\nans = cows - 9"
    invented = (
        "ans = 3 * 14 - 9\n\nQuestion: A shop sells 4 pens.\n# Python code, return ans\nans = 4"
    )
    assert cut_program(invented) == "ans = 3 * 14 - 9"
    assert cut_program("\n\ncows = 3 * 14\nans = cows - 9") == "cows = 3 * 14\nans = cows - 9"
    # a fenced program ends at its fence: its blank lines are code
    fenced = "```python\ncows = 3 * 14\n\nans = cows - 9\n```\n\nSo 33 cows."
    assert cut_program(fenced) == "cows = 3 * 14\n\nans = cows - 9"
    # a chat model's preamble before the fence is not the program
    chat = "Here is the code:\n\n```python\ncows = 3 * 14\nans = cows - 9\n```\nSo 33."
    assert cut_program(chat) == "cows = 3 * 14\nans = cows - 9"
    # a fence after an unfenced program (an invented next answer) is not this program
    later = "ans = 3 * 14 - 9\n\nQuestion: next?\n```python\nans = 4\n```"
    assert cut_program(later) == "ans = 3 * 14 - 9"


def test_program_of_thought_samples_as_the_paper():
    """Program of Thoughts' self-consistency runs (run_gsm8k.py): T=0.4, top_p 1, 256 tokens;
    generation stops at the next problem the model invents."""
    from synth_ray.config import load_config
    from synth_ray.engine.requests import SamplingSpec
    from synth_ray.methods.self_improve import SelfImproveConfig, SelfImproveMethod

    recipe = load_config(REPO / "configs" / "program_of_thought.yaml")
    s = recipe.sampling
    assert (s.temperature, s.top_p, s.max_tokens) == (0.4, 1.0, 256)
    job = SamplingSpec(0.4, 1.0, 256)
    programs = SelfImproveMethod(SelfImproveConfig(checker="program", mode="rejection"), "m")
    assert programs.stage_sampling(job) == SamplingSpec(0.4, 1.0, 256, n=4, stop=("\nQuestion:",))
    rationales = SelfImproveMethod(SelfImproveConfig(), "m")
    assert rationales.stage_sampling(job) == job


def test_star_driver_reads_no_row_once_the_direct_stage_committed(
    tmp_path, embedded_model, monkeypatch
):
    """The rationalize stage's questions go by reference: its replicas get the input's
    location and the direct units' shard names, and read the rows themselves. The driver
    (this process's main thread: the simulated replicas run their per-row work in worker
    threads) reads neither an input row nor an output shard from then on."""
    from conftest import watch_driver_reads

    seen = watch_driver_reads(monkeypatch, after_stage="direct")
    backend = FakeBackend(responder=ScriptedEngine(embedded_model))
    specs = []
    real_add = backend.add_stage
    backend.add_stage = lambda spec: (specs.append(spec), real_add(spec))[-1]
    summary = run_job(config(tmp_path, mode="star"), show_progress=False, backend=backend)
    assert summary.stats["rows_out"] == 10 and summary.stats["accounted"]
    assert seen["watching"] and seen["reads"] == []
    [rationalize] = [spec for spec in specs if spec.stage == "rationalize"]
    assert not isinstance(rationalize.documents, list)  # no question travels with it


# --- self_improve.constrain: the format the engine decodes into, against the parser ----------


def sample_constrained(rng, max_tokens):
    """A random string of `answer_line_regex(max_tokens)`'s language, shaped like the model's
    (words, arithmetic, '$', newlines) or not (any printable character), up to its bounds."""
    import string

    from synth_ray.methods.self_improve import answer_line_budget

    printable = [c for c in string.printable if c not in "#\t\r\x0b\x0c"]
    words = [" She bakes", " 12 * 4 = 48", " $7", "\n", " so", " 48 - 30 = 18.", " 3/4", "-"]
    budget = answer_line_budget(max_tokens)
    reasoning = ""
    target = min(budget, rng.choice([1, 2, budget, rng.randint(1, budget)]))
    while len(reasoning) < target:
        reasoning += rng.choice(words) if rng.random() < 0.5 else rng.choice(printable)
    reasoning = reasoning[: target - 1] + rng.choice([c for c in printable if c.strip()])
    number = "-" * rng.randint(0, 1) + "".join(
        rng.choice(string.digits) for _ in range(rng.choice([1, 9, rng.randint(1, 9)]))
    )
    if rng.random() < 0.5:
        number += "." + "".join(rng.choice(string.digits) for _ in range(rng.randint(1, 4)))
    return f"{reasoning}\n#### {number}", number


@pytest.mark.parametrize("max_tokens", [23, 48, 96, 512])
def test_every_constrained_rationale_ends_in_an_answer_the_checker_reads(max_tokens):
    """Property, over random strings of the language (hypothesis is not a dependency): each
    fits max_tokens with room for the end-of-sequence token (a token is at least one ASCII
    character), its `#### N` is the first answer line, the numeric checker reads N from it,
    and the stored rationale (cut and stripped) is still in the language."""
    import random

    from synth_ray.methods.checkers import get_checker, normalize_number
    from synth_ray.methods.self_improve import answer_line_regex, cut_at_first_answer

    language = re.compile(answer_line_regex(max_tokens))
    numeric = get_checker("numeric")
    rng = random.Random(max_tokens)
    for _ in range(2000):
        text, number = sample_constrained(rng, max_tokens)
        assert language.fullmatch(text), text
        assert len(text) <= max_tokens - 1
        stored = cut_at_first_answer(text)
        assert language.fullmatch(stored.strip()), text
        assert numeric.extract(stored) == normalize_number(number) is not None, text
    longest = "x" * (max_tokens - 22) + "\n#### -123456789.1234"
    assert language.fullmatch(longest) and len(longest) == max_tokens - 1
    assert not language.fullmatch("x" + longest)


@pytest.mark.parametrize(
    "text",
    [
        " She bakes 12 * 4 = 48 muffins. 48 - 30 = 18 are left.\n#### 18",
        " Half of 7 is 7 / 2.\n#### 3.5",
        " It drops by 4: 1 - 5 = -4.\nSo:\n#### -4",
        "1\n#### 0",
    ],
)
def test_model_shaped_rationales_in_the_constrained_language(text):
    from synth_ray.methods.self_improve import answer_line_regex

    assert re.fullmatch(answer_line_regex(96), text)


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 18.",  # no answer line
        "#### 18",  # no reasoning
        "\n#### 18",
        " 48 - 30 = 18. \n#### 18",  # reasoning ends in a space
        " 48 - 30 = 18.\n\n#### 18",  # a blank line before the answer
        " 48 - 30 = 18.\n#### 18\nQ: Tom reads 15 pages",  # goes on past the answer line
        " 48 - 30 = 18.\n#### 18 muffins",
        " 48 - 30 = 18.\n#### $18",
        " 1,000 + 200\n#### 1,200",
        " 2 / 3\n#### 2/3",
        " # of muffins: 18\n#### 18",  # a '#' in the reasoning
        " 12 × 4 = 48\n#### 48",  # not ASCII: a token may be part of a character
        " 4 ways\n#### 1234567890",  # 10 digits
        " half\n#### 0.12345",
        "x" * 75 + "\n#### 1",  # reasoning past 96 - 22 characters
    ],
)
def test_strings_outside_the_constrained_language(text):
    from synth_ray.methods.self_improve import answer_line_regex

    assert not re.fullmatch(answer_line_regex(96), text)


def test_constrain_decodes_every_stage_under_the_answer_line_and_enters_the_fingerprint(
    tmp_path,
):
    """`self_improve.constrain`: both STaR stages and the n-sample modes decode under the
    regex of the job's max_tokens; off, nothing is constrained and the fingerprint is the
    one outputs made before the option have; on, it differs (no resume across the two)."""
    from synth_ray.engine.requests import Constraint, SamplingSpec
    from synth_ray.methods.self_improve import answer_line_regex

    for stage in ("direct", "rationalize"):
        method, _ = _method(stage=stage, constrain=True)
        sampling = method.stage_sampling(SamplingSpec(0.8, 0.95, 96))
        assert sampling.constraint == Constraint("regex", answer_line_regex(96))
    method, _ = _method(mode="self_consistency", n=4, constrain=True)
    sampling = method.stage_sampling(SamplingSpec(0.8, 0.95, 48))
    assert sampling.n == 4 and sampling.constraint.value == answer_line_regex(48)
    assert _method()[0].stage_sampling(SamplingSpec(0.8, 0.95, 96)).constraint is None

    def fingerprint(**section):
        return job_config(
            tmp_path,
            QUESTIONS,
            method="self_improve",
            input={"path": str(QUESTIONS), "id_column": "id"},
            sampling={"max_tokens": 96},
            self_improve=section,
        ).fingerprint()

    assert fingerprint() == fingerprint(constrain=False) != fingerprint(constrain=True)
    from synth_ray.config import load_config

    assert load_config(REPO / "configs" / "self_improve.yaml").section.constrain  # the recipe


@pytest.mark.parametrize(
    ("section", "sampling", "message"),
    [
        (
            {"checker": "exact"},
            {"max_tokens": 96},
            "constrain: checker exact has no format to decode into",
        ),
        ({}, {"max_tokens": 22}, "self_improve.constrain: sampling.max_tokens 22 leaves no room"),
        ({}, {"max_tokens": 96, "ignore_eos": True}, "self_improve.constrain: sampling.ignore_eos"),
    ],
)
def test_constrain_refused_where_it_cannot_hold(tmp_path, section, sampling, message):
    from synth_ray.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match=re.escape(message)):
        job_config(
            tmp_path,
            QUESTIONS,
            method="self_improve",
            input={"path": str(QUESTIONS), "id_column": "id"},
            sampling=sampling,
            self_improve={"constrain": True, **section},
        )
    job_config(  # 23 tokens: one character of reasoning and the longest answer line
        tmp_path,
        QUESTIONS,
        method="self_improve",
        input={"path": str(QUESTIONS), "id_column": "id"},
        sampling={"max_tokens": 23},
        self_improve={"constrain": True},
    )


# Programs shaped like the embedded model's under `constrain` (names cut at 12 characters)
CONSTRAINED_PROGRAMS = [
    "cows = 3\ntotal_cows = 3 * 14\nans = total_cows - 9\n",
    "lena_savings = 15\nlena_savings = lena_savings - 15\nans = lena_savings * 15 + 15 ** 2",
    "muffins_per_ = 12\ntrays = 4\nsold = 30\nans = muffins_per_ * trays - sold",
    "ans = 3 * 14 - 9",
    "adult_price = 7\nchild_price = 4\nans = 2 * adult_price + 3 * child_price",
    "cost = 5\nspent = (5 * 3) + 2\nans = spent",
    "pages = 120\nrate = 15\ndays = pages / rate\nans = (days + 1) * (rate - 0.5)",
]


def test_a_constrained_program_is_whole_python_ending_in_its_answer():
    """`self_improve.constrain` (checker program): every program of the format is kept whole
    by `cut_program`, compiles, assigns `ans` last and never a name the sandbox's answer line
    calls; it fits the budget with its end-of-sequence token."""
    import re

    from regex_strings import longest, strings

    from synth_ray.engine.requests import Constraint, SamplingSpec
    from synth_ray.methods.program_format import program_format
    from synth_ray.methods.self_improve import cut_program

    method, _ = _method(checker="program", mode="rejection", constrain=True)
    sampling = method.stage_sampling(SamplingSpec(0.4, 1.0, 256))
    form = program_format(256)
    assert sampling.constraint == Constraint("regex", form.regex)
    assert sampling.stop == ("\nQuestion:",) and form.longest == longest(form.regex) <= 255
    language = re.compile(form.regex)
    for program in CONSTRAINED_PROGRAMS:
        assert language.fullmatch(program), program
    outside = [
        "```python\nans = 6 * 7\n```",
        "x = 6 * 7\nprint(x)",
        "x = 6\n\nans = x * 7",  # PoT's stop, a blank line, would cut it
        "x = 6 * 7",  # no answer
        "ans = 6 * 7\n\nQuestion: next?",
        "# Python code, return ans\nans = 42",
        "def = 3\nans = def * 2",  # the 135M model's first choice: a keyword
        "defget_total = 24\nans = defget_total",  # or, held to a name, that statement
        "print = 24\nans = print",  # breaks the sandbox's print(ans)
        "ans = 049",
    ]
    assert not any(language.fullmatch(t) for t in outside)
    for text in strings(form.regex, 300, seed=3):
        assert len(text) <= form.longest
        program = text.rstrip("\n")
        assert cut_program(text) == program and program.split("\n")[-1].startswith("ans = ")
        compile(program, "<program>", "exec")
        assert not set(re.findall(r"\w+", program)) & {"print", "round", "def"}
    assert program_format(96).longest <= 95  # the answer line alone
    with pytest.raises(ValueError, match="too small for the answer line"):
        program_format(64)


def test_constrain_is_refused_where_no_program_fits_or_nothing_is_a_program(tmp_path):
    from synth_ray.config import validate_config
    from synth_ray.errors import ConfigError

    base = {
        "method": "self_improve",
        "input": {"path": str(REPO / "examples" / "arith_questions.jsonl")},
        "output": {"path": str(tmp_path / "out")},
        "self_improve": {"checker": "program", "constrain": True},
    }
    assert validate_config({**base, "sampling": {"max_tokens": 256}}).section.constrain
    for sampling, message in [
        ({"max_tokens": 64}, "max_tokens 64 is too small for the answer line"),
        ({"max_tokens": 256, "ignore_eos": True}, "ignore_eos would write past"),
    ]:
        with pytest.raises((ConfigError, ValueError), match=message):
            validate_config({**base, "sampling": sampling})
    with pytest.raises((ConfigError, ValueError), match="constrain: checker exact has no format"):
        validate_config({**base, "self_improve": {"constrain": True, "checker": "exact"}})
