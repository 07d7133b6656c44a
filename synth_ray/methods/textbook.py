"""Method `textbook`: pretraining documents from seeds, Cosmopedia style (seed x format x
audience), and phi-style textbook sections with exercises.

    synth-ray run configs/textbook.yaml

Each input row is a seed: a web extract (`textbook.seed: extract`, Cosmopedia's web-seeded
prompts) or a topic (`seed: topic`). Each seed is written once per (format, audience) pair:
every pair, or `textbook.per_seed` of them drawn per seed with a seeded RNG. Each audience has
the prompt Cosmopedia wrote for it (textbook_academic: college students; textbook_unit: young
children, middle school students, college students, professionals and researchers); a format
is paired only with the listed audiences it has a prompt for, and a format that names no
audience (wikihow, blogpost, textbook_narrative, young_children_story) is written once per
seed. Prompts and their sources: methods/textbook_prompts.py. Dropped: `empty` (an empty
completion) and `truncated` (cut by max_tokens: an unfinished document is no pretraining
text). Row id = hash(source_id, format, audience).
"""

from __future__ import annotations

import random
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from synth_ray.config import JobConfig
from synth_ray.engine.requests import EngineResult
from synth_ray.io.inputs import Document
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext, run_single_stage
from synth_ray.methods.textbook_prompts import (
    ANY_AUDIENCE,
    EXTRACT_CHARS,
    FORMATS,
    audiences_of,
    textbook_prompt,
)
from synth_ray.sections import Section


class TextbookConfig(Section):
    seed: Literal["extract", "topic"] = Field(
        "extract", description="What each input row is: a web extract or a topic."
    )
    formats: list[str] = Field(
        default_factory=lambda: ["textbook_academic"],
        description=f"Formats written per seed: {', '.join(FORMATS)}.",
    )
    audiences: list[str] = Field(
        default_factory=lambda: ["college students"],
        description="Audiences of the formats written for one; each format takes those it has "
        "a prompt for (textbook_academic: college students; textbook_unit: young children, "
        "middle school students, college students, professionals and researchers; "
        "textbook_exercises: any).",
    )
    per_seed: int | None = Field(
        None, ge=1, description="(format, audience) pairs drawn per seed; None: every pair."
    )

    @model_validator(mode="after")
    def _known(self) -> TextbookConfig:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ValueError(
                f"formats: unknown format {unknown[0]!r} (expected some of {sorted(FORMATS)})"
            )
        if not self.formats or not self.audiences:
            raise ValueError("formats: expected at least one format and one audience")
        if any(not a.strip() for a in self.audiences):
            raise ValueError("audiences: an audience is empty")
        for name in self.formats:
            prompts = FORMATS[name]
            if self.seed == "extract" and all(p.extract is None for p in prompts.values()):
                raise ValueError(
                    f"formats: {name} is written for a topic (Cosmopedia's OpenStax prompts); "
                    "set textbook.seed: topic"
                )
            if not audiences_of(name, self.audiences):
                raise ValueError(
                    f"audiences: Cosmopedia wrote {name} for {', '.join(map(str, prompts))}; "
                    f"none of {self.audiences} is one"
                )
        used = {a for name in self.formats for a in audiences_of(name, self.audiences)}
        unused = [a for a in self.audiences if a not in used]
        if unused and used != {None}:
            written = {
                name: [a for a in FORMATS[name] if a not in (None, ANY_AUDIENCE)]
                for name in self.formats
                if None not in FORMATS[name]
            }
            raise ValueError(
                f"audiences: no listed format has a prompt for {unused[0]!r} (audiences with "
                f"a prompt: {written})"
            )
        return self

    def pairs(self) -> list[tuple[str, str | None]]:
        """Every (format, audience) written for a seed; None where a format names none."""
        return [
            (name, audience)
            for name in dict.fromkeys(self.formats)
            for audience in dict.fromkeys(audiences_of(name, self.audiences))
        ]


class TextbookMethod(Method):
    name = "textbook"
    diversity_column = "text"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("format", pa.string()),
            pa.field("audience", pa.string()),
            pa.field("seed", pa.string()),
            pa.field("text", pa.string()),
            pa.field("model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(self, config: TextbookConfig, model_name: str, seed: int) -> None:
        self.config = config
        self.model_name = model_name
        self.seed = seed
        self.all_pairs = config.pairs()

    def chosen_pairs(self, source_id: str) -> list[tuple[str, str | None]]:
        k = self.config.per_seed
        if k is None or k >= len(self.all_pairs):
            return self.all_pairs
        rng = random.Random(f"{self.seed}:{source_id}:pairs")
        return sorted(rng.sample(self.all_pairs, k), key=self.all_pairs.index)

    def estimate_rows(self, doc: Document) -> int:
        return min(self.config.per_seed or len(self.all_pairs), len(self.all_pairs))

    def expand(self, doc: Document) -> list[Candidate]:
        pairs = self.chosen_pairs(doc.source_id)
        if doc.error is not None or not (doc.text or "").strip():
            error = doc.error or "empty seed"
            return [
                Candidate(row_id(doc.source_id, f, a), doc.source_id, error=error) for f, a in pairs
            ]
        seed = (doc.text or "").strip()
        return [
            Candidate(
                row_id(doc.source_id, name, audience),
                doc.source_id,
                fields={"format": name, "audience": audience, "seed": seed[:EXTRACT_CHARS]},
                messages=[
                    {
                        "role": "user",
                        "content": textbook_prompt(name, seed, self.config.seed, audience),
                    }
                ],
            )
            for name, audience in pairs
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        if result.finish_reason == "length":
            return Dropped("truncated")
        text = result.text.strip()
        if not text:
            return Dropped("empty")
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                **candidate.fields,
                "text": text,
                "model": self.model_name,
                **self.token_fields(result),
            }
        )


def run_textbook(ctx: JobContext) -> dict[str, Any]:
    config = ctx.config.section_as(TextbookConfig)
    return run_single_stage(ctx, TextbookMethod(config, ctx.model_name, ctx.config.sampling.seed))


def textbook_papers(config: JobConfig) -> list[str]:
    """Cosmopedia for its formats; phi-1 for the exercises format it describes."""
    formats = config.section_as(TextbookConfig).formats
    keys = ["benallal2024cosmopedia"] if set(formats) - {"textbook_exercises"} else []
    return keys + (["gunasekar2023textbooks"] if "textbook_exercises" in formats else [])


register(MethodSpec("textbook", run=run_textbook, section=TextbookConfig, papers=textbook_papers))
