"""Methods `textbook` (Cosmopedia / phi-style) and `tinystories`: prompts, what each row
records, the word check, bad configs, and a kill resumed exactly (simulated engine; the real
engine runs both in test_end_to_end.py).

    pytest tests/test_textbook.py
"""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from conftest import Crash, crash_on_commit, write_jsonl
from fake_backend import FakeBackend

from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.base import Dropped, Kept
from synth_ray.methods.textbook import TextbookConfig, TextbookMethod
from synth_ray.methods.textbook_prompts import textbook_prompt
from synth_ray.methods.tinystories import (
    TinyStoriesConfig,
    built_in_vocabulary,
    load_vocabulary,
    story_request,
    uses_word,
)
from synth_ray.runtime.job import run_job


def rows(path):
    return [r for f in OutputStore(path).data_files() for r in pq.read_table(f).to_pylist()]


class Echo:
    """Answers each prompt with a text made from it, so rows can be traced to prompts."""

    def __init__(self, embedded_model: str, text=None) -> None:
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.text = text or (lambda prompt: f"Document for: {prompt[-60:]}")
        self.prompts: list[str] = []

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        self.prompts.append(prompt)
        text = self.text(prompt)
        return EngineResult(request.request_id, text, len(request.prompt_token_ids), 20, "stop")


def test_pairs_prompts_and_seeds():
    config = TextbookConfig(
        formats=["textbook_academic", "textbook_exercises", "blogpost"],
        audiences=["young children", "college students"],
    )
    assert config.pairs() == [
        ("textbook_academic", "college students"),  # Cosmopedia wrote it for college only
        ("textbook_exercises", "young children"),  # ours takes any audience
        ("textbook_exercises", "college students"),
        ("blogpost", None),  # a blog post names no audience: written once
    ]
    web = textbook_prompt(
        "textbook_academic", "Bees live in colonies. " * 100, "extract", "college students"
    )
    assert web.startswith('Here is an extract from a webpage: "Bees live')
    assert "targeted at college students, related to the given extract" in web
    assert len(web) < 1000 + 1200  # the extract is cut to 1000 characters, as Cosmopedia did
    topic = textbook_prompt("wikihow", "Caring for a {audience} sourdough", "topic", None)
    assert topic.startswith('Here is a topic: "Caring for a {audience} sourdough".')
    assert "related to the topic above" in topic
    exercises = textbook_prompt("textbook_exercises", "Bees.", "topic", "young children")
    assert "Write a section of a textbook for young children that teaches" in exercises


def test_each_audience_gets_the_prompt_cosmopedia_wrote_for_it():
    """Cosmopedia's narrative textbook, blog post and story name no audience, its academic
    web prompt is written for college students, and its OpenStax prompts differ per audience
    in more than a name: no audience is pasted into another's prompt."""
    narrative = textbook_prompt("textbook_narrative", "Bees.", "extract", None)
    assert "course unit suitable for a textbook, related to the given extract" in narrative
    assert "targeted at" not in narrative
    assert TextbookConfig(formats=["textbook_narrative"]).pairs() == [("textbook_narrative", None)]
    story = textbook_prompt("young_children_story", "Bees.", "extract", None)
    assert "inspired from this text snippet: \n\u201cBees.\u201d" in story
    assert "addressing everything in the snippet" in story
    units = TextbookConfig(
        seed="topic",
        formats=["textbook_unit"],
        audiences=["young children", "professionals and researchers"],
    )
    prompts = [textbook_prompt(f, "Photosynthesis", "topic", a) for f, a in units.pairs()]
    assert prompts[0].startswith(
        "Create a fun and simple e-learning module on 'Photosynthesis', tailored for 5 to 10 "
        "year-old children."
    )
    assert "In this module for young children, aim to:" in prompts[0]
    assert prompts[1].startswith(
        "Create an extract of a scientific journal article for 'Photosynthesis', tailored for "
        "professionals and researchers on the topic.\n\nThe style should mirror"
    )


