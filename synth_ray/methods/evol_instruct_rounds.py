"""Evol-Instruct's rounds: evolve, eliminate, respond; survivors evolve again next round.

Every stage of every round has one unit per unit of the input plan (a "lineage": the input
rows of that unit and everything evolved from them), and each unit's replica builds its own
documents from committed shards, so the driver reads no row:
- `evolve-rN` (stages/): each valid input row's latest answered descendant (the respond rows
  of rounds before N whose source_id is that row), else the row itself: the paper puts an
  instruction whose evolution failed back into the pool, so the pool keeps one instruction
  per input row and does not shrink round by round. Each is rewritten with its operation
  (drawn from sampling.seed, N and the instruction's id); a unit's requests are grouped by
  operation for prefix-cache hits. An input row that cannot be evolved (an input error, no
  text) is counted once, in round 0.
- `judge-rN` (stages/, with `judge_information_gain`): evolutions that copy prompt
  scaffolding are dropped without a request; the model judges whether each other one equals
  its parent (dropped as `no_information_gain` if so).
- `rN` (the output): the remaining evolutions are answered; responses showing the model could
  not answer are dropped. Without the judge, the scaffolding rule is applied here. With
  `filters.diversity` on, this stage is filtered on the evolved instruction, so near-
  duplicates are dropped by the job's embedding filter (after their response is generated:
  the decision is the runtime's, made where the rows are).
Kill anywhere: every stage's units derive from committed shards, so a rerun plans the same
units and skips committed ones. Elimination counts go to stats.json under each rule's name;
the accounting covers every evolution attempted.
"""

from __future__ import annotations

import functools
from typing import Any

import pyarrow as pa

from synth_ray.io.inputs import Document
from synth_ray.io.output_store import STAGES_DIR
from synth_ray.methods.evol_instruct import (
    EvolConfig,
    EvolveStep,
    JudgeStep,
    RespondStep,
    choose_operation,
    copies_scaffolding,
)
from synth_ray.methods.evol_instruct_prompts import EQUALITY_JUDGE
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext, Together
from synth_ray.stats import UnitStats

ANSWERED_COLUMNS = ("id", "source_id", "instruction", "round")  # respond rows
EVOLVED_COLUMNS = ("id", "source_id", "parent_instruction", "operation", "evolved", "root")
JUDGED_COLUMNS = ("source_id", "parent_id", "operation", "evolved", "root")  # judge rows


def pool_documents(
    rows: list[Document], answered: pa.Table, seed: int, rnd: int, operations: list[str]
) -> list[Document]:
    """Round `rnd`'s evolve documents for one lineage unit (its input `rows`, and the respond
    rows of earlier rounds `answered`): per input row, its latest answered descendant, else
    the row itself; ordered by operation, then id."""
    latest: dict[str, tuple[int, str, str]] = {}  # root -> (round, id, instruction)
    columns = [answered.column(c).to_pylist() for c in ANSWERED_COLUMNS]
    for item_id, root, instruction, round_ in zip(*columns, strict=True):
        if root not in latest or latest[root][0] < round_:
            latest[root] = (round_, item_id, instruction)
    items = []
    for row in rows:
        if row.source_id in latest:
            _, item_id, text = latest[row.source_id]
            items.append((item_id, text, row.source_id, None))
        elif rnd == 0:
            items.append((row.source_id, row.text, row.source_id, row.error))
        elif row.error is None and (row.text or "").strip():
            items.append((row.source_id, row.text, row.source_id, None))
    ops = {item[0]: choose_operation(seed, rnd, item[0], operations) for item in items}
    items.sort(key=lambda item: (ops[item[0]], item[0]))
    first = rows[0].ordinal if rows else 0
    return [
        Document(first + i, item_id, text, error, extra={"operation": ops[item_id], "root": root})
        for i, (item_id, text, root, error) in enumerate(items)
    ]


def judge_documents(table: pa.Table, first_ordinal: int) -> list[Document]:
    """A lineage unit's evolutions to judge; one that copies prompt scaffolding is marked
    dropped (no request)."""
    docs = []
    columns = [table.column(c).to_pylist() for c in EVOLVED_COLUMNS]
    for i, (evolved_id, parent_id, parent, operation, evolved, root) in enumerate(
        zip(*columns, strict=True)
    ):
        extra: dict[str, Any] = {
            "parent": parent,
            "parent_id": parent_id,
            "operation": operation,
            "root": root,
        }
        if copies_scaffolding(evolved):
            extra["dropped"] = "copies_prompt_scaffolding"
        docs.append(Document(first_ordinal + i, evolved_id, evolved, extra=extra))
    return docs


