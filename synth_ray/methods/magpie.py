"""Method `magpie`: instructions from nothing but the chat template's pre-query prefix, then a
response to each (Xu et al. 2024, "Magpie: Alignment Data Synthesis from Scratch by Prompting
Aligned LLMs with Nothing"; magpie-align/magpie exp/gen_ins.py, exp/gen_res.py).

    synth-ray run configs/magpie.yaml

The prefix is the model's own chat template cut just before the user's message (rendered with
two different messages: both must give the same text before them, exactly once, and a
non-empty one; a template that cannot be cut so is refused before any work), less the system
turn the template writes when given none: the bare user header, as Magpie's pre_query_template
(Llama 3.1: `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n`; Qwen2 and the
embedded SmolLM2: `<|im_start|>user\n`). `magpie.system_prompt` puts a system turn of one's own
before it (Magpie's --system_prompt). The prefix is sent as a raw prompt, so the aligned model
writes what a user would ask; a resume under another prefix is refused as changed input.
Three steps, each committed or replayed exactly:
- stage `instructions` (in stages/): `magpie.num_instructions` requests of that one prompt, at
  Magpie's instruction sampling (temperature 1, top_p 1; one line: it stops at a newline, as
  gen_ins.py's early stopping does). Dropped: `empty`, `too_short` (fewer than
  `magpie.min_words` words), `truncated` (cut by max_tokens).
- `duplicate`: an instruction equal to an earlier one in request order (case and spacing
  ignored) is dropped; with `filters.diversity` on, near-duplicates are dropped too, by the
  embedding filter. The driver decides on 16-byte hashes of the instructions, computed in Ray
  tasks beside the shards; each responses unit is an instructions unit, whose replica reads
  its committed instructions and skips the unit's duplicates: the driver reads no row.
- stage `responses` (the output): each instruction in the chat template (with the template's
  default system turn and never `magpie.system_prompt`, as gen_res.py renders it), greedy as
  gen_res.py (`magpie.response_temperature: 0`), at the job's max_tokens. Dropped:
  `empty_response`. A response cut by max_tokens is kept, as gen_res.py keeps it; its row's
  `finish_reason` is "length".
`stats.json` counts every request of the first stage, so rows_in = num_instructions.
Row id = hash(instruction request id, "response").
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from synth_ray.config import DEFAULT_POOL, check_pool_declared
from synth_ray.engine.requests import EngineResult, SamplingSpec
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import STAGES_DIR
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import GeneratedDocuments, JobContext, Together
from synth_ray.sections import ADDED, Section
from synth_ray.stats import UnitStats

SENTINELS = ("QQQ-magpie-first-QQQ", "ZZZ-magpie-second-ZZZ")
SYSTEM_SENTINEL = "SSS-magpie-system-SSS"


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
    system_prompt: str | None = Field(
        None,
        min_length=1,
        description="A system turn before the pre-query prefix (Magpie's --system_prompt); "
        "None: the bare user header, Magpie's default. Responses are answered without it, as "
        "gen_res.py answers them.",
        json_schema_extra=ADDED,
    )

    response_pool: str | None = Field(
        None,
        description="The pool (of the job's `pools`) whose model answers the instructions, as "
        "Magpie-Reasoning answers one model's instructions with another; the job's engine's "
        "replicas are given back first. None: the job's model, as Magpie does.",
        json_schema_extra=ADDED,
    )

    def check_in_job(self, job: Any) -> None:
        check_pool_declared("magpie.response_pool", self.response_pool, job)
        if job.filters.diversity.enabled and job.filters.diversity.partitions > 1:
            raise ValueError(
                "filters.diversity.partitions: magpie has no input to train centroids on; "
                "use 1 partition"
            )


def pre_query_prefix(
    tokenizer: Any, system_prompt: str | None = None
) -> tuple[str, tuple[str, ...]]:
    """The template's text before a user message, and the end-of-turn text after it (a stop
    string for the instruction). ConfigError, naming why, when the template cannot be cut.

    Without `system_prompt` it is the bare user header, as Magpie's pre_query_template: a
    system turn the template writes when given none (Llama 3.1's "Cutting Knowledge Date"
    block, Qwen2's "You are a helpful assistant.") is removed, and what the template writes
    before any turn (its BOS) kept: `without_default_system_turn`. With one, it is what the
    template writes before the user's message after that system message (Magpie's
    pre_query_template_with_system_prompt for Llama 3; Llama 3.1's template adds its date
    lines); a template that drops or refuses a system message is refused."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ConfigError("engine.model: has no chat template; magpie needs an aligned chat model")
    if system_prompt is None:
        prefix, after = _cut(tokenizer, [])
        prefix = without_default_system_turn(tokenizer, prefix)
    else:
        refused = ConfigError(
            "magpie.system_prompt: the chat template of engine.model has no system turn "
            "before the user's (it drops or refuses a system message)"
        )
        try:
            prefix, after = _cut(tokenizer, [{"role": "system", "content": system_prompt}])
        except ConfigError:
            raise
        except Exception:  # jinja's TemplateError ("System role not supported") and friends
            raise refused from None
        if system_prompt not in prefix:
            raise refused
    end_of_turn = after.strip().splitlines()[0].strip() if after.strip() else ""
    return prefix, (end_of_turn,) if end_of_turn else ()