@pytest.mark.parametrize(
    ("textbook", "message"),
    [
        (
            {"formats": ["textbook_academic"], "audiences": ["researchers"]},
            "Cosmopedia wrote textbook_academic for college students; none of ['researchers']",
        ),
        (
            {"formats": ["textbook_academic", "blogpost"], "audiences": ["college students", "x"]},
            "no listed format has a prompt for 'x'",
        ),
        (
            {"formats": ["textbook_unit"], "audiences": ["young children"]},
            "textbook_unit is written for a topic (Cosmopedia's OpenStax prompts)",
        ),
    ],
)
def test_audiences_without_a_prompt_are_refused(textbook, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(
            {
                "method": "textbook",
                "input": {"path": "x"},
                "output": {"path": "o"},
                "textbook": textbook,
            }
        )


def test_a_document_cut_by_max_tokens_is_dropped():
    """An unfinished textbook is no pretraining text: dropped as `truncated`, as other methods
    drop theirs (Cosmopedia kept them, with a 2500-token budget)."""
    method = TextbookMethod(TextbookConfig(), "m", 0)
    candidate = method.expand(Document(ordinal=0, source_id="s", text="Bees live in hives."))[0]
    cut = method.finish(candidate, EngineResult("r", "Bees are insects that", 9, 2500, "length"))
    assert cut == Dropped("truncated")
    whole = method.finish(candidate, EngineResult("r", "Bees are insects.", 9, 5, "stop"))
    assert isinstance(whole, Kept) and whole.row["text"] == "Bees are insects."


def textbook_config(tmp_path, **textbook):
    data = write_jsonl(
        tmp_path / "seeds.jsonl",
        [{"id": f"s{i}", "text": f"Seed passage number {i} about rivers."} for i in range(5)]
        + [{"id": "s5", "text": "   "}],
    )
    return validate_config(
        {
            "method": "textbook",
            "input": {"path": str(data), "id_column": "id"},
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 3},
            "engine": {"max_model_len": 2048},
            "textbook": {
                "formats": ["textbook_academic", "textbook_exercises", "blogpost"],
                "audiences": ["high school students", "college students"],
                **textbook,
            },
        }
    )


