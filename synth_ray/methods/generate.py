"""Method `generate`: plain batch inference, one input row = one chat prompt = one output row.

    synth-ray run configs/generate.yaml

The text column is sent as a user message through the model's chat template, after the
optional `generate.system_prompt`, or as it is with `generate.raw_prompt` (a base model's
completion prompt, or prompts already rendered elsewhere). `generate.max_tokens_column` names a
column holding each row's own output cap (a per-row length budget; `synth-ray bench` uses it for
its skewed lengths). Completions are kept as they are (no filter): this is the job the
benchmark compares with raw vLLM on identical prompts. Row id = hash(source_id).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field, model_validator

from synth_ray.config import JobConfig
from synth_ray.engine.requests import EngineResult
from synth_ray.io.inputs import Document, InputSpec, absolute_path
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Kept, Method, Outcome, row_id
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext, run_single_stage
from synth_ray.sections import ADDED, Section


class GenerateConfig(Section):
    system_prompt: str | None = Field(
        None, description="Sent before every prompt as a system message."
    )
    raw_prompt: bool = Field(
        False,
        description="Send the text column as it is, no chat template (and no system prompt).",
        json_schema_extra=ADDED,
    )
    max_tokens_column: str | None = Field(
        None,
        description="Input column with each row's own output cap (a positive integer); "
        "sampling.max_tokens when the column is empty.",
        json_schema_extra=ADDED,
    )

    @model_validator(mode="after")
    def _raw_prompt_has_no_system(self) -> GenerateConfig:
        if self.raw_prompt and self.system_prompt:
            raise ValueError("system_prompt: a raw prompt gets no chat template, so no system text")
        return self


class GenerateMethod(Method):
    name = "generate"
    diversity_column = "text"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("prompt", pa.string()),
            pa.field("text", pa.string()),
            pa.field("model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(self, config: GenerateConfig, model_name: str) -> None:
        self.config = config
        self.model_name = model_name

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def messages(self, prompt: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.config.system_prompt}]
        return (system if self.config.system_prompt else []) + [{"role": "user", "content": prompt}]

    def expand(self, doc: Document) -> list[Candidate]:
        rid = row_id(doc.source_id, "generate")
        if doc.error is not None:
            return [Candidate(rid, doc.source_id, error=doc.error)]
        if not doc.text or not doc.text.strip():
            return [Candidate(rid, doc.source_id, error="empty prompt")]
        column = self.config.max_tokens_column
        budget = doc.extra.get(column) if column else None
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
        ):
            error = f"{column} is {budget!r}; expected a positive integer"
            return [Candidate(rid, doc.source_id, error=error)]
        return [
            Candidate(
                rid,
                doc.source_id,
                fields={"prompt": doc.text},
                messages=None if self.config.raw_prompt else self.messages(doc.text),
                raw_prompt=doc.text if self.config.raw_prompt else None,
                max_tokens=budget,
            )
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                "prompt": candidate.fields["prompt"],
                "text": result.text,
                "model": self.model_name,
                **self.token_fields(result),
            }
        )


def run_generate(ctx: JobContext) -> dict[str, Any]:
    return run_single_stage(
        ctx, GenerateMethod(ctx.config.section_as(GenerateConfig), ctx.model_name)
    )


def generate_input(config: JobConfig) -> InputSpec:
    """The text column, plus the per-row output cap's column when there is one."""
    i, section = config.input, config.section_as(GenerateConfig)
    assert i is not None
    extra = (section.max_tokens_column,) if section.max_tokens_column else ()
    return InputSpec(absolute_path(i.path), i.text_column, i.id_column, i.limit, extra)


register(
    MethodSpec("generate", run=run_generate, section=GenerateConfig, input_spec=generate_input)
)
