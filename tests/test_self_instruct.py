"""Self-Instruct through the whole job path with a scripted engine: rounds, pool filters,
classification, instances, accounting, and a run killed in its second round."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest
from conftest import REPO, Crash, crash_on_commit, model_alias
from fake_backend import FakeBackend

from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError, InputError
from synth_ray.io.output_store import OutputStore
from synth_ray.runtime.job import run_job

SEEDS = REPO / "examples" / "seed_tasks.jsonl"
WORDS = (
    "apple river violin planet garden ladder copper meadow lantern harbor falcon pepper "
    "castle engine forest glacier island jungle kettle lemon mirror needle ocean pillow "
    "quartz rocket saddle tunnel umbrella valley wagon yacht zebra anchor bridge candle"
).split()


def config(tmp_path, rows_per_shard=3, **self_instruct):
    return validate_config(
        {
            "method": "self_instruct",
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": rows_per_shard},
            "engine": {"max_model_len": 1024},
            "sampling": {"max_tokens": 64},
            "self_instruct": {
                "seed_path": str(SEEDS),
                "target": 10,
                "requests_per_round": 3,
                **self_instruct,
            },
        }
    )


class ScriptedEngine:
    def __init__(self, embedded_model):
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        h = int(hashlib.sha256(request.request_id.encode()).hexdigest(), 16)
        if "Come up with a series of tasks" in prompt:
            first_seed = prompt.split("1. ")[1].split("\n")[0]
            words = [WORDS[(h >> (6 * k)) % len(WORDS)] for k in range(7)]
            a = words[0]
            text = (
                f"Explain how {' '.join(words[1:])} relate.\n"
                f"10. {first_seed}\n"  # a copy of an in-context instruction: ROUGE-L drop
                "11. Describe the image below in detail please.\n"  # unsupported modality
                f"12. Classify the {a} review number {h % 977} as positive or negative.\n"
            )
        elif "Is it classification?" in prompt:
            task = prompt.split("Task: ")[-1]
            text = "Yes" if task.startswith("Classify") else "No"
        elif "Class label" in prompt:
            text = "Class label: positive\nSentence: I loved it."
        else:
            text = "Input: something\nOutput: a fine answer"
        return EngineResult(request.request_id, text, len(request.prompt_token_ids), 9, "stop")


def final_rows(path):
    return [r for f in OutputStore(path).data_files() for r in pq.read_table(f).to_pylist()]


def test_self_instruct_grows_pool_and_writes_instances(tmp_path, embedded_model):
    summary = run_job(
        config(tmp_path),
        show_progress=False,
        backend=FakeBackend(responder=ScriptedEngine(embedded_model)),
    )
    rows = final_rows(tmp_path / "out")
    assert len(rows) == 10  # target reached, one instance per accepted instruction
    assert set(rows[0]) >= {
        "instruction",
        "input",
        "output",
        "is_classification",
        "max_rouge",
        "round",
    }
    classified = [r for r in rows if r["is_classification"]]
    assert classified and all(r["output"] == "positive" for r in classified)  # output-first
    assert all(r["input"] == "something" for r in rows if not r["is_classification"])
    assert all(r["max_rouge"] <= 0.7 for r in rows)
    stats = summary.stats
    drops = stats["dropped_by_filter"]
    assert (
        drops["rouge_similarity"] >= 2
        and drops["unsupported_task"] >= 2
        and drops["over_target"] >= 1
    )
    assert stats["accounted"] and stats["rows_out"] == 10
    si = stats["self_instruct"]
    assert si["instructions_accepted"] == 10 and si["rounds"] >= 2  # the pool grew across rounds
    assert si["instructions_considered"] == stats["rows_in"]
    assert si["generation_stats"]["rows_in"] == 3 * si["rounds"]  # generation requests only
    pool = json.loads((tmp_path / "out" / "stages" / "pool.json").read_text())
    assert len(pool["accepted"]) == 10


def test_an_instance_pool_writes_the_instances(tmp_path, embedded_model):
    """self_instruct.instance_pool: the job's model grows and classifies the instructions,
    the pool's model writes the instances (its rows name it); each engine gets only its own
    stages' requests, and the rows are those of one model doing all."""
    plain = run_job(
        config(tmp_path / "plain"),
        show_progress=False,
        backend=FakeBackend(responder=ScriptedEngine(embedded_model)),
    )
    responder = tmp_path / "responder-model"
    model_alias(embedded_model, responder)
    data = config(tmp_path).model_dump(mode="json")
    data["self_instruct"]["instance_pool"] = "responder"
    data["pools"] = {"responder": {"engine": {"model": str(responder), "max_model_len": 1024}}}
    pools = {
        "default": FakeBackend(responder=ScriptedEngine(embedded_model)),
        "responder": FakeBackend(responder=ScriptedEngine(embedded_model)),
    }
    summary = run_job(validate_config(data), show_progress=False, backend=pools)
    rows = final_rows(tmp_path / "out")
    assert {r["model"] for r in rows} == {"responder-model"}
    mine = [(r["instruction"], r["output"]) for r in rows]
    assert mine == [(r["instruction"], r["output"]) for r in final_rows(tmp_path / "plain" / "out")]
    stages = [{k.split(":")[0] for _, _, keys in b.submitted for k in keys} for b in pools.values()]
    assert "instances" not in stages[0] and stages[1] == {"instances"}
    assert summary.stats["rows_out"] == plain.stats["rows_out"] == 10
    bad = config(tmp_path).model_dump(mode="json")
    bad["self_instruct"]["instance_pool"] = "responder"
    with pytest.raises(ConfigError, match="self_instruct.instance_pool: no pool 'responder'"):
        validate_config(bad)