def _cut(tokenizer: Any, before: list[dict[str, str]]) -> tuple[str, str]:
    """The template's text before and after a user message that follows `before`: both
    sentinels must show once, with the same non-empty text before them."""
    cuts = []
    for sentinel in SENTINELS:
        text = tokenizer.apply_chat_template(
            [*before, {"role": "user", "content": sentinel}],
            tokenize=False,
            add_generation_prompt=False,
        )
        if text.count(sentinel) != 1:
            raise ConfigError(
                "engine.model: its chat template does not show the user's message exactly once; "
                "magpie cannot cut it"
            )
        cuts.append(text.partition(sentinel)[::2])
    (prefix, after), (other_prefix, _) = cuts
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
    return prefix, after


def without_default_system_turn(tokenizer: Any, prefix: str) -> str:
    """`prefix` (the template's text before a lone user message) less the system turn the
    template writes when given none: what is written before any turn, then the user header.

    The default turn is the text an explicit system message takes the place of: with one, the
    template writes head + message + tail, and `prefix` is head + (its default text) + tail.
    The tail is the system turn's end (as the user's or the assistant's turn ends, with the
    whitespace after it) and the user header; the head is what comes before any turn, then
    the system header, which opens as the user's and the assistant's headers do. A template
    without a system role, or without a system turn unless given one, keeps `prefix`, as does
    one whose system message is not a turn of its own and that writes no default text there
    (DeepSeek's); one that writes default text that cannot be cut so is refused (ConfigError)
    rather than sent with it."""
    system = {"role": "system", "content": SYSTEM_SENTINEL}
    user = {"role": "user", "content": SENTINELS[0]}
    text = _rendered(tokenizer, [system, user])
    if text is None or text.count(SYSTEM_SENTINEL) != 1 or text.count(SENTINELS[0]) != 1:
        return prefix  # no system role: the template refuses, drops or repeats the message
    head, _, rest = text.partition(SYSTEM_SENTINEL)
    tail = rest.partition(SENTINELS[0])[0]
    framed = len(prefix) >= len(head) + len(tail)
    if not (framed and prefix.startswith(head) and prefix.endswith(tail)):
        return prefix  # no system turn unless given one
    prompted = _text_after(tokenizer, [user], SENTINELS[0], generation=True)
    answer = {"role": "assistant", "content": SENTINELS[1]}
    for end in (
        _text_after(tokenizer, [user], SENTINELS[0]),
        _text_after(tokenizer, [user, answer], SENTINELS[1]),
    ):
        if not end or not tail.startswith(end):
            continue
        end = tail[: len(tail) - len(tail[len(end) :].lstrip())]
        if not prompted.startswith(end):
            continue
        user_header, assistant_header = tail[len(end) :], prompted[len(end) :]
        opening = os.path.commonprefix([user_header, assistant_header])
        if user_header and opening and opening in head:
            return head[: head.index(opening)] + user_header
    if not prefix[len(head) : len(prefix) - len(tail)].strip():
        return prefix
    raise ConfigError(
        "engine.model: its chat template writes a system turn by default that magpie cannot "
        "cut away from the user header; set magpie.system_prompt to choose the system turn"
    )


def _rendered(
    tokenizer: Any, messages: list[dict[str, str]], generation: bool = False
) -> str | None:
    """The template's text for `messages`; None when the template refuses them."""
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation
        )
    except Exception:  # jinja's TemplateError ("roles must alternate") and friends
        return None


def _text_after(
    tokenizer: Any, messages: list[dict[str, str]], last: str, generation: bool = False
) -> str:
    """What the template writes after the last message's text `last` ("" if refused)."""
    text = _rendered(tokenizer, messages, generation)
    return text.partition(last)[2] if text is not None and text.count(last) == 1 else ""


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
    # refuses before any work
    prefix, stop = pre_query_prefix(ctx.renderer.tokenizer, config.system_prompt)
    make = functools.partial(instruction_request, prefix=prefix)
    requests = GeneratedDocuments(config.num_instructions, make)  # each replica makes its own
    ask = MagpieInstructions(config, stop)
    # the prefix is every request's text: committed instructions asked with another one (an
    # older synth-ray, a changed template, a date in a system turn) are changed input
    digest = hashlib.blake2b(prefix.encode(), digest_size=8).hexdigest()
    units = ctx.runner.plan(requests, ask, f"{ctx.fingerprint}/instructions/{digest}")
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
    # every instruction first (the duplicate check is over all of them), then the responses,
    # on their own pool where one is named (the job's engine given back first)
    pool = config.response_pool or DEFAULT_POOL
    answer = MagpieResponses(config, ctx.runner.model_name(pool))
    respond = functools.partial(
        ctx.runner.run_derived_stage,
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
    ctx.runner.run_together([Together(respond, pool)])
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
