"""Method `rephrase`: pretraining rephrasing of web documents, in WRAP's styles (Maini et al.
2024, "Rephrasing the Web") and the formats of later corpora (FinePhrase, Nemotron-CC).

    synth-ray run configs/quickstart.yaml        # WRAP, 300-token chunks
    synth-ray run configs/rephrase_formats.yaml  # FinePhrase and Nemotron-CC, whole documents

Each document is split into chunks of at most `rephrase.max_chunk_tokens` tokens (WRAP used
~300), or kept whole (`rephrase.whole_document`), and each chunk is rephrased once per style.
The built-in styles are their papers' prompts (methods/rephrase_styles.py); a `custom_styles`
entry is a template with `{text}`, sent after WRAP's system prompt, and may replace a built-in.
Dropped: `empty_output`; for Nemotron-CC's styles also `truncated` (cut by max_tokens),
`missing_opening` (`wikipedia`, `distill`: the answer does not open with the line its prompt
asks for) and `unparsed` (`diverse_qa`: a line before the first question), as NeMo Curator's
post-processing drops them.
Row id = hash(source_id, chunk_index, style): the same config and input give the same ids.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
from pydantic import Field, model_validator

from synth_ray.config import JobConfig
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
from synth_ray.methods.rephrase_styles import (
    FINEPHRASE,
    NEMOTRON,
    STYLES,
    WRAP,
    WRAP_SYSTEM,
    Style,
)
from synth_ray.methods.stages import JobContext, run_single_stage
from synth_ray.sections import ADDED, Section

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
    whole_document: bool = Field(
        False,
        description="Rephrase each document whole, not in chunks (as FinePhrase does); one too "
        "long for engine.max_model_len becomes an error row.",
        json_schema_extra=ADDED,
    )

    @model_validator(mode="after")
    def _styles_known(self) -> RephraseConfig:
        if not self.styles:
            raise ValueError("styles: expected at least one style")
        for name, template in self.custom_styles.items():
            if "{text}" not in template:
                raise ValueError(f"custom_styles.{name}: template must contain {{text}}")
        known = set(STYLES) | set(self.custom_styles)
        unknown = [s for s in self.styles if s not in known]
        if unknown:
            raise ValueError(
                f"styles: unknown style {unknown[0]!r} (expected one of {sorted(known)})"
            )
        return self


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
        custom = {name: Style(t, WRAP_SYSTEM, "custom") for name, t in config.custom_styles.items()}
        self.styles: dict[str, Style] = {**STYLES, **custom}

    def estimate_rows(self, doc: Document) -> int:
        if not doc.text or doc.error:
            return 1
        if self.config.whole_document:
            return len(self.config.styles)
        tokens = len(doc.text) / _CHARS_PER_TOKEN
        return len(self.config.styles) * max(1, math.ceil(tokens / self.config.max_chunk_tokens))

    def expand(self, doc: Document) -> list[Candidate]:
        if doc.error is not None:
            return [Candidate(row_id(doc.source_id, "input"), doc.source_id, error=doc.error)]
        if not doc.text or not doc.text.strip():
            return [
                Candidate(row_id(doc.source_id, "input"), doc.source_id, error="empty document")
            ]
        if self.config.whole_document:
            chunks = [doc.text.strip()]
        else:
            chunks = split_into_chunks(doc.text, self.config.max_chunk_tokens, self.count_tokens)
        candidates = []
        for index, chunk in enumerate(chunks):
            for name in self.config.styles:
                style = self.styles[name]
                messages = [{"role": "user", "content": style.template.replace("{text}", chunk)}]
                if style.system:
                    messages.insert(0, {"role": "system", "content": style.system})
                candidates.append(
                    Candidate(
                        row_id=row_id(doc.source_id, index, name),
                        source_id=doc.source_id,
                        fields={"chunk_index": index, "style": name, "source_text": chunk},
                        messages=messages,
                    )
                )
        return candidates

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        style = self.styles[candidate.fields["style"]]
        if style.drop_truncated and result.finish_reason == "length":
            return Dropped("truncated")
        text = result.text.strip()
        if style.postprocess is not None:
            processed = style.postprocess(text)
            if isinstance(processed, Dropped):
                return processed
            text = processed.strip()
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


def rephrase_papers(config: JobConfig) -> list[str]:
    """The papers of the built-in styles this job uses (custom styles cite none)."""
    keys = {WRAP: "maini2024wrap", FINEPHRASE: "finephrase2025", NEMOTRON: "su2024nemotroncc"}
    used = config.section_as(RephraseConfig).styles
    return list(dict.fromkeys(keys[STYLES[s].source] for s in used if s in STYLES))


register(MethodSpec("rephrase", run=run_rephrase, section=RephraseConfig, papers=rephrase_papers))
