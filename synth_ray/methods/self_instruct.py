"""Method `self_instruct` (Wang et al., ACL 2023): grow an instruction pool from seed tasks.

    synth-ray run configs/self_instruct.yaml

Three stage methods; the runtime (runtime/self_instruct.py) runs them in rounds:
- `InstructionGeneration`: one request per round prompt (8 in-context instructions as a
  numbered list); the completion's numbered list is parsed into new instructions.
- `ClassificationCheck`: does an accepted instruction define a classification task? (Yes/No)
- `InstanceGeneration`: an input and output for each accepted instruction, output-first for
  classification tasks, input-first otherwise; the final output rows.
Seeds: the public seed-task JSONL (`instruction`, `instances`, `is_classification`) or a text
file with one instruction per line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa

from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError, InputError
from synth_ray.io.inputs import Document
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.instruction_filters import parse_numbered_list
from synth_ray.methods.self_instruct_prompts import CLASSIFY, INPUT_FIRST, OUTPUT_FIRST


def load_seed_instructions(path: str) -> list[str]:
    """Seed instructions from a seed-task JSONL or a plain text file; errors name the line."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config key self_instruct.seed_path: no such file {path}")
    lines = [ln for ln in file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"self_instruct.seed_path {path}: holds no instructions")
    if not lines[0].lstrip().startswith("{"):
        return [ln.strip() for ln in lines]
    seeds = []
    for number, line in enumerate(lines, start=1):
        try:
            instruction = json.loads(line)["instruction"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(
                f"self_instruct.seed_path {path}: line {number} is not a seed task with an 'instruction'"
            ) from None
        seeds.append(str(instruction).strip())
    return seeds


class InstructionGeneration(Method):
    """Doc text = a rendered generation prompt; keeps the raw completion and its parsed list."""

    name = "self_instruct_generate"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("text", pa.string()),
            pa.field("instructions", pa.list_(pa.string())),
            *TOKEN_COLUMNS,
        ]
    )

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def expand(self, doc: Document) -> list[Candidate]:
        return [
            Candidate(
                row_id(doc.source_id, "generate"),
                doc.source_id,
                messages=[{"role": "user", "content": doc.text or ""}],
            )
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        instructions = parse_numbered_list(result.text)
        if not instructions:
            return Dropped("no_instructions_parsed")
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                "text": result.text,
                "instructions": instructions,
                **self.token_fields(result),
            }
        )


class ClassificationCheck(Method):
    name = "self_instruct_classify"

    def __init__(self, template: str = CLASSIFY) -> None:
        self.template = template

    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("is_classification", pa.bool_()),
            pa.field("text", pa.string()),
        ]
    )

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def expand(self, doc: Document) -> list[Candidate]:
        prompt = self.template.replace("{instruction}", doc.text or "")
        return [
            Candidate(
                row_id(doc.source_id, "classify"),
                doc.source_id,
                messages=[{"role": "user", "content": prompt}],
            )
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                # the paper's parser: anything but a leading "yes" counts as not classification
                "is_classification": result.text.strip().lower().startswith("yes"),
                "text": result.text,
            }
        )


_INPUT = re.compile(
    r"^\s*(?:Input|Sentence|Paragraph|Text)\s*:[ \t]*", re.IGNORECASE | re.MULTILINE
)
_OUTPUT = re.compile(r"^\s*Output\s*:[ \t]*", re.IGNORECASE | re.MULTILINE)
_LABEL = re.compile(r"^\s*Class label\s*:[ \t]*", re.IGNORECASE | re.MULTILINE)
_NEXT = re.compile(r"^\s*(?:Example\s+[2-9]\d*|Task\s*:)", re.IGNORECASE | re.MULTILINE)


def parse_instance(text: str, classification: bool) -> tuple[str, str] | None:
    """(input, output) of the first instance in a completion, or None if it has none."""
    text = _NEXT.split(text.strip(), maxsplit=1)[0]
    if classification:
        parts = _LABEL.split(text)
        if len(parts) < 2:
            return None
        label, _, body = parts[1].partition("\n")
        body = _INPUT.sub("", body, count=1).strip()
        return (body, label.strip()) if label.strip() else None
    parts = _OUTPUT.split(text, maxsplit=1)
    if len(parts) < 2:
        return None
    before, output = parts
    output = output.strip()
    inputs = _INPUT.split(before, maxsplit=1)
    model_input = inputs[1].strip() if len(inputs) == 2 else ""
    if not output or output == model_input:
        return None
    return model_input, output


class InstanceGeneration(Method):
    """Doc text = an accepted instruction; doc.extra has is_classification, max_rouge, round."""

    name = "self_instruct"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("instruction", pa.string()),
            pa.field("input", pa.string()),
            pa.field("output", pa.string()),
            pa.field("is_classification", pa.bool_()),
            pa.field("max_rouge", pa.float64()),
            pa.field("round", pa.int32()),
            pa.field("model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(
        self, model_name: str, input_first: str = INPUT_FIRST, output_first: str = OUTPUT_FIRST
    ) -> None:
        self.model_name = model_name
        self.input_first = input_first
        self.output_first = output_first

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def expand(self, doc: Document) -> list[Candidate]:
        template = self.output_first if doc.extra.get("is_classification") else self.input_first
        return [
            Candidate(
                row_id(doc.source_id, "instance"),
                doc.source_id,
                fields={"instruction": doc.text, **doc.extra},
                messages=[
                    {"role": "user", "content": template.replace("{instruction}", doc.text or "")}
                ],
            )
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        classification = bool(candidate.fields.get("is_classification"))
        instance = parse_instance(result.text, classification)
        if instance is None:
            return Dropped("unparsable_instance")
        model_input, output = instance
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                "instruction": candidate.fields["instruction"],
                "input": model_input,
                "output": output,
                "is_classification": classification,
                "max_rouge": candidate.fields.get("max_rouge"),
                "round": candidate.fields.get("round"),
                "model": self.model_name,
                **self.token_fields(result),
            }
        )
