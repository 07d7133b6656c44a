"""Method `tinystories`: the textbook family's TinyStories mode (Eldan & Li 2023, "TinyStories:
How Small Can Language Models Be and Still Speak Coherent English?"). Stories from nothing but
three sampled words and sampled features.

    synth-ray run configs/tinystories.yaml

Each of `tinystories.num_stories` requests draws a noun, a verb and an adjective from the
vocabulary, and 0 to `max_features` story features, with an RNG seeded by sampling.seed and the
story's index. The vocabulary is the paper's: the 1,603 words of the TinyStories dataset's
prompts (data/tinystories_vocabulary.json names its source), about 100 million (noun, verb,
adjective) triples, so a dataset of the paper's 2.1 million stories rarely repeats one; or a
user's `vocabulary_path`. The prompt is the paper's (section 2.1). Every row records its words
and features, and `words_used` says which of the three the story actually contains (with a
common English inflection: "jumped", "bigger", "baking", "happier"). `require_all_words: true`
drops a story missing one as `missing_required_words`.
Row id = hash(story index, "story").
"""

from __future__ import annotations

import functools
import json
import random
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from synth_ray.config import JobConfig
from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import Document
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import GeneratedDocuments, JobContext
from synth_ray.sections import ADDED, Section

# The paper's prompt (its section 2.1 example, words and features as placeholders).
PROMPT = (
    "Write a short story (3-5 paragraphs) which only uses very simple words that a 3 year old "
    'child would likely understand. The story should use the verb "{verb}", the noun "{noun}" '
    'and the adjective "{adjective}".{features} Remember to only use simple words!'
)
# The dataset's feature names; the first two phrasings are the paper's example, the others ours.
FEATURES = {
    "dialogue": "the story should contain at least one dialogue",
    "bad_ending": "the story has a bad ending",
    "moral": "the story has a moral value",
    "plot_twist": "something unexpected happens in the story",
    "foreshadowing": "the narrative uses foreshadowing or setup and payoff",
    "conflict": "the story has some form of conflict in it",
}
WORD_KINDS = ("nouns", "verbs", "adjectives")
# The paper's vocabulary: the TinyStories dataset's 1,066 nouns, 394 verbs and 245 adjectives
# (1,603 distinct words); the file names its source and licence.
BUILT_IN_VOCABULARY = "tinystories"
VOCABULARY_FILE = "data/tinystories_vocabulary.json"  # in this package


class TinyStoriesConfig(Section):
    num_stories: int = Field(100, ge=1, description="Stories to request.")
    features: list[str] = Field(
        default_factory=lambda: list(FEATURES),
        description=f"Features drawn from: {', '.join(FEATURES)}.",
    )
    max_features: int = Field(2, ge=0, description="Each story gets 0 to this many features.")
    # Set whenever vocabulary_path is not (None when it is), so it enters the fingerprint of
    # every job drawing from the built-in words: an output drawn from the earlier 150-word
    # list is refused, not resumed into a mix of two vocabularies, while a job with its own
    # file keeps its fingerprint (ADDED: None is left out).
    vocabulary: Literal["tinystories"] | None = Field(
        None,
        description="The built-in vocabulary the words are drawn from: tinystories, the "
        "TinyStories dataset's 1,066 nouns, 394 verbs and 245 adjectives.",
        json_schema_extra=ADDED,
    )
    vocabulary_path: str | None = Field(
        None,
        description='JSON {"nouns": [...], "verbs": [...], "adjectives": [...]}, drawn from '
        "instead of the built-in vocabulary.",
    )
    require_all_words: bool = Field(
        False, description="Drop a story that misses one of its three words."
    )

    @model_validator(mode="before")
    @classmethod
    def _one_vocabulary(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("vocabulary_path") is None:
            return {**data, "vocabulary": data.get("vocabulary") or BUILT_IN_VOCABULARY}
        return {**data, "vocabulary": None}

    def check_in_job(self, job: Any) -> None:
        unknown = sorted(set(self.features) - set(FEATURES))
        if unknown:
            raise ValueError(
                f"tinystories.features: unknown feature {unknown[0]!r} (expected some of "
                f"{', '.join(FEATURES)})"
            )


def vocabulary_words(data: Any, where: str) -> dict[str, list[str]]:
    """The nouns, verbs and adjectives of a parsed vocabulary JSON (other keys, such as the
    built-in file's source and licence, are ignored); a missing or empty list is a
    ConfigError naming `where`."""
    for kind in WORD_KINDS:
        words = data.get(kind) if isinstance(data, dict) else None
        if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
            raise ConfigError(f"{where}: needs a non-empty list of words '{kind}'")
    return {kind: data[kind] for kind in WORD_KINDS}


@functools.cache
def built_in_vocabulary() -> dict[str, list[str]]:
    """The TinyStories vocabulary shipped with the package (VOCABULARY_FILE)."""
    file = resources.files("synth_ray.methods").joinpath(VOCABULARY_FILE)
    return vocabulary_words(json.loads(file.read_text(encoding="utf-8")), VOCABULARY_FILE)


def load_vocabulary(path: str | None) -> dict[str, list[str]]:
    """The words of the JSON file at `path`, or the built-in vocabulary when it is None."""
    if path is None:
        return built_in_vocabulary()
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config key tinystories.vocabulary_path: no such file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"tinystories.vocabulary_path {path}: not valid JSON") from None
    return vocabulary_words(data, f"tinystories.vocabulary_path {path}")


