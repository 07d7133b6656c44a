"""Method `magpie`: instructions from nothing but the chat template's pre-query prefix, then a
response to each (Xu et al. 2024, "Magpie: Alignment Data Synthesis from Scratch by Prompting
Aligned LLMs with Nothing"; magpie-align/magpie exp/gen_ins.py, exp/gen_res.py).

    synth-ray run configs/magpie.yaml

The prefix is the model's own chat template cut just before the user's message (rendered with
two different messages: both must give the same text before them, exactly once, and a
non-empty one; a template that cannot be cut so is refused before any work). It is sent as a
raw prompt, so the aligned model writes what a user would ask. Three steps, each committed or
replayed exactly:
- stage `instructions` (in stages/): `magpie.num_instructions` requests of that one prompt, at
  Magpie's instruction sampling (temperature 1, top_p 1; one line: it stops at a newline, as
  gen_ins.py's early stopping does). Dropped: `empty`, `too_short` (fewer than
  `magpie.min_words` words), `truncated` (cut by max_tokens).
- `duplicate`: an instruction equal to an earlier one in request order (case and spacing
  ignored) is dropped; with `filters.diversity` on, near-duplicates are dropped too, by the
  embedding filter. The driver decides on 16-byte hashes of the instructions, computed in Ray
  tasks beside the shards; each responses unit is an instructions unit, whose replica reads
  its committed instructions and skips the unit's duplicates: the driver reads no row.
- stage `responses` (the output): each instruction in the chat template, greedy as gen_res.py
  (`magpie.response_temperature: 0`), at the job's max_tokens. Dropped: `empty_response`.
`stats.json` counts every request of the first stage, so rows_in = num_instructions.
Row id = hash(instruction request id, "response").
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from synth_ray.engine.requests import EngineResult, SamplingSpec
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import STAGES_DIR
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import GeneratedDocuments, JobContext
from synth_ray.sections import Section
from synth_ray.stats import UnitStats

SENTINELS = ("QQQ-magpie-first-QQQ", "ZZZ-magpie-second-ZZZ")


class MagpieConfig(Section):
    num_instructions: int = Field(100, ge=1, description="Instruction requests to send.")
    single_line: bool = Field(
        True, description="Stop an instruction at its first newline (Magpie's early stopping)."
    )
    min_words: int = Field(3, ge=1, description="Fewer words than this: dropped as too_short.")
    instruction_temperature: float = Field(1.0, ge=0, description="Magpie: 1.0.")
    instruction_top_p: float = Field(1.0, gt=0, le=1, description="Magpie: 1.0.")
    instruction_max_tokens: int = Field(
        128, ge=8, description="Tokens an instruction may take (capped by sampling.max_tokens)."
    )
    response_temperature: float = Field(0.0, ge=0, description="Magpie's gen_res.py: 0.")

    def check_in_job(self, job: Any) -> None:
        if job.filters.diversity.enabled and job.filters.diversity.partitions > 1:
            raise ValueError(
                "filters.diversity.partitions: magpie has no input to train centroids on; "
                "use 1 partition"
            )


def pre_query_prefix(tokenizer: Any) -> tuple[str, tuple[str, ...]]:
    """The template's text before a user message, and the end-of-turn text after it (a stop
    string for the instruction). ConfigError, naming why, when the template cannot be cut."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ConfigError("engine.model: has no chat template; magpie needs an aligned chat model")
    cuts = []
    for sentinel in SENTINELS:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": sentinel}], tokenize=False, add_generation_prompt=False
        )
        if text.count(sentinel) != 1:
            raise ConfigError(
                "engine.model: its chat template does not show the user's message exactly once; "
                "magpie cannot cut it"
            )
        cuts.append(text.partition(sentinel)[::2])
    (prefix, suffix), (other_prefix, _) = cuts
    if prefix != other_prefix:
        raise ConfigError(
            "engine.model: its chat template's text before the user's message depends on the "
            "message; magpie cannot cut it"
        )
    if not prefix.strip():
        raise ConfigError(
            "engine.model: its chat template writes nothing before the user's message (no user "
            "role marker); magpie cannot cut it"
        )
    end_of_turn = suffix.strip().splitlines()[0].strip() if suffix.strip() else ""
    return prefix, (end_of_turn,) if end_of_turn else ()


def normalized(instruction: str) -> str:
    return re.sub(r"\s+", " ", instruction).strip().lower()


class MagpieInstructions(Method):
    """Stage 1: the pre-query prefix, sent raw; the completion is a user's instruction."""

    name = "magpie_instructions"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("instruction", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(self, config: MagpieConfig, stop: tuple[str, ...]) -> None:
        self.config = config
        self.stop = stop

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        c = self.config
        return dataclasses.replace(
            job,
            temperature=c.instruction_temperature,
            top_p=c.instruction_top_p,
            max_tokens=min(job.max_tokens, c.instruction_max_tokens),
            n=1,
            stop=(*self.stop, "\n") if c.single_line else self.stop,
        )

    def expand(self, doc: Document) -> list[Candidate]:
        rid = row_id(doc.source_id, "instruction")
        return [Candidate(rid, doc.source_id, raw_prompt=doc.text)]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        instruction = result.text.strip()
        if not instruction:
            return Dropped("empty")
        if result.finish_reason == "length":
            return Dropped("truncated")
        if len(instruction.split()) < self.config.min_words:
            return Dropped("too_short")
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                "instruction": instruction,
                **self.token_fields(result),
            }
        )