def test_self_instruct_killed_in_round_two_resumes_without_repeats(
    tmp_path, embedded_model, monkeypatch
):
    engine = ScriptedEngine(embedded_model)
    run_job(
        config(tmp_path / "clean", rows_per_shard=1),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )

    with monkeypatch.context() as patch:
        crash_on_commit(
            patch, lambda record: record.stage == "generate-r001" and record.unit_index == 1
        )
        with pytest.raises(Crash):
            run_job(
                config(tmp_path, rows_per_shard=1),
                show_progress=False,
                backend=FakeBackend(responder=engine),
            )
    backend = FakeBackend(responder=engine)
    run_job(config(tmp_path, rows_per_shard=1), show_progress=False, backend=backend)
    sent = list(backend.generated)
    assert len(sent) == len(set(sent))
    # round 0 and the committed unit of round 1 were not generated again
    from synth_ray.methods.base import row_id

    done_before = [row_id(f"r000-{i:04d}", "generate") for i in range(3)] + [
        row_id("r001-0000", "generate")
    ]
    assert not set(done_before) & set(sent)
    assert row_id("r001-0001", "generate") in sent
    ids = sorted(r["id"] for r in final_rows(tmp_path / "out"))
    assert ids == sorted(r["id"] for r in final_rows(tmp_path / "clean" / "out"))


def test_bad_seed_files(tmp_path, embedded_model):
    with pytest.raises(ConfigError, match="self_instruct.seed_path: required"):
        validate_config({"method": "self_instruct", "output": {"path": "o"}})
    with pytest.raises(ConfigError, match="no such file"):
        run_job(
            config(tmp_path, seed_path=str(tmp_path / "none.jsonl")),
            show_progress=False,
            backend=FakeBackend(),
        )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok task here"}\n{"name": "no instruction"}\n')
    with pytest.raises(InputError, match="line 2 is not a seed task"):
        run_job(config(tmp_path, seed_path=str(bad)), show_progress=False, backend=FakeBackend())
    assert not (tmp_path / "out").exists()
    plain = tmp_path / "plain.txt"
    plain.write_text("Name a colour.\nTell a joke about cats.\n")
    from synth_ray.methods.self_instruct import load_seed_instructions

    assert load_seed_instructions(str(plain)) == ["Name a colour.", "Tell a joke about cats."]


def test_template_overrides_reach_the_prompts(tmp_path, embedded_model):
    engine = ScriptedEngine(embedded_model)
    prompts = []

    def recording(request):
        prompts.append(engine.tokenizer.decode(request.prompt_token_ids))
        return engine(request)

    templates = {
        "generate_header": "Come up with a series of tasks (custom header):\n",
        "input_first": "EXAMPLES FOR: {instruction}\nOutput:",
        "classify": "Is it classification? CUSTOM Task: {instruction}",
    }
    run_job(
        config(tmp_path, templates=templates, target=3),
        show_progress=False,
        backend=FakeBackend(responder=recording),
    )
    assert any("custom header" in p for p in prompts)
    assert any("EXAMPLES FOR: " in p for p in prompts)
    assert any("CUSTOM Task: " in p for p in prompts)


def test_round_zero_shows_eight_seeds_then_six_seeds_and_two_machine(tmp_path):
    from synth_ray.config import validate_config
    from synth_ray.methods.self_instruct_rounds import round_prompts

    config = validate_config(
        {
            "method": "self_instruct",
            "output": {"path": str(tmp_path / "out")},
            "self_instruct": {"seed_path": str(REPO / "examples" / "seed_tasks.jsonl")},
        }
    )
    seeds = [f"Seed task number {i} for the list." for i in range(20)]
    machine = [f"Machine task number {i} for the list." for i in range(5)]

    def listed(prompt: str) -> list[str]:
        return [line for line in prompt.splitlines() if line[:1].isdigit() and ". " in line]

    for doc in round_prompts(config, seeds, [], 0):
        assert len(listed(doc.text)) == 8 and all("Seed" in x for x in listed(doc.text))
    for doc in round_prompts(config, seeds, machine, 1):
        items = listed(doc.text)
        assert len(items) == 8 and sum("Machine" in x for x in items) == 2


