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
from synth_ray.methods.base import Candidate, Dropped, Kept
from synth_ray.methods.rephrase import RephraseConfig, RephraseMethod
from synth_ray.methods.rephrase_styles import STYLES, WRAP_SYSTEM
from synth_ray.runtime.job import run_job


def test_every_style_cites_its_source_and_takes_the_text_once():
    assert {s.source for s in STYLES.values()} == {"WRAP", "FinePhrase", "Nemotron-CC"}
    for name, style in STYLES.items():
        assert style.template.count("{text}") == 1, name
    assert {"faq", "table", "tutorial", "math"} <= set(STYLES)
    assert {"diverse_qa", "distill", "extract_knowledge", "knowledge_list"} <= set(STYLES)


def finished(style: str, answer: str, finish_reason: str = "stop"):
    """The row `rephrase` makes of one model answer in `style`: its text, or the drop's name."""
    method = RephraseMethod(RephraseConfig(styles=[style]), lambda texts: [1] * len(texts), "m")
    candidate = Candidate("r", "s", fields={"chunk_index": 0, "style": style, "source_text": "x"})
    outcome = method.finish(candidate, EngineResult("r", answer, 10, 10, finish_reason))
    if isinstance(outcome, Dropped):
        return Dropped(outcome.filter_name)
    assert isinstance(outcome, Kept)
    return outcome.row["text"]


@pytest.mark.parametrize(
    ("style", "opening"),
    [("wikipedia", "Here is a paraphrased version:"), ("distill", "Paraphrased Text:")],
)
def test_nemotron_answers_without_their_opening_line_are_dropped(style, opening):
    """NeMo Curator keeps a `wikipedia` or `distill` answer only when it begins with the line
    its prompt asks for (after markdown is removed), and cuts that line off."""
    for answer in [
        f"Sure! {opening}\nBees live in hives.",
        "I'm sorry, but I cannot paraphrase this text.",
        "Bees live in hives.",
        f"{opening.lower()} Bees live in hives.",  # NeMo's prefix check is case-sensitive
        f"## {opening}\nBees live in hives.",
    ]:
        assert finished(style, answer) == Dropped("missing_opening"), answer
    assert finished(style, f"{opening}\nBees live in hives.") == "Bees live in hives."
    assert finished(style, f"**{opening}** Bees live in hives.") == "Bees live in hives."
    assert finished(style, f'{opening}\n"Bees live in hives."') == "Bees live in hives."


def test_diverse_qa_keeps_question_lines_and_drops_a_preamble():
    """NeMo Curator's diverse-QA post-processor: the opening line and "- " bullets go, each
    "Question:" line starts a pair, and anything else before the first question (a "Sure!"
    preamble, a refusal) leaves nothing, so the answer is dropped."""
    answer = (
        "Here are the questions and answers based on the provided text:\n"
        "- Question: Where do bees live? Answer: In hives.\n"
        "- Question: Who lays the eggs?\n  Answer: The **queen**.\n"
    )
    assert finished("diverse_qa", answer) == (
        "Question: Where do bees live? Answer: In hives.\n\n"
        "Question: Who lays the eggs?\nAnswer: The queen."
    )
    without_opening = "Question: Where do bees live? Answer: In hives."
    assert finished("diverse_qa", without_opening) == without_opening
    for answer in [
        "Sure! Here are some questions:\n- Question: Where do bees live? Answer: In hives.",
        "I cannot help with that.",
        "Here are the questions and answers based on the provided text:",
    ]:
        assert finished("diverse_qa", answer) == Dropped("unparsed"), answer


def test_knowledge_list_and_extract_knowledge_lose_their_scaffolding():
    answer = "Here are the key facts:\n- Bees live in hives.\n- The queen lays eggs.\n  Daily."
    assert finished("knowledge_list", answer) == "Bees live in hives.\nThe queen lays eggs.\nDaily."
    passages = "Passage 1:\nBees live in hives.\n\nPassage 2:\nThe queen lays eggs."
    assert finished("extract_knowledge", passages) == "Bees live in hives.\n\nThe queen lays eggs."


def test_nemotron_answers_cut_by_max_tokens_are_dropped():
    """NeMo Curator's token-count filter sits just under each style's output budget, so an
    answer cut by max_tokens never becomes a row. WRAP's and FinePhrase's styles keep theirs,
    marked by `finish_reason`."""
    for style in ["wikipedia", "diverse_qa", "distill", "extract_knowledge", "knowledge_list"]:
        assert finished(style, "Paraphrased Text: Bees live", "length") == Dropped("truncated")
    assert finished("faq", "Q: Where do bees live?", "length") == "Q: Where do bees live?"
    assert finished("medium", "Bees live", "length") == "Bees live"


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


def test_dropped_nemotron_answers_are_counted_by_reason(tmp_path, embedded_model):
    """A refusal or a preamble is a dropped row, named in the job's stats, never a row."""
    docs = write_jsonl(tmp_path / "one.jsonl", [{"id": "d", "text": "Bees live in hives."}])

    def answer(request):
        return EngineResult(request.request_id, "Sure! Here it is: bees.", 5, 4, "stop")

    summary = run_job(
        validate_config(
            {
                "method": "rephrase",
                "input": {"path": str(docs), "id_column": "id"},
                "output": {"path": str(tmp_path / "out")},
                "engine": {"max_model_len": 1024},
                "rephrase": {"styles": ["wikipedia", "distill", "diverse_qa", "faq"]},
            }
        ),
        show_progress=False,
        backend=FakeBackend(responder=answer),
    )
    stats = summary.stats
    assert stats["dropped_by_filter"] == {"missing_opening": 2, "unparsed": 1}
    assert stats["rows_out"] == 1 and stats["accounted"]
