"""Method `preference`: UltraFeedback's templates and parser, its principles and its pool of
generators, the pair chosen through the shuffled order, every drop counted, and a kill between
and inside its stages resumed exactly (simulated engine; the real engine runs it in
test_end_to_end.py).

    pytest tests/test_preference.py
"""

from __future__ import annotations

import random
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest
from conftest import Crash, crash_on_commit, model_alias, write_jsonl
from fake_backend import FakeBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synth_ray.config import validate_config
from synth_ray.dataset.card import card_text
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError
from synth_ray.io.output_store import OutputStore
from synth_ray.methods import method_spec
from synth_ray.methods.base import row_id
from synth_ray.methods.preference import draw_generators, generator_pools, judge_pool
from synth_ray.methods.preference_principles import PRINCIPLES, draw_principle
from synth_ray.methods.preference_prompts import (
    TEMPLATES,
    answer_regex,
    parse_annotations,
    parse_ratings,
    rating_prompt,
    system_prompt,
)
from synth_ray.runtime.job import run_job

# GPT-4's answer to UltraFeedback's helpfulness template, in its format (the Type line and
# its rationale, then the rating and its rationale); text 4 leaves out its Type line
HELPFULNESS_ANSWER = """#### Output for Text 1
Type: 1, 2
Rationale: The response is clear and relevant, providing useful information, but it does not address the limited walking ability of the grandparents.
Rating: 3
Rationale: The text is correct and provides useful information, but it does not fully address the specific needs and preferences of the family.

#### Output for Text 2
Type: 1, 2, 3
Rationale: The response is clear, relevant, comprehensive and concise.
Rating: 5
Rationale: The text is accurate, in-depth and offers profound insights.

#### Output for Text 3
Type: None
Rationale: The text is not relevant to the task.
Rating: 1
Rationale: The text fabricates content.

#### Output for Text 4
Rating: 4
Rationale: Accurate and extensive."""


def test_helpfulness_types_and_ratings_parsed_as_the_paper_reads_them():
    annotations = parse_annotations(HELPFULNESS_ANSWER, 4, "helpfulness")
    assert [a.rating for a in annotations] == [3.0, 5.0, 1.0, None]  # 4: out of the format
    assert [a.types for a in annotations] == [(1, 2), (1, 2, 3), (), None]
    assert annotations[2].types_rationale == "The text is not relevant to the task."
    assert (
        annotations[1].rationale == "The text is accurate, in-depth and offers profound insights."
    )
    # without headers: the blank-line blocks by position, as the paper's `process` splits
    headerless = re.sub(r"#### Output for Text \d\n", "", HELPFULNESS_ANSWER)
    assert parse_ratings(headerless, 4, "truthfulness") == [3.0, 5.0, 1.0, None]
    assert parse_ratings(headerless, 3, "truthfulness") == [None, None, None]  # 4 blocks


def test_plain_aspects_parsed_per_text_in_the_papers_format():
    answer = (
        "#### Output for Text 2\nRating: 3\nRationale: fine\n\n"
        "#### Output for Text 1\nRating: **5**\nRationale: best\n\n"
        "#### Output for Text 3\nRating: N/A\nRationale: creative\n\n"
        "#### Output for Text 4\nRating: 9\nRationale: off the scale"
    )
    assert parse_ratings(answer, 4, "instruction_following") == [5.0, 3.0, None, None]
    # helpfulness wants its Type line: a block without one is not in its format
    assert parse_ratings(answer, 4, "helpfulness") == [None] * 4
    honesty = (
        "##### Output for Text 1\nRating: N/A\nRationale: A creative writing task.\n\n"
        "##### Output for Text 2\nRating: 4 (correct but uncertain)\nRationale: Hedges."
    )
    assert parse_ratings(honesty, 2, "honesty") == [None, 4.0]
    assert parse_ratings("Rating: 2\nRationale: a\n\nRating: 4\nRationale: b", 2, "honesty") == [
        2.0,
        4.0,
    ]
    assert parse_ratings("Rating: 2\nRationale: a", 2, "honesty") == [None, None]  # one block