# Model-shaped completions of the generation prompt (which ends "9."), and the paper's filters.

CHATTER = (
    "Sure! Here are some more tasks:\n"
    "\n"
    "10. Explain how vaccines train the immune system.\n"
    "11. Sort the list of numbers.\n"
    "\n"
    "I hope these tasks are helpful! Let me know if you need more."
)


def test_closing_chatter_after_a_blank_line_is_not_an_instruction():
    """The paper stops generation at a blank line; the chatter after one is dropped, the
    preamble before the list too, and numbered items after a blank line are still read."""
    from synth_ray.methods.base import Candidate
    from synth_ray.methods.instruction_filters import parse_numbered_list
    from synth_ray.methods.self_instruct import InstructionGeneration

    tasks = ["Explain how vaccines train the immune system.", "Sort the list of numbers."]
    assert parse_numbered_list(CHATTER) == tasks
    outcome = InstructionGeneration().finish(
        Candidate("r", "s"), EngineResult("r", CHATTER, 10, 64, "stop")
    )
    assert outcome.row["instructions"] == tasks
    spaced = (
        "Plan a trip to Rome.\n\n10. Name three rivers.\n\n11. Define a prime number.\n\nEnjoy!"
    )
    assert parse_numbered_list(spaced) == [
        "Plan a trip to Rome.",
        "Name three rivers.",
        "Define a prime number.",
    ]
    # a blank line before the list: what follows it and is not numbered is no continuation
    assert parse_numbered_list("Sure!\n\nHere you go, more tasks.\n10. Name a river.") == [
        "Name a river."
    ]


def test_a_truncated_completion_keeps_an_item_a_blank_line_closed():
    from synth_ray.methods.instruction_filters import parse_numbered_list

    cut_in_chatter = CHATTER[: CHATTER.index("Let me")]
    assert parse_numbered_list(cut_in_chatter, truncated=True)[-1] == "Sort the list of numbers."
    cut_in_item = CHATTER[: CHATTER.index("of numbers")]
    assert parse_numbered_list(cut_in_item, truncated=True) == [
        "Explain how vaccines train the immune system."
    ]
    assert parse_numbered_list("10. Name a river.\n11.", truncated=True) == ["Name a river."]


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        # the paper's keyword list, not Alpaca's longer one (video, audio, music, ...)
        ("Write a song about the music of the city at night.", None),
        ("Describe a video game you would like to play.", None),
        ("Plot the monthly sales figures for the year.", "unsupported_task"),
        ("Tell me how to GO TO the station from here.", "unsupported_task"),
        # the paper drops "Write a program" tasks (compared after str.capitalize())
        ("Write a program to sort a list of numbers.", "write_a_program"),
        ("write a PROGRAM that counts the vowels in a word.", "write_a_program"),
        ("Write a poem about computer programs.", None),
    ],
)
def test_the_papers_keyword_and_program_filters(instruction, reason):
    from synth_ray.methods.instruction_filters import heuristic_drop

    assert heuristic_drop(instruction, min_words=4, max_words=150) == reason


def test_presence_penalties_are_the_papers_and_reach_vllm():
    from synth_ray.engine.requests import EngineRequest, SamplingSpec
    from synth_ray.engine.vllm_engine import sampling_params
    from synth_ray.methods.self_instruct import (
        ClassificationCheck,
        InstanceGeneration,
        InstructionGeneration,
    )

    job = SamplingSpec(temperature=0.7, top_p=0.5, max_tokens=350)
    generation = InstructionGeneration().stage_sampling(job)
    assert generation.presence_penalty == 2.0
    assert InstanceGeneration("m").stage_sampling(job).presence_penalty == 1.5
    assert ClassificationCheck().stage_sampling(generation).presence_penalty == 0.0
    request = EngineRequest("r", [1, 2], generation, seed=None, max_tokens=350)
    params = sampling_params(request, per_request_seed=False)
    assert (params.presence_penalty, params.frequency_penalty) == (2.0, 0.0)


def test_generation_prompt_is_the_papers_list_one_line_per_instruction():
    from synth_ray.methods.self_instruct_prompts import generation_prompt

    prompt = generation_prompt(
        ["Question: in which year did Yao Ming retire?\nAnswer:", "Name a colour."]
    )
    assert prompt.splitlines() == [
        "Come up with a series of tasks:",
        "1. Question: in which year did Yao Ming retire? Answer",
        "2. Name a colour.",
        "3.",
    ]