INFLECTIONS = r"(?:s|es|ed|d|ing|er|est|ies|ied|ier|iest|ly|ily|y)?"


def uses_word(story: str, word: str) -> bool:
    """The word, or the word with a common English inflection ("jump" in "jumped", "big" in
    "bigger", "bake" in "baking", "happy" in "happier"; never "big" in "bigot")."""
    word = word.lower()
    stems = {word}
    if len(word) > 2 and word.endswith(("e", "y")):
        stems.add(word[:-1])
    pattern = "|".join(rf"{re.escape(stem)}{re.escape(stem[-1])}?" for stem in stems)
    return re.search(rf"\b(?:{pattern}){INFLECTIONS}\b", story.lower()) is not None


def story_request(index: int, seed: int, config: TinyStoriesConfig, vocabulary: dict) -> dict:
    """The words and features of story `index`: the same on every run."""
    rng = random.Random(f"{seed}:story:{index}")
    words = {
        "noun": rng.choice(vocabulary["nouns"]),
        "verb": rng.choice(vocabulary["verbs"]),
        "adjective": rng.choice(vocabulary["adjectives"]),
    }
    k = rng.randint(0, min(config.max_features, len(config.features)))
    features = sorted(rng.sample(config.features, k), key=config.features.index)
    return {**words, "features": features}


def tinystories_prompt(request: dict) -> str:
    phrases = [FEATURES[f] for f in request["features"]]
    features = (
        f" The story should have the following features: {', '.join(phrases)}." if (phrases) else ""
    )
    return (
        PROMPT.replace("{verb}", request["verb"])
        .replace("{noun}", request["noun"])
        .replace("{adjective}", request["adjective"])
        .replace("{features}", features)
    )


class TinyStoriesMethod(Method):
    name = "tinystories"
    diversity_column = "story"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("story", pa.string()),
            pa.field("noun", pa.string()),
            pa.field("verb", pa.string()),
            pa.field("adjective", pa.string()),
            pa.field("features", pa.list_(pa.string())),
            pa.field("words_used", pa.list_(pa.string())),
            pa.field("all_words_used", pa.bool_()),
            pa.field("model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(self, config: TinyStoriesConfig, model_name: str) -> None:
        self.config = config
        self.model_name = model_name

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def expand(self, doc: Document) -> list[Candidate]:
        request = dict(doc.extra)
        messages = [{"role": "user", "content": tinystories_prompt(request)}]
        return [Candidate(row_id(doc.source_id, "story"), doc.source_id, request, messages)]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        story = result.text.strip()
        if not story:
            return Dropped("empty")
        words = [candidate.fields[k] for k in ("noun", "verb", "adjective")]
        used = [w for w in words if uses_word(story, w)]
        if self.config.require_all_words and len(used) < 3:
            return Dropped("missing_required_words")
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                "story": story,
                **{k: candidate.fields[k] for k in ("noun", "verb", "adjective", "features")},
                "words_used": used,
                "all_words_used": len(used) == 3,
                "model": self.model_name,
                **self.token_fields(result),
            }
        )


def run_tinystories(ctx: JobContext) -> dict[str, Any]:
    config = ctx.config.section_as(TinyStoriesConfig)
    vocabulary = load_vocabulary(config.vocabulary_path)
    seed = ctx.config.sampling.seed
    make = functools.partial(story_document, seed=seed, config=config, vocabulary=vocabulary)
    requests = GeneratedDocuments(config.num_stories, make)  # each replica makes its own
    method = TinyStoriesMethod(config, ctx.model_name)
    units = ctx.runner.plan(requests, method, ctx.fingerprint)
    ctx.prepare()
    return ctx.runner.execute(ctx.store, requests, method, units)


def story_document(index: int, seed: int, config: TinyStoriesConfig, vocabulary: dict) -> Document:
    """Request `index` as a document: its words and features (`story_request`)."""
    return Document(
        index, f"story-{index:07d}", None, extra=story_request(index, seed, config, vocabulary)
    )


def tinystories_files(config: JobConfig) -> dict[tuple[str, str], str]:
    path = config.section_as(TinyStoriesConfig).vocabulary_path
    return {("tinystories", "vocabulary_path"): path} if path else {}


register(
    MethodSpec(
        "tinystories",
        run=run_tinystories,
        section=TinyStoriesConfig,
        input_spec=None,  # stories from sampled words, no input rows
        check=lambda config: (
            load_vocabulary(config.section_as(TinyStoriesConfig).vocabulary_path) and None
        ),
        files=tinystories_files,
        papers=lambda config: ["eldan2023tinystories"],
    )
)