class MagpieResponses(Method):
    """Stage 2: each kept instruction as a user turn of the chat template, answered greedily."""

    name = "magpie"
    diversity_column = "instruction"  # near-duplicate instructions, when the filter is on
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("instruction", pa.string()),
            pa.field("response", pa.string()),
            pa.field("model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(self, config: MagpieConfig, model_name: str) -> None:
        self.config = config
        self.model_name = model_name

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        return dataclasses.replace(job, temperature=self.config.response_temperature, n=1)

    def expand(self, doc: Document) -> list[Candidate]:
        messages = [{"role": "user", "content": doc.text or ""}]
        fields = {"instruction": doc.text}
        return [Candidate(row_id(doc.source_id, "response"), doc.source_id, fields, messages)]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        response = result.text.strip()
        if not response:
            return Dropped("empty_response")
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                "instruction": candidate.fields["instruction"],
                "response": response,
                "model": self.model_name,
                **self.token_fields(result),
            }
        )


INSTRUCTION_COLUMNS = ("source_id", "instruction")


def instruction_keys(table: pa.Table) -> np.ndarray:
    """A 16-byte key per row of a unit's instructions (a hash of the instruction, case and
    spacing ignored), in row order: what the driver dedups on instead of the text (computed
    beside the data: runtime `summarize_committed`)."""
    keys = [
        hashlib.blake2b(normalized(text).encode(), digest_size=16).digest()
        for text in table.column("instruction").to_pylist()
    ]
    return np.array(keys, dtype="S16")


def duplicate_positions(keys: list[np.ndarray]) -> list[np.ndarray]:
    """Per unit, the row positions whose instruction equals one earlier in request order
    (units in order, rows in order within each): every occurrence but the first."""
    counts = [len(k) for k in keys]
    if not sum(counts):
        return [np.zeros(0, dtype=np.int64) for _ in keys]
    every = np.concatenate(keys)
    _, first = np.unique(every, return_index=True)
    repeated = np.ones(len(every), dtype=bool)
    repeated[first] = False
    bounds = np.cumsum([0, *counts])
    return [np.flatnonzero(repeated[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def response_documents(
    table: pa.Table, first_ordinal: int, duplicates: dict[int, frozenset[int]]
) -> list[Document]:
    """The responses stage's documents from one instructions unit's committed rows (the
    replica builds them: runtime `run_derived_stage`): every instruction but the unit's
    duplicates (row positions, keyed by the unit's first ordinal), numbered from it."""
    skip = duplicates.get(first_ordinal, frozenset())
    columns = [table.column(c).to_pylist() for c in INSTRUCTION_COLUMNS]
    docs: list[Document] = []
    for position, (source_id, instruction) in enumerate(zip(*columns, strict=True)):
        if position not in skip:
            docs.append(Document(first_ordinal + len(docs), source_id, instruction))
    return docs


def instruction_request(index: int, prefix: str) -> Document:
    """Request `index`: the pre-query prefix the model continues with an instruction."""
    return Document(index, f"magpie-{index:07d}", prefix)


def run_magpie(ctx: JobContext) -> dict[str, Any]:
    config = ctx.config.section_as(MagpieConfig)
    prefix, stop = pre_query_prefix(ctx.renderer.tokenizer)  # refuses before any work
    make = functools.partial(instruction_request, prefix=prefix)
    requests = GeneratedDocuments(config.num_instructions, make)  # each replica makes its own
    ask = MagpieInstructions(config, stop)
    units = ctx.runner.plan(requests, ask, f"{ctx.fingerprint}/instructions")
    ctx.prepare()
    work = ctx.store.child(STAGES_DIR)
    work.prepare(f"{ctx.fingerprint}/stages", {"stages_of": ctx.fingerprint}, overwrite=False)
    ctx.runner.execute(work, requests, ask, units, stage="instructions")
    # dedup on keys computed beside the data; the driver holds 16 bytes per instruction
    keys = ctx.runner.summarize_committed(
        work, units, "instructions", ("instruction",), instruction_keys
    )
    repeated = {
        unit.start: frozenset(positions.tolist())
        for unit, positions in zip(units, duplicate_positions(keys), strict=True)
        if len(positions)
    }
    duplicates = sum(len(positions) for positions in repeated.values())
    del keys
    answer = MagpieResponses(config, ctx.model_name)
    ctx.runner.run_derived_stage(
        "responses",
        ctx.store,
        work,
        units,
        "instructions",
        INSTRUCTION_COLUMNS,
        functools.partial(response_documents, duplicates=repeated),
        answer,
        ctx.fingerprint,
        # a unit's documents depend on every earlier unit (its repeats): a changed earlier
        # unit (--replan) must change this one's id too
        salts={
            k: ",".join(map(str, sorted(repeated.get(unit.start, ()))))
            for k, unit in enumerate(units)
        },
    )
    # every instruction request is a row of the job: those that never reached stage 2 here
    first = work.totals("instructions")
    before = UnitStats(rows_in=first.rows_in - first.rows_out + duplicates)
    before.dropped.update(first.dropped)
    before.errored.update(first.errored)
    if duplicates:
        before.dropped["duplicate"] = duplicates
    return ctx.store.write_stats(
        units_total=ctx.runner.summary.units_total,
        extra=before,
        sections={
            "magpie": {
                "pre_query_prefix": prefix,
                "instructions_requested": config.num_instructions,
                "instructions_kept": first.rows_out - duplicates,
                "instructions_stage": first.to_dict(),
            }
        },
    )


register(
    MethodSpec(
        "magpie",
        run=run_magpie,
        section=MagpieConfig,
        input_spec=None,
        papers=lambda config: ["xu2024magpie"],
    )
)
