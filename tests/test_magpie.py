"""Method `magpie`: the pre-query prefix cut from real chat templates (and refused where it
cannot be), the filters, the stages' sampling, and a kill resumed exactly (simulated engine;
the real engine runs it in test_end_to_end.py).

    pytest tests/test_magpie.py
"""

from __future__ import annotations

import copy

import pyarrow.parquet as pq
import pytest
from conftest import Crash, crash_on_commit
from fake_backend import FakeBackend

from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.magpie import pre_query_prefix
from synth_ray.runtime.job import run_job


@pytest.fixture()
def tokenizer(embedded_model):
    return copy.deepcopy(PromptRenderer.from_model(embedded_model).tokenizer)


def test_prefix_is_the_templates_text_before_the_user_message(tokenizer):
    prefix, stop = pre_query_prefix(tokenizer)
    assert prefix.endswith("<|im_start|>user\n") and "<|im_start|>system" in prefix
    assert stop == ("<|im_end|>",)
    # a Llama-3-style template, cut the same way
    tokenizer.chat_template = (
        "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
    )
    assert pre_query_prefix(tokenizer) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        ("<|eot_id|>",),
    )


@pytest.mark.parametrize(
    ("template", "why"),
    [
        (None, "has no chat template"),
        ("{{ messages[0]['content'] }}", "writes nothing before the user's message"),
        ("{{ messages[0]['content'] }} / {{ messages[0]['content'] }}", "exactly once"),
        ("len {{ messages[0]['content'] | length }}: {{ messages[0]['content'] }}", "depends on"),
    ],
)
def test_templates_that_cannot_be_cut_are_refused(tokenizer, template, why):
    tokenizer.chat_template = template
    with pytest.raises(ConfigError, match=why):
        pre_query_prefix(tokenizer)


INSTRUCTIONS = [
    "How do volcanoes form on the ocean floor?",
    "",  # empty
    "Hi there",  # too short
    "how do VOLCANOES form   on the ocean floor?",  # a duplicate of the first
    "Write a poem about the sea and its endless",  # truncated
    "Explain what a hash table is and when to use one.",
    "Give me three tips for learning French quickly.",
    "Give me three tips for learning French quickly.",  # a duplicate
]


class ScriptedModel:
    def __init__(self, embedded_model: str) -> None:
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.prefix = pre_query_prefix(self.tokenizer)[0]
        self.sampling: dict[str, object] = {}

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        rid, tokens = request.request_id, len(request.prompt_token_ids)
        if prompt == self.prefix:  # the raw pre-query prefix, nothing else
            self.sampling["instruction"] = request.sampling
            i = self.index[rid]
            why = "length" if i == 4 else "stop"
            return EngineResult(rid, INSTRUCTIONS[i], tokens, 9, why)
        self.sampling["response"] = request.sampling
        asked = prompt.split("<|im_start|>user\n")[-1].split("<|im_end|>")[0]
        return EngineResult(rid, f"An answer to: {asked}", tokens, 9, "stop")


def magpie_config(tmp_path, **magpie):
    return validate_config(
        {
            "method": "magpie",
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 2},
            "engine": {"max_model_len": 1024},
            "sampling": {"max_tokens": 64, "temperature": 0.3},
            "magpie": {"num_instructions": len(INSTRUCTIONS), **magpie},
        }
    )


def scripted(embedded_model):
    from synth_ray.methods.base import row_id

    model = ScriptedModel(embedded_model)
    model.index = {row_id(f"magpie-{i:07d}", "instruction"): i for i in range(len(INSTRUCTIONS))}
    return model


def rows(path):
    return [r for f in OutputStore(path).data_files() for r in pq.read_table(f).to_pylist()]


def test_magpie_job_filters_dedupes_and_answers(tmp_path, embedded_model):
    from synth_ray.methods.stages import GeneratedDocuments

    model = scripted(embedded_model)
    backend = FakeBackend(responder=model)
    specs = []
    real_add = backend.add_stage
    backend.add_stage = lambda spec: (specs.append(spec), real_add(spec))[-1]
    summary = run_job(magpie_config(tmp_path), show_progress=False, backend=backend)
    # the instruction requests are made by the replicas, never shipped as a list
    assert isinstance(specs[0].documents, GeneratedDocuments)
    out = rows(tmp_path / "out")
    assert [r["instruction"] for r in out] == [
        INSTRUCTIONS[0],
        INSTRUCTIONS[5],
        INSTRUCTIONS[6],
    ]
    assert out[0]["response"] == f"An answer to: {INSTRUCTIONS[0]}"
    stats = summary.stats
    assert stats["dropped_by_filter"] == {
        "empty": 1,
        "too_short": 1,
        "truncated": 1,
        "duplicate": 2,
    }
    assert stats["accounted"] and stats["rows_in"] == len(INSTRUCTIONS) and stats["rows_out"] == 3
    assert stats["magpie"]["instructions_kept"] == 3
    instruction, response = model.sampling["instruction"], model.sampling["response"]
    assert (instruction.temperature, instruction.top_p) == (1.0, 1.0)
    assert "\n" in instruction.stop and "<|im_end|>" in instruction.stop
    assert response.temperature == 0.0 and response.max_tokens == 64


