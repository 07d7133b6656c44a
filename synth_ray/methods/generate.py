"""Method `generate`: plain batch inference, one input row = one chat prompt = one output row.

    synth-ray run configs/generate.yaml

The text column is sent as a user message through the model's chat template, after the
optional `generate.system_prompt`, or as it is with `generate.raw_prompt` (a base model's
completion prompt, or prompts already rendered elsewhere). `generate.max_tokens_column` names a
column holding each row's own output cap (a per-row length budget; `synth-ray bench` uses it for
its skewed lengths). Completions are kept as they are (no filter): this is the job the
benchmark compares with raw vLLM on identical prompts. Row id = hash(source_id).

Structured output: `generate.output_schema` (a JSON Schema) makes the engine decode under it
and adds one typed column per top-level property (methods/structured_output.py); a text that
still does not validate (cut by `max_tokens`) is a row error. `generate.constraint` decodes
under a regex, a choice list or a grammar and keeps the text as it is.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from synth_ray.config import JobConfig
from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.io.inputs import Document, InputSpec, absolute_path
from synth_ray.methods.base import (
    TOKEN_COLUMNS,
    Candidate,
    Errored,
    Kept,
    Method,
    Outcome,
    row_id,
)
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext, run_single_stage
from synth_ray.methods.structured_output import (
    SchemaError,
    StructuredReader,
    columns_of,
    json_constraint,
    load_schema,
)
from synth_ray.sections import ADDED, INLINED, Section

_BASE_FIELDS = [
    pa.field("id", pa.string()),
    pa.field("source_id", pa.string()),
    pa.field("prompt", pa.string()),
    pa.field("text", pa.string()),
    pa.field("model", pa.string()),
    *TOKEN_COLUMNS,
]
BASE_COLUMNS = frozenset(f.name for f in _BASE_FIELDS)


class ConstraintConfig(Section):
    """One of: a regex, a list of choices, a grammar (EBNF/GBNF) the completion must match."""

    regex: str | None = Field(None, description="A regular expression the whole text matches.")
    choice: list[str] | None = Field(None, description="The text is exactly one of these.")
    grammar: str | None = Field(None, description="A context-free grammar (EBNF or GBNF).")

    @model_validator(mode="after")
    def _exactly_one(self) -> ConstraintConfig:
        given = [k for k in ("regex", "choice", "grammar") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of regex, choice, grammar (got {given or 'none'})")
        if self.choice is not None and (not self.choice or not all(c for c in self.choice)):
            raise ValueError("choice: a non-empty list of non-empty strings")
        return self

    def as_constraint(self) -> Constraint:
        if self.choice is not None:
            return Constraint("choice", choices=tuple(self.choice))
        if self.regex is not None:
            return Constraint("regex", self.regex)
        return Constraint("grammar", self.grammar or "")


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

    output_schema: dict[str, Any] | None = Field(
        None,
        description="A JSON Schema (inline, or the path of a .json file) the engine decodes "
        "under; each top-level property becomes a typed column, and a text that still does "
        "not validate (cut by max_tokens) is a row error (methods/structured_output.py).",
        json_schema_extra={**ADDED, **INLINED},
    )
    constraint: ConstraintConfig | None = Field(
        None,
        description="{regex: ...}, {choice: [...]} or {grammar: ...}: the text is decoded to "
        "match it (structured outputs); stored in `text` as it is.",
        json_schema_extra=ADDED,
    )

    @field_validator("output_schema", mode="before")
    @classmethod
    def _load_schema(cls, value: Any) -> Any:
        """A path is read here, so the schema itself (not its path) is in the fingerprint and
        travels with the job to every node."""
        if value is None or isinstance(value, dict):
            return value
        if not isinstance(value, str):
            raise ValueError("a JSON Schema object, or the path of a .json file holding one")
        try:
            return load_schema(value)
        except SchemaError as err:
            raise ValueError(str(err)) from None

    @model_validator(mode="after")
    def _raw_prompt_has_no_system(self) -> GenerateConfig:
        if self.raw_prompt and self.system_prompt:
            raise ValueError("system_prompt: a raw prompt gets no chat template, so no system text")
        if self.output_schema is not None and self.constraint is not None:
            raise ValueError("constraint: give output_schema or constraint, not both")
        if self.output_schema is not None:
            try:
                columns_of(self.output_schema, BASE_COLUMNS)
            except SchemaError as err:
                raise ValueError(f"output_schema: {err}") from None
        return self


class GenerateMethod(Method):
    name = "generate"
    diversity_column = "text"
    schema = pa.schema(_BASE_FIELDS)

    def __init__(self, config: GenerateConfig, model_name: str) -> None:
        self.config = config
        self.model_name = model_name
        self.reader: StructuredReader | None = None
        if config.output_schema is not None:
            fields = columns_of(config.output_schema, BASE_COLUMNS)
            self.schema = pa.schema([*_BASE_FIELDS, *fields])
            self.reader = StructuredReader(config.output_schema, fields)

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """The job's sampling, decoded under the output schema or constraint if one is set."""
        sampling = super().stage_sampling(job)
        if self.config.output_schema is not None:
            return dataclasses.replace(
                sampling, constraint=json_constraint(self.config.output_schema)
            )
        if self.config.constraint is not None:
            return dataclasses.replace(sampling, constraint=self.config.constraint.as_constraint())
        return sampling

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
        fields: dict[str, Any] = {}
        if self.reader is not None:
            parsed = self.reader.read(result.text, result.finish_reason)
            if isinstance(parsed, str):
                return Errored("structured_output", parsed)
            fields = parsed
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                "prompt": candidate.fields["prompt"],
                "text": result.text,
                "model": self.model_name,
                **self.token_fields(result),
                **fields,
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