def respond_documents(
    table: pa.Table, first_ordinal: int, rnd: int, judged: bool
) -> list[Document]:
    """A lineage unit's evolutions to answer: the judge's kept rows (`judged`), else the
    evolve stage's rows, the scaffolding copies marked dropped."""
    docs = []
    if judged:
        columns = [table.column(c).to_pylist() for c in JUDGED_COLUMNS]
        items = list(zip(*columns, strict=True))
    else:
        columns = [table.column(c).to_pylist() for c in EVOLVED_COLUMNS]
        items = [
            (evolved_id, parent_id, operation, evolved, root)
            for evolved_id, parent_id, _, operation, evolved, root in zip(*columns, strict=True)
        ]
    for i, (evolved_id, parent_id, operation, evolved, root) in enumerate(items):
        extra: dict[str, Any] = {
            "parent_id": parent_id,
            "operation": operation,
            "round": rnd,
            "root": root,
        }
        if not judged and copies_scaffolding(evolved):
            extra["dropped"] = "copies_prompt_scaffolding"
        docs.append(Document(first_ordinal + i, evolved_id, evolved, extra=extra))
    return docs


def run_rounds(ctx: JobContext) -> dict[str, Any]:
    """Every stage of every round at once on the job's replicas (`run_together`): a
    lineage's next stage is asked as soon as the unit it reads commits, so the rounds
    overlap instead of waiting for the slowest unit of each."""
    assert ctx.docs is not None
    config, runner, store, fingerprint = ctx.config, ctx.runner, ctx.store, ctx.fingerprint
    evol = config.section_as(EvolConfig)
    # the lineage units; bad ids fail here, before anything is written
    lineages = runner.plan(ctx.docs, EvolveStep(0), f"{fingerprint}/evolve-r0", ctx.id_column)
    ctx.prepare()
    work = store.child(STAGES_DIR)
    work.prepare(f"{fingerprint}/stages", {"stages_of": fingerprint}, overwrite=False)
    parts: list[Together] = []
    for rnd in range(evol.rounds):
        stage = f"evolve-r{rnd}"
        evolve = functools.partial(
            runner.run_joined_stage,
            stage,
            work,
            ctx.docs,
            lineages,
            [(store, f"r{earlier}") for earlier in range(rnd)],
            ANSWERED_COLUMNS,
            functools.partial(
                pool_documents, seed=config.sampling.seed, rnd=rnd, operations=evol.operations
            ),
            1,
            EvolveStep(rnd, evol.templates),
            fingerprint,
        )
        parts.append(Together(evolve, publishes=((work, stage),)))
        source = stage
        if evol.judge_information_gain:
            source = f"judge-r{rnd}"
            judge = JudgeStep(evol.templates.get("judge", EQUALITY_JUDGE))
            judging = functools.partial(
                runner.run_derived_stage,
                source, work, work, lineages, stage, EVOLVED_COLUMNS, judge_documents, judge,
                fingerprint,
            )  # fmt: skip
            parts.append(Together(judging, publishes=((work, source),)))
        respond = functools.partial(
            runner.run_derived_stage,
            f"r{rnd}",
            store,
            work,
            lineages,
            source,
            JUDGED_COLUMNS if evol.judge_information_gain else EVOLVED_COLUMNS,
            functools.partial(respond_documents, rnd=rnd, judged=evol.judge_information_gain),
            RespondStep(ctx.model_name),
            fingerprint,
        )
        # every round's responses are the diversity filter's (when on): then in turn
        parts.append(Together(respond, publishes=((store, f"r{rnd}"),), filtered=True))
    runner.run_together(parts)

    outside = UnitStats()  # attempts decided outside the respond stages
    pool = 0
    for rnd in range(evol.rounds):
        evolved = work.totals(f"evolve-r{rnd}")
        outside.input_documents += evolved.input_documents
        outside.rows_in += evolved.rows_in
        outside.dropped.update(evolved.dropped)
        outside.errored.update(evolved.errored)
        if rnd == 0:
            pool = evolved.rows_in - evolved.errored.get("input", 0)
        if evol.judge_information_gain:
            judged = work.totals(f"judge-r{rnd}")
            outside.dropped.update(judged.dropped)
            if judged.rows_errored:  # the judgement failed: nothing to go on
                outside.errored["judge"] += judged.rows_errored
        outside.rows_in -= store.totals(f"r{rnd}").rows_in  # the respond stage counts these

    return store.write_stats(
        units_total=runner.summary.units_total,
        extra=outside,
        sections={"evol_instruct": {"rounds": evol.rounds, "pool_after_last_round": pool}},
    )


register(
    MethodSpec(
        "evol_instruct",
        run=run_rounds,
        section=EvolConfig,
        old_section_names=("evol",),
        fingerprint_key="evol",  # the section's name before issue 12: earlier outputs resume
        papers=lambda config: ["xu2023wizardlm"],
        streams=lambda config: True,
    )
)
