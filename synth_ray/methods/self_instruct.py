"""Method `self_instruct` (Wang et al., ACL 2023): grow an instruction pool from seed tasks.

    synth-ray run configs/self_instruct.yaml

Three stage methods, run in rounds by methods/self_instruct_rounds.py:
- `InstructionGeneration`: one request per round prompt (8 in-context instructions as a
  numbered list); the completion's numbered list is parsed into new instructions.
- `ClassificationCheck`: does an accepted instruction define a classification task? (Yes/No)
- `InstanceGeneration`: an input and output for each accepted instruction, output-first for
  classification tasks, input-first otherwise; the final output rows.
Seeds: the public seed-task JSONL (`instruction`, `instances`, `is_classification`) or a text
file with one instruction per line.
`self_instruct.constrain` (a departure from the paper, for small models that do not follow
its format; on in configs/self_instruct.yaml for the embedded model): the classification
check answers Yes or No, and each instance completion is decoded (structured outputs) into
the format its parser reads, `instance_format`: "Example k" blocks of "Input:"/"Output:"
lines, or "Class label:" lines each followed by its input. Its first instance always fits
max_tokens, so a completion cut there keeps it (the paper's parser drops only the cut one).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, model_validator

from synth_ray.config import check_pool_declared
from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.errors import ConfigError, InputError
from synth_ray.io.inputs import Document
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.format_regex import (
    Pattern,
    alt,
    chars,
    fitting,
    literal,
    optional,
    seq,
    text,
)
from synth_ray.methods.instruction_filters import parse_numbered_list
from synth_ray.methods.self_instruct_prompts import CLASSIFY, INPUT_FIRST, OUTPUT_FIRST
from synth_ray.sections import ADDED, Section, check_templates


class SelfInstructConfig(Section):
    seed_path: str | None = Field(
        None,
        description="Seed tasks: the public seed-task JSONL, or a text file, one instruction a line.",
    )
    target: int = Field(100, ge=1, description="Stop once this many new instructions are accepted.")
    requests_per_round: int = Field(
        16, ge=1, description="Generation requests per round; the pool grows between rounds."
    )
    max_rounds: int = Field(
        50, ge=1, description="Give up growing the pool after this many rounds."
    )
    # The paper's 8 in-context instructions: 6 human seeds and 2 machine-generated ones; while the
    # pool has fewer machine instructions, seeds fill their places (round 0: 8 seeds).
    seeds_in_context: int = Field(6, ge=0)
    machine_in_context: int = Field(2, ge=0)
    rouge_threshold: float = Field(
        0.7,
        gt=0,
        le=1,
        description="Drop an instruction whose ROUGE-L with any pool instruction exceeds this.",
    )
    # the paper drops instructions of 3 words or fewer (bootstrap_instructions.py)
    min_words: int = Field(4, ge=1, description="Fewer words than this: dropped as `length`.")
    max_instances: int = Field(
        5,
        ge=1,
        le=10,
        description="Instances (rows) kept per instruction at most, all from one greedy "
        "completion (the paper's max_instances_to_generate).",
    )
    max_words: int = Field(150, ge=1)
    templates: dict[str, str] = Field(
        default_factory=dict,
        description="Override prompt templates: generate_header, classify, input_first, output_first ({instruction}).",
    )
    constrain: bool = Field(
        False,
        description="Decode the classification check into Yes/No and each instance completion "
        "into the format its parser reads (structured outputs), its first instance within "
        "max_tokens. A departure from the paper, for small models.",
        json_schema_extra=ADDED,
    )

    @model_validator(mode="after")
    def _templates(self) -> SelfInstructConfig:
        needs = {"instruction"}
        check_templates(
            self.templates,
            {
                "generate_header": set(),
                "classify": needs,
                "input_first": needs,
                "output_first": needs,
            },
        )
        return self

    instance_pool: str | None = Field(
        None,
        description="The pool (of the job's `pools`) whose model writes the instances (the "
        "responder), once the instructions are chosen and classified; the job's engine's "
        "replicas are given back first. None: the job's model, as Self-Instruct does.",
        json_schema_extra=ADDED,
    )

    def check_in_job(self, job: Any) -> None:
        if not self.seed_path:
            raise ValueError("self_instruct.seed_path: required for method self_instruct")
        check_pool_declared("self_instruct.instance_pool", self.instance_pool, job)
        if self.constrain:
            if job.sampling.ignore_eos:
                raise ValueError(
                    "self_instruct.constrain: sampling.ignore_eos would write past the format"
                )
            budget = min(job.sampling.max_tokens, INSTANCE_MAX_TOKENS)
            for classification in (False, True):
                try:
                    instance_format(classification, budget, self.max_instances)
                except ValueError as err:
                    raise ValueError(
                        f"self_instruct.constrain: sampling.max_tokens {job.sampling.max_tokens} "
                        f"is too small for an instance ({err})"
                    ) from None


# Stop strings, lengths and penalties of the paper's code (yizhongw/self-instruct):
# bootstrap_instructions.py, identify_clf_or_not.py and generate_instances.py with
# max_instances_to_generate=5. Their frequency penalties are 0, vLLM's default.
GENERATION_STOP = ("\n16", "16.", "16 .")
GENERATION_PRESENCE_PENALTY = 2.0
INSTANCE_PRESENCE_PENALTY = 1.5
CLASSIFY_STOP = ("\n", "Task")
MAX_INSTANCES = 5
INSTANCE_MAX_TOKENS = 350
CLASSIFY_CHOICES = ("Yes", "No")  # what a constrained classification check answers


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

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """The job's temperature, top_p and max_tokens (the paper's: 0.7, 0.5, 1024), with the
        paper's presence penalty of 2 (a token already generated is less likely again: new
        tasks, not variations of the list's), stopping where the paper's list of 8 + 7 ends.
        The paper's "\n\n" stop is left out: a chat model opens with a preamble and a blank
        line, and would stop before its list; the parser ends an item at a blank line instead."""
        return dataclasses.replace(
            job, stop=GENERATION_STOP, presence_penalty=GENERATION_PRESENCE_PENALTY
        )

    def expand(self, doc: Document) -> list[Candidate]:
        return [
            Candidate(
                row_id(doc.source_id, "generate"),
                doc.source_id,
                messages=[{"role": "user", "content": doc.text or ""}],
            )
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        # Cut off by max_tokens, an item still open is incomplete. (The paper drops the whole
        # response; the complete items are kept here.)
        instructions = parse_numbered_list(result.text, truncated=result.finish_reason == "length")
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

    def __init__(self, template: str = CLASSIFY, constrain: bool = False) -> None:
        self.template = template
        self.constrain = constrain

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

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """Greedy, 3 tokens, stop at a newline or "Task", as the paper's
        identify_clf_or_not.py asks: a Yes/No answer, not a sampled essay. Constrained, the
        answer is one of Yes and No (a small model otherwise writes "The task is", a No)."""
        return dataclasses.replace(
            job,
            temperature=0.0,
            top_p=1.0,
            max_tokens=3,
            n=1,
            stop=CLASSIFY_STOP,
            presence_penalty=0.0,
            constraint=Constraint("choice", choices=CLASSIFY_CHOICES) if self.constrain else None,
        )

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


# The paper's parsers (prepare_for_finetuning.py): instances are split on "Example N"; an
# input-first instance's input is everything before "Output:", whatever its field is called.
_EXAMPLE = re.compile(r"Example\s?\d*\.?")
_OUTPUT = re.compile(r"Output\s*\d*\s*:")
_INPUT_FIELD = re.compile(r"Input\s*\d*\s*:")
_LEADING_INPUT = re.compile(r"^Input\s*\d*\s*:")
_LABEL = "Class label:"


def _valid(model_input: str, output: str) -> bool:
    """The paper's filter_invalid_instances: a non-empty output that differs from the input,
    neither ending with a colon (an incomplete generation)."""
    return (
        bool(output)
        and output != model_input
        and not model_input.endswith(":")
        and not (output.endswith(":"))
    )


def _input_output(text: str) -> tuple[str, str]:
    parts = _OUTPUT.split(text, maxsplit=1)
    model_input, output = (parts[0], parts[1]) if len(parts) == 2 else ("", text)
    output = _INPUT_FIELD.split(output, maxsplit=1)[0].strip()  # a second pair follows
    return _LEADING_INPUT.sub("", model_input.strip()).strip(), output


def parse_instances(text: str, classification: bool, truncated: bool) -> list[tuple[str, str]]:
    """The (input, output) instances of a completion, in order, as the paper parses them: for
    classification, each "Class label:" line then its input; otherwise the text split on
    "Example N", each part's input before "Output:" (whatever its field name: "List: [3,1,2]"
    is kept) and output after. A `truncated` completion loses its last instance; invalid ones
    (empty output, output equal to input, a trailing colon) and repeats are dropped."""
    text = text.strip()
    found: list[tuple[str, str]] = []
    if classification:
        for part in text.split(_LABEL)[1:]:
            label, _, body = part.partition("\n")  # the label is on the "Class label:" line
            found.append((body.strip(), label.strip()))
    elif _EXAMPLE.search(text):
        found = [_input_output(p.strip()) for p in _EXAMPLE.split(text) if p.strip()]
    elif _OUTPUT.search(text):
        found = [_input_output(text)]
    if truncated:
        found = found[:-1]
    kept: list[tuple[str, str]] = []
    for instance in found:
        if _valid(*instance) and instance not in kept:
            kept.append(instance)
    return kept


def parse_instance(
    text: str, classification: bool, truncated: bool = False
) -> tuple[str, str] | None:
    """(input, output) of the first valid instance in a completion, or None."""
    instances = parse_instances(text, classification, truncated)
    return instances[0] if instances else None


# The formats a constrained instance completion is decoded into (`instance_format`). A field
# is one line of printable ASCII without ':' (so it holds none of the markers "Input:",
# "Output:", "Class label:" nor the stop "Task:") and without 'E' (so neither the "Example"
# the parser splits on nor the stop "Example 6": a ban of "Ex" alone costs xgrammar tens of
# milliseconds a token, see format_regex.text); a classification input may open with its own
# one-word field name ("Sentence: ..."), as the paper's template shows. An input line after a
# class label does not start with "C": a "C" there is the next "Class label:", which the
# model is then held to (the paper's presence penalty of 1.5 otherwise turns a repeated
# marker into "Clauss label ..." written as an input).
_FIELD_BANNED = ":E"
_LABEL_CHARS = 40
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _field(high: int, not_first: str = "") -> Pattern:
    return text(high, _FIELD_BANNED, not_first=not_first)


def _example(k: int, high: int) -> Pattern:
    """`Example k`, then an input line and an output line, or an output line alone (the
    paper's input-first format); an output without an input has the input's room too."""
    pair = seq(literal("Input: "), _field(high), literal("\nOutput: "), _field(high))
    alone = seq(literal("Output: "), _field(2 * high + len("Input: \n")))
    return seq(literal(f"Example {k}\n"), alt(pair, alone))


def _labelled(high: int) -> Pattern:
    """`Class label: X`, then the input of that class, if the task has one (output-first)."""
    name = seq(chars(_LETTERS - {"C", "E"}, 1, 1), chars(_LETTERS - {"E"}, 0, 15), literal(": "))
    model_input = seq(literal("\n"), alt(seq(name, _field(high)), _field(high, not_first="C")))
    return seq(literal("Class label: "), _field(min(high, _LABEL_CHARS)), optional(model_input))


def _instance(classification: bool, k: int, high: int) -> Pattern:
    """Instance `k` (from 1) of a completion, with its separator from the one before."""
    if classification:
        return seq(literal("\n") if k > 1 else literal(""), _labelled(high))
    return seq(literal("\n\n") if k > 1 else literal(""), _example(k, high))


# What follows a first instance, up to a character the parser reads as the next instance
_NEXT_MARKER = {True: "\nClass label:", False: "\n\nExample 2\nO"}


def instance_format(classification: bool, max_tokens: int, max_instances: int) -> Pattern:
    """The language a constrained instance completion is decoded into: up to `max_instances`
    instances in the format `parse_instances` reads for the task's kind. Each field is as long
    as the budget allows the first instance to survive any cut by `max_tokens` (a token is at
    least one character): with its end-of-sequence token, or with the next instance's marker
    and what the parser needs of it (the paper's parser drops only the instance a cut
    completion ends in). ValueError when not even one character per field fits."""
    if max_instances == 1:
        size, first = fitting(lambda n: _instance(classification, 1, n), max_tokens - 1)
    else:
        following = literal(_NEXT_MARKER[classification])
        size, _ = fitting(lambda n: seq(_instance(classification, 1, n), following), max_tokens)
        first = _instance(classification, 1, size)
    tail: Pattern | None = None
    for k in range(max_instances, 1, -1):
        later = _instance(classification, k, size)
        tail = optional(seq(later, tail) if tail is not None else later)
    return seq(first, tail) if tail is not None else first


class InstanceGeneration(Method):
    """Doc text = an accepted instruction; doc.extra has is_classification, max_rouge, round."""

    name = "self_instruct"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("instance", pa.int32()),
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
        self,
        model_name: str,
        input_first: str = INPUT_FIRST,
        output_first: str = OUTPUT_FIRST,
        max_instances: int = MAX_INSTANCES,
        constrain_within: int | None = None,
    ) -> None:
        """`constrain_within`: the job's max_tokens, to decode each completion into the
        format of its task's kind within the stage's budget (`instance_format`); None: free."""
        self.model_name = model_name
        self.input_first = input_first
        self.output_first = output_first
        self.max_instances = max_instances
        self.formats: dict[bool, Constraint] = {}
        if constrain_within is not None:
            budget = min(constrain_within, INSTANCE_MAX_TOKENS)
            self.formats = {
                kind: Constraint("regex", instance_format(kind, budget, max_instances).regex)
                for kind in (False, True)
            }

    def estimate_rows(self, doc: Document) -> int:
        return self.max_instances

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """Greedy with a presence penalty of 1.5 (later instances repeat the first less), at
        most 350 tokens (or the job's max_tokens if lower), stopping before example
        `max_instances + 1` or the next task, as the paper's generate_instances.py."""
        return dataclasses.replace(
            job,
            temperature=0.0,
            top_p=1.0,
            max_tokens=min(job.max_tokens, INSTANCE_MAX_TOKENS),
            n=1,
            stop=(f"Example {self.max_instances + 1}", "Task:"),
            presence_penalty=INSTANCE_PRESENCE_PENALTY,
        )

    def expand(self, doc: Document) -> list[Candidate]:
        classification = bool(doc.extra.get("is_classification"))
        template = self.output_first if classification else self.input_first
        return [
            Candidate(
                row_id(doc.source_id, "instance"),
                doc.source_id,
                width=self.max_instances,
                exact_width=False,
                fields={"instruction": doc.text, **doc.extra},
                messages=[
                    {"role": "user", "content": template.replace("{instruction}", doc.text or "")}
                ],
                constraint=self.formats.get(classification),
            )
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> list[Outcome]:
        """A row per valid instance, up to `max_instances` (the paper keeps them all); one
        `unparsable_instance` drop when none parses. Token counts go on the first row only,
        so summing a column counts each completion once."""
        classification = bool(candidate.fields.get("is_classification"))
        truncated = result.finish_reason == "length"
        instances = parse_instances(result.text, classification, truncated)
        if not instances:
            return [Dropped("unparsable_instance")]
        return [
            self._row(candidate, i, instance, result)
            for i, instance in enumerate(instances[: self.max_instances])
        ]

    def _row(
        self, candidate: Candidate, index: int, instance: tuple[str, str], result: EngineResult
    ) -> Kept:
        classification = bool(candidate.fields.get("is_classification"))
        model_input, output = instance
        tokens = self.token_fields(result)
        if index > 0:
            tokens.update(n_input_tokens=0, n_output_tokens=0)
        return Kept(
            {
                "id": candidate.sample_id(index),
                "instance": index,
                "source_id": candidate.source_id,
                "instruction": candidate.fields["instruction"],
                "input": model_input,
                "output": output,
                "is_classification": classification,
                "max_rouge": candidate.fields.get("max_rouge"),
                "round": candidate.fields.get("round"),
                "model": self.model_name,
                **tokens,
            }
        )
