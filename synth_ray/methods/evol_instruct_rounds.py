"""Evol-Instruct's rounds: evolve, eliminate, respond; survivors evolve again next round.

Round r: stage `evolve-rN` rewrites each instruction with its operation (drawn from
sampling.seed, r and the instruction's id; requests grouped by operation for prefix-cache
hits); evolutions that copy prompt scaffolding are
eliminated; stage `judge-rN` asks whether each remaining one equals its parent (eliminated if
so); stage `rN` answers the rest and eliminates responses showing the model could not answer.
The kept responses are the output rows of round r, and their instructions are round r+1's
input, together with the instructions whose evolution failed this round (the paper puts them
back into the pool to be evolved again). Every stage's input derives from committed shards only, so a run killed anywhere
resumes with the same survivors and skips committed units. Elimination counts go to
stats.json under each rule's name; the accounting covers every evolution attempted.
"""

from __future__ import annotations

from typing import Any

from synth_ray.diversity.decide import histogram, merge_histograms, nn_value
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
from synth_ray.methods.stages import JobContext
from synth_ray.stats import UnitStats


def run_rounds(ctx: JobContext) -> dict[str, Any]:
    assert ctx.docs is not None
    config, runner, store, fingerprint, docs = (
        ctx.config,
        ctx.runner,
        ctx.store,
        ctx.fingerprint,
        ctx.docs,
    )
    evol = config.section_as(EvolConfig)
    first = EvolveStep(0)
    runner.plan(docs, first, f"{fingerprint}/evolve-r0", ctx.id_column)  # bad ids: fail now
    ctx.prepare()
    work = store.child(STAGES_DIR)
    work.prepare(f"{fingerprint}/stages", {"stages_of": fingerprint}, overwrite=False)

    # (id, instruction, root input id) of the instructions to evolve this round
    current = [(d.source_id, d.text, d.source_id, d.error) for d in docs()]
    outside = UnitStats()  # attempts decided outside the respond stages

    for rnd in range(evol.rounds):
        if not current:
            break
        roots = {item_id: root for item_id, _, root, _ in current}
        # grouped by operation, so consecutive requests share the longest prompt prefix and
        # hit vLLM's prefix cache (in-depth prompts differ only from the method line on)
        ops = {
            item_id: choose_operation(config.sampling.seed, rnd, item_id, evol.operations)
            for item_id, _, _, _ in current
        }
        ordered = sorted(current, key=lambda item: (ops[item[0]], item[0]))
        evolve_docs = [
            Document(i, item_id, text, error, extra={"operation": ops[item_id]})
            for i, (item_id, text, _, error) in enumerate(ordered)
        ]
        stage = f"evolve-r{rnd}"
        step = EvolveStep(rnd, evol.templates)
        runner.run_stage(stage, work, lambda d=evolve_docs: iter(d), step, fingerprint)
        evolve_stats = work.totals(stage)
        outside.input_documents += evolve_stats.input_documents
        outside.rows_in += evolve_stats.rows_in
        outside.dropped.update(evolve_stats.dropped)
        outside.errored.update(evolve_stats.errored)
        evolved = []
        for row in work.rows(stage):
            if copies_scaffolding(row["evolved"]):
                outside.dropped["copies_prompt_scaffolding"] += 1
            else:
                evolved.append(row)

        if evol.judge_information_gain and evolved:
            judge_docs = [
                Document(i, r["id"], r["evolved"], extra={"parent": r["parent_instruction"]})
                for i, r in enumerate(evolved)
            ]
            stage = f"judge-r{rnd}"
            judge = JudgeStep(evol.templates.get("judge", EQUALITY_JUDGE))
            runner.run_stage(stage, work, lambda d=judge_docs: iter(d), judge, fingerprint)
            verdicts = {r["source_id"]: r["equal"] for r in work.rows(stage)}
            judged = []
            for row in evolved:
                if row["id"] not in verdicts:
                    outside.errored["judge"] += 1  # the judgement failed: nothing to go on
                elif verdicts[row["id"]]:
                    outside.dropped["no_information_gain"] += 1
                else:
                    judged.append(row)
            evolved = judged

        nn: dict[str, float | None] = {}
        diversity = runner.diversity_filter()
        if diversity and evolved:
            vectors = diversity.embed_cached(f"evolved-r{rnd}", [r["evolved"] for r in evolved])
            decision = diversity.decide(vectors)
            outside.nn_histogram = merge_histograms(
                outside.nn_histogram, histogram(decision.nn_similarity)
            )
            survivors = []
            for row, keep, similarity in zip(
                evolved, decision.keep, decision.nn_similarity, strict=True
            ):
                if keep:
                    nn[row["id"]] = nn_value(similarity)
                    survivors.append(row)
                else:
                    outside.dropped["diversity"] += 1
            evolved = survivors

        respond_docs = [
            Document(
                i,
                r["id"],
                r["evolved"],
                extra={
                    "parent_id": r["source_id"],
                    "operation": r["operation"],
                    "round": rnd,
                    "root": roots[r["source_id"]],
                    "nn_similarity": nn.get(r["id"]),
                },
            )
            for i, r in enumerate(evolved)
        ]
        # these attempts are counted by the respond stage itself, not here
        outside.rows_in -= len(respond_docs)
        stage = f"r{rnd}"
        runner.run_stage(
            stage, store, lambda d=respond_docs: iter(d), RespondStep(ctx.model_name), fingerprint
        )
        answered = store.rows(stage)
        evolved_parents = {r["parent_id"] for r in answered}
        # The paper puts an instruction whose evolution failed back into the pool, so the pool
        # does not shrink round by round: it is evolved again (another draw) next round.
        failed = [item for item in current if item[3] is None and item[0] not in evolved_parents]
        current = [(r["id"], r["instruction"], r["source_id"], None) for r in answered] + failed

    return store.write_stats(
        units_total=runner.summary.units_total,
        extra=outside,
        sections={"evol_instruct": {"rounds": evol.rounds, "pool_after_last_round": len(current)}},
    )