def test_the_templates_are_the_papers_for_four_texts_and_grow_to_n():
    texts = ["hi", "hello", "hey", "yo"]
    filled = {f"text_{i}": t for i, t in enumerate(texts, 1)}
    for aspect, template in TEMPLATES.items():
        wk = "No additional world knowledge for reference."
        paper = template.format(instruction="Say hi", world_knowledge=wk, **filled)
        assert rating_prompt(aspect, "Say hi", texts) == paper
    helpfulness = rating_prompt("helpfulness", "Say hi", texts[:2])
    assert (
        'Assign numeric identifier (or "None") from 1 to 3 for each type of informativeness:\n'
        "1. **Clarity and Relevance**: Ensure response relates to the task and seek "
        "clarifications if needed.\n"
    ) in helpfulness
    assert helpfulness.endswith(
        "#### Output for Text 1\n"
        'Type: [List of numeric identifiers (or "None") for informativeness type, separated by '
        "commas]\n"
        "Rationale: [Rationale for the identification in short sentences]\n"
        "Rating: [Rating for text 1]\n"
        "Rationale: [Rationale for the rating in short sentencs]\n\n"
        "#### Output for Text 2\nType: [List of types]\nRationale: [Rationale]\n"
        "Rating: [Rating]\nRationale: [Rationale]\n\n---\n\n## Annotation\n\n### Input\n"
        "Instruction: Say hi\n\nTexts:\n<text 1> hi\n<text 2> hello\n\n### Output\n"
    )
    assert "World Knowledge" not in helpfulness
    six = rating_prompt("truthfulness", "Say {hi}", [*texts, "a", "b"])
    assert "#### Output for Text 6\nType: [List of types]\n" in six and "<text 6> b\n" in six
    assert six.endswith(
        "<text 6> b\n\nWorld Knowledge:\nNo additional world knowledge for reference."
        "\n\n### Output\n"
    )
    assert "##### Output for Text 3\nRating: [Rating]" in rating_prompt("honesty", "x", texts[:3])
    assert system_prompt(4) == (
        "Your role is to evaluate text quality based on given criteria.\n"
        'You\'ll receive an instructional description ("Instruction") and four text outputs '
        '("Text").\nUnderstand and interpret instructions to evaluate effectively.\n'
        "Provide annotations for each text with a rating and rationale.\n"
        "The four texts given are independent, and should be evaluated separately."
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_constrained_answer_gives_each_text_its_rating(data):
    """The parser reads a rating for every text from any answer the engine may decode into
    (strings drawn from the regex itself), and the rationales fit the budget."""
    aspect = data.draw(st.sampled_from(sorted(TEMPLATES)))
    count = data.draw(st.integers(2, 5))
    budget = data.draw(st.integers(300, 500))
    regex = answer_regex(aspect, count, budget)
    answer = data.draw(st.from_regex(regex, fullmatch=True))
    ratings = [int(r) if r != "N/A" else None for r in re.findall(r"Rating: (\S+)", answer)]
    assert len(ratings) == count
    assert parse_ratings(answer, count, aspect) == ratings
    if aspect in ("helpfulness", "truthfulness"):
        assert all(a.types is not None for a in parse_annotations(answer, count, aspect))


def test_the_longest_constrained_answer_fits_its_budget(embedded_model):
    """At one token per rationale character (digits: SmolLM2 spends a token on each), the
    longest answer each aspect's regex admits still fits judge_max_tokens."""
    tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
    for aspect in sorted(TEMPLATES):
        for count, budget in ((2, 120), (4, 500), (8, 1000)):
            regex = answer_regex(aspect, count, budget)
            chars = int(re.search(r"\{1,(\d+)\}", regex).group(1))
            longest = re.sub(r'\[ -"\$-~\]\{1,\d+\}', "0" * chars, regex)
            longest = longest.replace("(None|[1-3](, [1-3]){0,2})", "1, 2, 3")
            longest = longest.replace("([1-5]|N/A)", "N/A").replace("[1-5]", "5")
            longest = longest.replace("\\n", "\n")
            assert re.fullmatch(regex, longest), (aspect, longest)
            tokens = len(tokenizer(longest, add_special_tokens=False)["input_ids"])
            assert tokens <= budget, (aspect, count, budget, tokens)


def test_constrained_answers_follow_the_templates_headers():
    honesty = answer_regex("honesty", 2, 500)
    assert honesty.startswith("##### Output for Text 1\\nRating: ([1-5]|N/A)")
    typed = answer_regex("helpfulness", 4, 500)
    assert typed.startswith("#### Output for Text 1\\nType: (None|[1-3](, [1-3]){0,2})")
    assert not re.fullmatch(typed, "#### Output for Text 1\nRating: 5\nRationale: ok")


def test_principles_are_the_papers_drawn_in_its_mix():
    assert {k: len(v) for k, v in PRINCIPLES.items()} == {
        "helpfulness": 11,
        "honesty": 11,
        "truthfulness": 11,
        "verbalized_calibration": 1,
    }
    assert PRINCIPLES["truthfulness"][-1] == (
        "As an AI assistant, operate under the principle of truthfulness. Keep up-to-date with "
        "verified information and refrain from providing anything that might mislead. \n"
    )
    rng = random.Random(0)
    drawn = Counter(draw_principle(rng, "chat")[0] for _ in range(20000))
    share = {k: v / 20000 for k, v in drawn.items()}
    # UltraFeedback's ShareGPT/UltraChat mix: 60% / 20% / 18% / 2%
    assert abs(share["helpfulness"] - 0.6) < 0.02 and abs(share["truthfulness"] - 0.2) < 0.02
    assert (
        abs(share["honesty"] - 0.18) < 0.02 and abs(share["verbalized_calibration"] - 0.02) < 0.01
    )
    assert {draw_principle(rng, "evol_instruct")[0] for _ in range(50)} == {"helpfulness"}
    assert draw_principle(rng, "none") is None


def test_each_prompt_draws_distinct_generators_while_the_pool_has_n():
    rng = random.Random(1)
    for _ in range(50):
        drawn = draw_generators(rng, 4, 6)
        assert len(set(drawn)) == 4 and set(drawn) <= set(range(6))
        assert sorted(Counter(draw_generators(rng, 4, 3)).values()) == [1, 1, 2]
    assert draw_generators(rng, 4, 1) == [0, 0, 0, 0]


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
# each response request's id: its prompt and response index
RESPONSE_IDS = {row_id(p["id"], "response", k): (p["id"], k) for p in PROMPTS for k in range(4)}
TRUNCATED = ("p3", 0)  # cut by max_tokens: rated, and kept as UltraFeedback kept them


class ScriptedModel:
    """Responses "p3 answer k"; ratings from RATINGS, written for the order shown."""

    def __init__(self, embedded_model: str) -> None:
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.shown: list[list[int]] = []  # the response order of each rating prompt
        self.asked: list[str] = []  # each response request's prompt

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        rid, tokens = request.request_id, len(request.prompt_token_ids)
        if "Instruction Following Assessment" not in prompt:
            assert request.sampling.n == 1  # one request per response, each its principle
            self.asked.append(prompt)
            pid, k = RESPONSE_IDS[rid]
            why = "length" if (pid, k) == TRUNCATED else "stop"
            return EngineResult(rid, f"{pid} answer {k}", tokens, 3, why)
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
    # the response cut by max_tokens is rated and kept (as UltraFeedback's were), and marked
    assert pairs["p3"]["finish_reasons"] == ["length", "stop", "stop", "stop"]
    assert pairs["p3"]["rejected"] == "p3 answer 0"
    # one model wrote every response, each under a principle's system prompt of the chat mix
    assert {m for p in pairs.values() for m in p["models"]} == {"SmolLM2-135M-Instruct"}
    assert {p["response_model"] for p in pairs.values()} == {"SmolLM2-135M-Instruct"}
    drawn = [principle for p in pairs.values() for principle in p["principles"]]
    assert set(drawn) <= {"helpfulness", "truthfulness", "honesty", "verbalized_calibration"}
    assert "helpfulness" in drawn and all(p["types"] is None for p in pairs.values())
    assert len(engine.asked) == 24
    quoted = [text.strip() for texts in PRINCIPLES.values() for text in texts]
    assert all(any(text in prompt for text in quoted) for prompt in engine.asked)


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
    pair_ids = {row_id(p["id"], "pair") for p in PROMPTS}
    assert len(backend.generated) == len(set(backend.generated)) < 6
    assert set(backend.generated) <= pair_ids  # no response asked again
    clean = read_pairs(tmp_path / "clean" / "out")
    assert read_pairs(tmp_path / "out") == clean
    assert summary.stats["accounted"] and summary.stats["rows_in"] == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sampling": {"temperature": 0}}, "sampling.temperature: 0 makes the n responses one"),
        ({"preference": {"n": 1}}, "config key preference.n"),
        ({"preference": {"aspect": "harmlessness"}}, "config key preference.aspect"),
        ({"preference": {"principles": "sharegpt"}}, "config key preference.principles"),
        ({"preference": {"generators": []}}, "config key preference.generators"),
        (
            {"preference": {"constrain": True, "judge_max_tokens": 100}},
            "preference.judge_max_tokens: 100 tokens cannot hold 4 constrained ratings",
        ),
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
    judge = tmp_path / "judge-model"
    model_alias(embedded_model, judge)
    engine = ScriptedModel(embedded_model)
    config = preference_config(tmp_path, judge_engine={"model": str(judge), "max_model_len": 2048})
    run_job(config, show_progress=False, backend=FakeBackend(responder=engine))
    pairs = read_pairs(tmp_path / "out")
    assert {p["judge_model"] for p in pairs.values()} == {"judge-model"}
    assert {p["response_model"] for p in pairs.values()} == {"SmolLM2-135M-Instruct"}
    # the judge's model is part of what the job is: another judge is another job
    other = preference_config(tmp_path, judge_engine={"model": str(judge), "max_model_len": 1024})
    assert other.fingerprint() != config.fingerprint() != preference_config(tmp_path).fingerprint()


def test_a_pool_of_generators_writes_each_prompts_responses(tmp_path, embedded_model, monkeypatch):
    """`preference.generators`: each prompt's 4 responses come from the pool's two models (two
    each, as the pool is smaller than n), one stage per model in its own folder, then the
    job's model rates them. A kill in the second model's stage resumes exactly: nothing
    committed is asked again (the simulated backend stands in for every engine)."""
    for name in ("gen-a", "gen-b"):
        model_alias(embedded_model, tmp_path / name)
    pool = [{"model": str(tmp_path / name)} for name in ("gen-a", "gen-b")]
    engine = ScriptedModel(embedded_model)
    clean = preference_config(tmp_path / "clean", generators=pool)
    summary = run_job(clean, show_progress=False, backend=FakeBackend(responder=engine))
    pairs = read_pairs(tmp_path / "clean" / "out")
    assert sorted(pairs) == ["p0", "p3", "p4", "p5"]
    for pair in pairs.values():
        assert sorted(pair["models"]) == ["gen-a", "gen-a", "gen-b", "gen-b"]
        assert pair["chosen_model"] == pair["models"][pair["responses"].index(pair["chosen"])]
        assert pair["judge_model"] == "SmolLM2-135M-Instruct"
    assert {p["response_model"] for p in pairs.values()} <= {"gen-a, gen-b", "gen-b, gen-a"}
    assert any(p["models"] != pairs["p0"]["models"] for p in pairs.values())  # drawn per prompt
    stats = summary.stats
    assert stats["preference"]["responses_by_model"] == {"gen-a": 12, "gen-b": 12}
    assert stats["preference"]["responses_stage"]["errored_by_stage"] == {"input": 4}
    assert stats["dropped_by_filter"] == {"tie": 1, "too_few_rated": 1, "too_few_responses": 1}
    assert stats["accounted"] and stats["preference"]["prompts"] == 7
    for k in (0, 1):
        committed = OutputStore(tmp_path / "clean" / "out" / "stages" / f"generator-{k}")
        assert committed.totals("responses").rows_out == 12
    card = card_text(OutputStore(tmp_path / "clean" / "out"))
    assert "- generators models: `gen-a`, `gen-b`" in card
    # a kill at the second model's second commit, then a resume, makes the same pairs
    commits = []

    def second_model(record):
        commits.append(record.stage)
        return commits.count("responses") == 6  # each model's stage commits 4 units

    config = preference_config(tmp_path, generators=pool)
    with monkeypatch.context() as patch:
        crash_on_commit(patch, second_model)
        with pytest.raises(Crash):
            run_job(config, show_progress=False, backend=FakeBackend(responder=engine))
    backend = FakeBackend(responder=engine)
    run_job(config, show_progress=False, backend=backend)
    assert read_pairs(tmp_path / "out") == pairs
    asked = [RESPONSE_IDS[r] for r in backend.generated if r in RESPONSE_IDS]
    assert 0 < len(asked) < 12 and len(set(backend.generated)) == len(backend.generated)


def test_inline_engines_are_pools_and_a_stage_renders_with_its_pools_model(
    tmp_path, embedded_model
):
    """`generators` and `judge_engine` name pools inline: an engine equal to the job's is the
    job's own pool, equal engines share one; the runner renders each pool's stages with that
    pool's model's template and context length, and names its model."""
    from synth_ray.runtime.stage import RunSummary, StageRunner

    judge = tmp_path / "judge"
    model_alias(embedded_model, judge)
    job_engine = {"model": "embedded:smollm2-135m-instruct"}
    judge_engine = {"model": str(judge), "max_model_len": 512}
    config = preference_config(
        tmp_path, generators=[job_engine, judge_engine], judge_engine=judge_engine
    )
    pools = generator_pools(config)
    assert pools[0] == "default" and pools[1] == judge_pool(config) != "default"
    runner = StageRunner(config, PromptRenderer.from_model(embedded_model), RunSummary("o"))
    runner.extra_pools = method_spec("preference").pools(config)
    assert list(runner.extra_pools) == [pools[1]]
    assert runner.model_name() == "SmolLM2-135M-Instruct"
    assert runner.use_pool(pools[1]) == "judge"
    assert runner.stage_config.engine.max_model_len == 512 and runner.renderer.source == str(judge)
    assert runner.stage_config.section.n == 4  # the method's own section survives the copy
    runner.use_pool("default")
    assert runner.stage_config.engine.max_model_len == config.engine.max_model_len
    with pytest.raises(ConfigError, match="pool 'nope': no such pool"):
        runner.use_pool("nope")


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


def test_ratings_in_bold_any_case_or_cut_after_the_rating_still_parse():
    """A local judge that bolds its labels, writes them in lower case, or is cut by
    judge_max_tokens after its last rating: each text keeps its rating (the paper asked
    GPT-4 again until its exact format came back; a greedy judge would answer alike)."""
    from synth_ray.methods.preference_prompts import parse_annotations

    bold = "**Rating:** 4\n**Rationale:** Follows the task."
    assert [a.rating for a in parse_annotations(bold, 1, "honesty")] == [4.0]
    answer = (
        "### Output for Text 1\nrating: 5\nrationale: Exact.\n\n"
        "### Output for Text 2\n**Type:** None\n**Rationale:** x\n**Rating:** 2"
    )
    assert [a.rating for a in parse_annotations(answer, 2, "honesty")] == [5.0, 2.0]
    typed = parse_annotations(
        answer.replace("rating: 5", "Type: 1\nRationale: y\nRating: 5"), 2, "helpfulness"
    )
    assert [(a.rating, a.types) for a in typed] == [(5.0, (1,)), (2.0, ())]
    cut = "### Output for Text 1\nRating: 3\nRationale: ok\n### Output for Text 2\nRating: 1"
    assert [a.rating for a in parse_annotations(cut, 2, "honesty")] == [3.0, 1.0]