def test_textbook_rows_record_format_audience_and_seed(tmp_path, embedded_model):
    engine = Echo(embedded_model)
    summary = run_job(
        textbook_config(tmp_path, per_seed=2),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    out = rows(tmp_path / "out")
    assert len(out) == 10  # 5 seeds x 2 drawn pairs
    by_seed: dict[str, list] = {}
    for row in out:
        by_seed.setdefault(row["source_id"], []).append((row["format"], row["audience"]))
        assert row["seed"].startswith("Seed passage number")
    assert len({tuple(p) for p in by_seed.values()}) > 1  # pairs drawn per seed, not fixed
    again = Echo(embedded_model)
    run_job(
        textbook_config(tmp_path / "b", per_seed=2),
        show_progress=False,
        backend=FakeBackend(responder=again),
    )
    assert sorted(r["id"] for r in rows(tmp_path / "b" / "out")) == sorted(r["id"] for r in out)
    stats = summary.stats
    assert stats["errored_by_stage"] == {"input": 2} and stats["accounted"]
    academic = next(p for p in engine.prompts if "Write an extensive and detailed course" in p)
    assert "targeted at college students, related to the given extract" in academic
    exercises = [p for p in engine.prompts if "Write a section of a textbook for" in p]
    assert any("for high school students that teaches" in p for p in exercises)


def test_killed_textbook_job_resumes_exactly(tmp_path, embedded_model, monkeypatch):
    engine = Echo(embedded_model)
    run_job(
        textbook_config(tmp_path / "clean"),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    with monkeypatch.context() as patch:
        crash_on_commit(patch, lambda r: r.unit_index == 2)
        with pytest.raises(Crash):
            run_job(
                textbook_config(tmp_path),
                show_progress=False,
                backend=FakeBackend(responder=engine),
            )
    run_job(textbook_config(tmp_path), show_progress=False, backend=FakeBackend(responder=engine))
    assert sorted(r["id"] for r in rows(tmp_path / "out")) == sorted(
        r["id"] for r in rows(tmp_path / "clean" / "out")
    )


def test_words_are_checked_in_their_inflections():
    story = "Tom baked a cake. The big dog jumped over the Shiny log."
    assert uses_word(story, "bake") and uses_word(story, "jump") and uses_word(story, "shiny")
    assert uses_word(story, "big") and not uses_word(story, "swim")
    assert uses_word("a bigger boat", "big") and uses_word("she was happier", "happy")
    assert not uses_word("an ambiguous bigot", "big")  # an inflection, not any longer word


def test_story_requests_are_seeded_and_drawn_from_the_vocabulary():
    config = TinyStoriesConfig(max_features=2)
    words = built_in_vocabulary()
    first = [story_request(i, 0, config, words) for i in range(50)]
    assert first == [story_request(i, 0, config, words) for i in range(50)]
    assert first != [story_request(i, 1, config, words) for i in range(50)]
    assert all(r["noun"] in words["nouns"] and r["verb"] in words["verbs"] for r in first)
    assert {len(r["features"]) for r in first} == {0, 1, 2}


def test_default_vocabulary_is_the_papers_size_and_its_triples_rarely_repeat():
    """The paper drew one verb, noun and adjective per story from about 1500 basic words. The
    built-in vocabulary is the TinyStories dataset's (1,603 distinct words); 100,000 draws,
    5% of the paper's 2.1 million stories, repeat a triple about 50 times (the 150 words
    used before: about 33,000)."""
    words = built_in_vocabulary()
    assert {kind: len(set(words[kind])) for kind in words} == {
        "nouns": 1066,
        "verbs": 394,
        "adjectives": 245,
    }
    assert 1400 < len({w for kind in words.values() for w in kind}) < 1700
    assert {"decorate"} <= set(words["verbs"]) and {"thunder"} <= set(words["nouns"])
    assert "ancient" in words["adjectives"]  # the paper's example prompt's three words
    config = TinyStoriesConfig()
    draws = [story_request(i, 0, config, words) for i in range(100_000)]
    assert all(
        r["verb"] in words["verbs"]
        and r["noun"] in words["nouns"]
        and r["adjective"] in words["adjectives"]
        for r in draws
    )
    triples = {(r["verb"], r["noun"], r["adjective"]) for r in draws}
    assert len(triples) > 99_800


def test_a_users_vocabulary_replaces_the_built_in_one(tmp_path):
    vocabulary = tmp_path / "words.json"
    mine = {"nouns": ["kettle", "moss"], "verbs": ["wobble"], "adjectives": ["fizzy"]}
    vocabulary.write_text(json.dumps({**mine, "source": "mine"}))
    config = TinyStoriesConfig(vocabulary_path=str(vocabulary))
    assert config.vocabulary is None
    words = load_vocabulary(config.vocabulary_path)
    assert words == mine
    draws = [story_request(i, 0, config, words) for i in range(20)]
    assert {r["noun"] for r in draws} == {"kettle", "moss"}
    assert {(r["verb"], r["adjective"]) for r in draws} == {("wobble", "fizzy")}
    # the recipe names the built-in vocabulary; `--set tinystories.vocabulary_path=...` wins
    both = TinyStoriesConfig(vocabulary="tinystories", vocabulary_path=str(vocabulary))
    assert both.vocabulary is None and both.vocabulary_path == str(vocabulary)


def test_default_vocabulary_change_refuses_outputs_drawn_from_the_old_one():
    """An output drawn from the earlier 150-word list must not resume into one drawn from the
    TinyStories words, so the default job's fingerprint changed; a job with its own vocabulary
    file draws the same words as before and keeps its fingerprint (the value pinned below
    was computed before the built-in vocabulary changed)."""

    def fingerprint(section):
        data = {"method": "tinystories", "output": {"path": "o"}, "tinystories": section}
        return validate_config(data).fingerprint()

    assert fingerprint({}) != "b144522320f48e36"  # the default job's before the change
    assert fingerprint({}) == fingerprint({"vocabulary": "tinystories"})
    assert fingerprint({"vocabulary_path": "words.json"}) == "2dc5be8ba1cfbe3f"


def tinystories_config(tmp_path, **section):
    return validate_config(
        {
            "method": "tinystories",
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 4},
            "engine": {"max_model_len": 1024},
            "tinystories": {"num_stories": 10, **section},
        }
    )


def story_with_some_words(prompt: str) -> str:
    """Uses the noun and the verb (inflected), never the adjective."""
    verb = re.search(r'the verb "(\w+)"', prompt).group(1)
    noun = re.search(r'the noun "(\w+)"', prompt).group(1)
    return f"One day a {noun.upper()} wanted to {verb}. It {verb}s all day."


def test_tinystories_rows_say_which_words_were_used(tmp_path, embedded_model):
    from synth_ray.methods.stages import GeneratedDocuments

    engine = Echo(embedded_model, story_with_some_words)
    backend = FakeBackend(responder=engine)
    specs = []
    real_add = backend.add_stage
    backend.add_stage = lambda spec: (specs.append(spec), real_add(spec))[-1]
    summary = run_job(tinystories_config(tmp_path), show_progress=False, backend=backend)
    assert isinstance(specs[0].documents, GeneratedDocuments)  # replicas make their requests
    out = rows(tmp_path / "out")
    assert len(out) == 10 and summary.stats["rows_in"] == 10
    for row in out:
        assert row["words_used"] == [row["noun"], row["verb"]] and not row["all_words_used"]
    with_features = [p for p in engine.prompts if "following features" in p]
    assert with_features and all("Remember to only use simple words!" in p for p in engine.prompts)
    strict = run_job(
        tinystories_config(tmp_path / "strict", require_all_words=True),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    assert strict.stats["dropped_by_filter"] == {"missing_required_words": 10}


def test_killed_tinystories_job_resumes_exactly(tmp_path, embedded_model, monkeypatch):
    engine = Echo(embedded_model, story_with_some_words)
    run_job(
        tinystories_config(tmp_path / "clean"),
        show_progress=False,
        backend=FakeBackend(responder=engine),
    )
    with monkeypatch.context() as patch:
        crash_on_commit(patch, lambda r: r.unit_index == 1)
        with pytest.raises(Crash):
            run_job(
                tinystories_config(tmp_path),
                show_progress=False,
                backend=FakeBackend(responder=engine),
            )
    backend = FakeBackend(responder=engine)
    run_job(tinystories_config(tmp_path), show_progress=False, backend=backend)
    assert 0 < len(backend.generated) < 10
    assert rows(tmp_path / "out") == rows(tmp_path / "clean" / "out")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"method": "textbook", "input": {"path": "x"}, "textbook": {"formats": ["poem"]}},
            "config key textbook.formats: unknown format 'poem'",
        ),
        (
            {"method": "tinystories", "tinystories": {"features": ["romance"]}},
            "tinystories.features: unknown feature 'romance'",
        ),
    ],
)
def test_bad_configs(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config({"output": {"path": "o"}, **data})


def test_bad_vocabulary_file_is_one_line(tmp_path, embedded_model):
    vocabulary = tmp_path / "words.json"
    vocabulary.write_text(json.dumps({"nouns": ["cat"], "verbs": []}))
    config = tinystories_config(tmp_path, vocabulary_path=str(vocabulary))
    backend = FakeBackend()
    with pytest.raises(ConfigError, match="needs a non-empty list of words 'verbs'"):
        run_job(config, show_progress=False, backend=backend)
    assert backend.generated == []