def test_killed_in_responses_resumes_without_asking_again(tmp_path, embedded_model, monkeypatch):
    from synth_ray.methods.base import row_id

    model = scripted(embedded_model)
    run_job(
        magpie_config(tmp_path / "clean"), show_progress=False, backend=FakeBackend(responder=model)
    )
    with monkeypatch.context() as patch:
        # responses unit k answers instructions unit k: unit 3 holds one instruction to answer
        crash_on_commit(patch, lambda r: r.stage == "responses" and r.unit_index == 3)
        with pytest.raises(Crash):
            run_job(
                magpie_config(tmp_path), show_progress=False, backend=FakeBackend(responder=model)
            )
    done = {r.unit_index for r in OutputStore(tmp_path / "out").committed("responses").values()}
    answered = {0: [0], 1: [], 2: [5], 3: [6]}  # per responses unit, the instructions kept
    left = {
        row_id(f"magpie-{i:07d}", "response")
        for u in answered
        if u not in done
        for i in answered[u]
    }
    backend = FakeBackend(responder=model)
    summary = run_job(magpie_config(tmp_path), show_progress=False, backend=backend)
    assert sorted(backend.generated) == sorted(left)  # only the uncommitted units' responses
    responses = {row_id(f"magpie-{i:07d}", "response") for i in range(len(INSTRUCTIONS))}
    assert row_id("magpie-0000006", "response") in backend.generated
    assert set(backend.generated) <= responses  # no instruction asked again
    assert rows(tmp_path / "out") == rows(tmp_path / "clean" / "out")
    assert summary.stats["accounted"] and summary.stats["rows_in"] == len(INSTRUCTIONS)


def test_a_model_without_a_usable_template_fails_before_any_work(tmp_path, embedded_model):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(embedded_model, model)
    config_file = model / "tokenizer_config.json"
    import json

    tokenizer_config = json.loads(config_file.read_text())
    tokenizer_config["chat_template"] = "{{ messages[0]['content'] }}"
    config_file.write_text(json.dumps(tokenizer_config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = validate_config(
        {
            "method": "magpie",
            "output": {"path": str(tmp_path / "out")},
            "engine": {"model": str(model), "max_model_len": 1024},
        }
    )
    backend = FakeBackend()
    with pytest.raises(ConfigError, match="writes nothing before the user's message"):
        run_job(config, show_progress=False, backend=backend)
    assert backend.generated == [] and not (tmp_path / "out" / "_manifest.jsonl").exists()


def test_the_driver_reads_no_instruction_to_dedup_and_answer(
    tmp_path, embedded_model, ray_local, monkeypatch
):
    """Dedup keys are computed in Ray tasks beside the shards and the responses stage goes by
    reference (each unit's replica reads its instructions unit): from the instructions
    stage's end on, the driver reads neither an input row nor an output shard."""
    from conftest import watch_driver_reads

    seen = watch_driver_reads(monkeypatch, after_stage="instructions")
    backend = FakeBackend(responder=scripted(embedded_model))
    specs = []
    real_add = backend.add_stage
    backend.add_stage = lambda spec: (specs.append(spec), real_add(spec))[-1]
    summary = run_job(magpie_config(tmp_path), show_progress=False, backend=backend)
    assert seen["watching"] and seen["reads"] == []
    [responses] = [spec for spec in specs if spec.stage == "responses"]
    assert not isinstance(responses.documents, list)  # no instruction travels with it
    out = rows(tmp_path / "out")
    assert [r["instruction"] for r in out] == [INSTRUCTIONS[0], INSTRUCTIONS[5], INSTRUCTIONS[6]]
    assert summary.stats["dropped_by_filter"]["duplicate"] == 2 and summary.stats["accounted"]


def test_duplicates_are_every_occurrence_after_the_first_across_units():
    import numpy as np
    import pyarrow as pa

    from synth_ray.methods.magpie import duplicate_positions, instruction_keys

    units = [
        ["Tell me a joke.", "Name a river."],
        ["tell me  a JOKE."],
        [],
        ["A", "name a river.", "A"],
    ]
    keys = [instruction_keys(pa.table({"instruction": pa.array(u, pa.string())})) for u in units]
    found = duplicate_positions(keys)
    assert [p.tolist() for p in found] == [[], [0], [], [1, 2]]
    assert [p.tolist() for p in duplicate_positions([np.array([], dtype="S16")])] == [[]]
