"""Rephrase's built-in styles (WRAP, FinePhrase, Nemotron-CC) and whole-document mode, on the
simulated engine; the real engine runs them in test_end_to_end.py.

    pytest tests/test_rephrase_styles.py
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from fake_backend import FakeBackend

from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult
from synth_ray.methods.rephrase_styles import STYLES, WRAP_SYSTEM, without_opening
from synth_ray.runtime.job import run_job


def test_every_style_cites_its_source_and_takes_the_text_once():
    assert {s.source for s in STYLES.values()} == {"WRAP", "FinePhrase", "Nemotron-CC"}
    for name, style in STYLES.items():
        assert style.template.count("{text}") == 1, name
    assert {"faq", "table", "tutorial", "math"} <= set(STYLES)
    assert {"diverse_qa", "distill", "extract_knowledge", "knowledge_list"} <= set(STYLES)


def test_the_required_opening_is_removed():
    assert without_opening("Paraphrased Text: Bees live in hives.", "Paraphrased Text:") == (
        "Bees live in hives."
    )
    assert without_opening("**Paraphrased text:**\nBees.", "Paraphrased Text:") == "Bees."
    assert without_opening("Bees live in hives.", "Paraphrased Text:") == "Bees live in hives."


class Recorder:
    def __init__(self, embedded_model):
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.prompts: list[str] = []

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        self.prompts.append(prompt)
        text = "Paraphrased Text: a distilled text" if "Paraphrased Text" in prompt else "An FAQ"
        return EngineResult(request.request_id, text, len(request.prompt_token_ids), 4, "stop")


@pytest.fixture()
def docs(tmp_path):
    long = " ".join(f"Sentence number {i} about the river and its fish." for i in range(200))
    return write_jsonl(
        tmp_path / "docs.jsonl",
        [
            {"id": "short", "text": "Bees live in hives. " * 40},
            {"id": "long", "text": long},
        ],
    )


def config(tmp_path, docs, **rephrase):
    return validate_config(
        {
            "method": "rephrase",
            "input": {"path": str(docs), "id_column": "id"},
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 4},
            "engine": {"max_model_len": 1024},
            "rephrase": {"styles": ["faq", "distill"], **rephrase},
        }
    )


def test_whole_documents_in_their_styles_system_prompts(tmp_path, docs, embedded_model):
    engine = Recorder(embedded_model)
    summary = run_job(
        config(tmp_path, docs, whole_document=True),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    rows = pq.read_table(tmp_path / "out" / "data").to_pylist()
    assert sorted((r["source_id"], r["style"], r["chunk_index"]) for r in rows) == [
        ("short", "distill", 0),
        ("short", "faq", 0),
    ]
    distilled = next(r for r in rows if r["style"] == "distill")
    assert distilled["text"] == "a distilled text"  # Nemotron-CC's opening removed
    # the long document does not fit 1024 tokens whole: an error row per style, named
    assert summary.stats["errored_by_stage"] == {"prompt": 2}
    faq_prompt = next(p for p in engine.prompts if "Frequently Asked Questions" in p)
    distill_prompt = next(p for p in engine.prompts if "Paraphrased Text" in p)
    assert WRAP_SYSTEM not in faq_prompt and "brilliant at reasoning" in distill_prompt
    chunked = run_job(
        config(tmp_path / "chunked", docs),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    assert chunked.stats["rows_out"] > 4 and chunked.stats["rows_errored"] == 0


def test_whole_document_enters_the_fingerprint_only_when_on(tmp_path, docs):
    off = config(tmp_path, docs).fingerprint()
    assert config(tmp_path, docs, whole_document=False).fingerprint() == off
    assert config(tmp_path, docs, whole_document=True).fingerprint() != off
