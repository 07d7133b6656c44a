"""Method `generate`: plain batch inference, one input row = one chat prompt = one output row.

    synth-ray run configs/generate.yaml

The text column is sent as a user message through the model's chat template, after the
optional `generate.system_prompt`. Completions are kept as they are (no filter): this is the
job the benchmark compares with raw vLLM on identical prompts. Row id = hash(source_id).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import Field

from synth_ray.engine.requests import EngineResult
from synth_ray.io.inputs import Document
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Kept, Method, Outcome, row_id
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext, run_single_stage
from synth_ray.sections import Section


class GenerateConfig(Section):
    system_prompt: str | None = Field(
        None, description="Sent before every prompt as a system message."
    )


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
        return [
            Candidate(
                rid, doc.source_id, fields={"prompt": doc.text}, messages=self.messages(doc.text)
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


register(MethodSpec("generate", run=run_generate, section=GenerateConfig))
