"""Method `rephrase`: WRAP-style rephrasing of web documents (Maini et al. 2024, "Rephrasing the Web").

    synth-ray run configs/quickstart.yaml

Each document is split into chunks of at most `rephrase.max_chunk_tokens` tokens (WRAP used
~300) and each chunk is rephrased once per style. The four built-in prompts are the paper's
(its appendix: easy, medium/Wikipedia, hard, Q/A), sent after the paper's system prompt; a
`custom_styles` entry is a template with `{text}` and may replace a built-in one.
Row id = hash(source_id, chunk_index, style): the same config and input give the same ids.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
from pydantic import Field, model_validator

from synth_ray.engine.requests import EngineResult
from synth_ray.io.inputs import Document
from synth_ray.methods.base import (
    TOKEN_COLUMNS,
    Candidate,
    Dropped,
    Kept,
    Method,
    Outcome,
    row_id,
)
from synth_ray.methods.chunking import TokenCounter, split_into_chunks
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext, run_single_stage
from synth_ray.sections import Section

DEFAULT_STYLES = ["easy", "medium", "hard", "qa"]


class RephraseConfig(Section):
    styles: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STYLES),
        description="Styles per chunk: easy, medium, hard, qa, or names from custom_styles.",
    )
    # WRAP rephrased ~300-token chunks: long enough for context, short enough for a small model.
    max_chunk_tokens: int = Field(300, ge=8)
    custom_styles: dict[str, str] = Field(
        default_factory=dict,
        description="name -> prompt template with {text}; a template may replace a built-in style.",
    )

    @model_validator(mode="after")
    def _styles_known(self) -> RephraseConfig:
        if not self.styles:
            raise ValueError("styles: expected at least one style")
        for name, template in self.custom_styles.items():
            if "{text}" not in template:
                raise ValueError(f"custom_styles.{name}: template must contain {{text}}")
        known = set(DEFAULT_STYLES) | set(self.custom_styles)
        unknown = [s for s in self.styles if s not in known]
        if unknown:
            raise ValueError(
                f"styles: unknown style {unknown[0]!r} (expected one of {sorted(known)})"
            )
        return self


WRAP_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the questions."
)

WRAP_STYLES = {
    "easy": (
        "For the following paragraph give me a paraphrase of the same using a very small "
        "vocabulary and extremely simple sentences that a toddler will understand:\n\n{text}"
    ),
    "medium": (
        "For the following paragraph give me a diverse paraphrase of the same in high quality "
        "English language as in sentences on Wikipedia:\n\n{text}"
    ),
    "hard": (
        "For the following paragraph give me a paraphrase of the same using very terse and "
        "abstruse language that only an erudite scholar will understand. Replace simple words "
        "and phrases with rare and complex ones:\n\n{text}"
    ),
    "qa": (
        "Convert the following paragraph into a conversational format with multiple tags of "
        '"Question:" followed by "Answer:":\n\n{text}'
    ),
}

# Rough characters per token for English BPE; only sizes work units, never limits a chunk.
_CHARS_PER_TOKEN = 4


class RephraseMethod(Method):
    name = "rephrase"
    diversity_column = "text"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("chunk_index", pa.int32()),
            pa.field("style", pa.string()),
            pa.field("text", pa.string()),
            pa.field("source_text", pa.string()),
            pa.field("model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(self, config: RephraseConfig, count_tokens: TokenCounter, model_name: str) -> None:
        self.config = config
        self.count_tokens = count_tokens
        self.model_name = model_name
        self.templates = {**WRAP_STYLES, **config.custom_styles}

    def estimate_rows(self, doc: Document) -> int:
        if not doc.text or doc.error:
            return 1
        tokens = len(doc.text) / _CHARS_PER_TOKEN
        return len(self.config.styles) * max(1, math.ceil(tokens / self.config.max_chunk_tokens))

    def expand(self, doc: Document) -> list[Candidate]:
        if doc.error is not None:
            return [Candidate(row_id(doc.source_id, "input"), doc.source_id, error=doc.error)]
        if not doc.text or not doc.text.strip():
            return [
                Candidate(row_id(doc.source_id, "input"), doc.source_id, error="empty document")
            ]
        chunks = split_into_chunks(doc.text, self.config.max_chunk_tokens, self.count_tokens)
        candidates = []
        for index, chunk in enumerate(chunks):
            for style in self.config.styles:
                prompt = self.templates[style].replace("{text}", chunk)
                candidates.append(
                    Candidate(
                        row_id=row_id(doc.source_id, index, style),
                        source_id=doc.source_id,
                        fields={"chunk_index": index, "style": style, "source_text": chunk},
                        messages=[
                            {"role": "system", "content": WRAP_SYSTEM_PROMPT},
                            {"role": "user", "content": prompt},
                        ],
                    )
                )
        return candidates

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        text = result.text.strip()
        if not text:
            return Dropped("empty_output")
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


def run_rephrase(ctx: JobContext) -> dict[str, Any]:
    method = RephraseMethod(
        ctx.config.section_as(RephraseConfig), ctx.renderer.count_tokens, ctx.model_name
    )
    return run_single_stage(ctx, method)


register(MethodSpec("rephrase", run=run_rephrase, section=RephraseConfig))
