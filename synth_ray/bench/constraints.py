"""The constraints a benchmark can decode under, to price structured outputs against free text.

    synth-ray bench configs/bench.yaml --constraints none,json,regex --lengths natural

Each is given to every system the way its users would give it: raw vLLM and Ray Data LLM as
vLLM's `StructuredOutputsParams` fields (`json`, `regex`, `choice`), synth-ray as its
`generate` section (`output_schema`, or `constraint`). After the run each system's texts are
checked against the constraint, so a system that ignored it shows in the table's notes
instead of passing for a fast constrained one.

A constrained workload must run with `--lengths natural`: with `ignore_eos` (fixed and skewed
lengths) vLLM stops masking once the grammar reaches its end and the rest of the budget is
free text, which would price nothing.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

# an answer to any of the built-in questions, in a shape a labelling or QA job would ask for;
# bounded so that it ends within about 200 tokens (run with max_tokens of 256 or more, or
# texts cut by max_tokens count as not conforming)
JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 300},
        "keywords": {
            "type": "array",
            "items": {"type": "string", "maxLength": 24},
            "maxItems": 4,
        },
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["answer", "keywords", "confidence"],
    "additionalProperties": False,
}
REGEX = r"Answer: [A-Za-z0-9 ,.;:'()-]{1,300}\nConfidence: (100|[0-9]{1,2})%"
CHOICES = ("yes", "no", "it depends")
KINDS = ("none", "json", "regex", "choice")


def vllm_fields(kind: str) -> dict[str, Any] | None:
    """`StructuredOutputsParams(**fields)` for `kind`; None for free decoding."""
    if kind == "none":
        return None
    if kind == "json":
        return {"json": json.dumps(JSON_SCHEMA)}
    if kind == "regex":
        return {"regex": REGEX}
    if kind == "choice":
        return {"choice": list(CHOICES)}
    raise ValueError(f"constraint {kind!r}: expected one of {', '.join(KINDS)}")


def generate_section(kind: str) -> dict[str, Any]:
    """What a synth-ray `generate` section adds to decode under `kind`."""
    if kind == "none":
        return {}
    if kind == "json":
        return {"output_schema": JSON_SCHEMA}
    if kind == "regex":
        return {"constraint": {"regex": REGEX}}
    if kind == "choice":
        return {"constraint": {"choice": list(CHOICES)}}
    raise ValueError(f"constraint {kind!r}: expected one of {', '.join(KINDS)}")


def conforms(fields: dict[str, Any] | None, text: str) -> bool:
    """Whether `text` is in the language of the constraint given by `fields` (vllm_fields)."""
    if fields is None:
        return True
    if "json" in fields:
        try:
            jsonschema.validate(json.loads(text), json.loads(fields["json"]))
        except (ValueError, jsonschema.ValidationError):
            return False
        return True
    if "regex" in fields:
        return re.fullmatch(fields["regex"], text) is not None
    return text in fields["choice"]
