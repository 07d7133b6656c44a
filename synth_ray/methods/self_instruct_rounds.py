"""Self-Instruct's rounds: generate instructions, filter them into the pool, then instances.

Round r builds `requests_per_round` prompts from the pool as it stood after round r-1 (6 seed
and 2 machine instructions each, drawn by an RNG seeded with sampling.seed, r and the prompt's
index), runs them as stage `generate-rNNN`, and filters the parsed instructions in committed
order: heuristics, then ROUGE-L against the pool (seeds included), then (filters.diversity)
embedding similarity to every instruction accepted so far; survivors join the pool.
Rounds stop at `target` accepted instructions. Then `classify` and `instances` stages; the
instances are the job's output rows. The committed stage shards are the checkpoint: on resume
every finished round is replayed from its shards (no generation) and reaches the same pool, so
the interrupted round plans the same units and skips those already committed. `pool.json` in
the stages folder is rewritten after each round for people to look at.
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from synth_ray.config import JobConfig
from synth_ray.diversity.decide import histogram, nn_value
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import STAGES_DIR
from synth_ray.methods.base import row_id
from synth_ray.methods.instruction_filters import RougePool, heuristic_drop
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.self_instruct import (
    ClassificationCheck,
    InstanceGeneration,
    InstructionGeneration,
    SelfInstructConfig,
    load_seed_instructions,
)
from synth_ray.methods.self_instruct_prompts import (
    CLASSIFY,
    GENERATE_HEADER,
    INPUT_FIRST,
    OUTPUT_FIRST,
    generation_prompt,
)
from synth_ray.methods.stages import JobContext, Together
from synth_ray.stats import UnitStats


def round_prompts(
    config: JobConfig, seeds: list[str], machine: list[str], rnd: int
) -> list[Document]:
    si = config.section_as(SelfInstructConfig)
    docs = []
    for i in range(si.requests_per_round):
        rng = random.Random(f"{config.sampling.seed}:{rnd}:{i}")
        n_machine = min(si.machine_in_context, len(machine))
        n_seeds = si.seeds_in_context + si.machine_in_context - n_machine  # seeds fill in
        chosen = rng.sample(seeds, min(n_seeds, len(seeds)))
        chosen += rng.sample(machine, n_machine)
        rng.shuffle(chosen)
        header = si.templates.get("generate_header", GENERATE_HEADER)
        docs.append(Document(i, f"r{rnd:03d}-{i:04d}", generation_prompt(chosen, header)))
    return docs


def run_rounds(ctx: JobContext) -> dict[str, Any]:
    config, runner, store, fingerprint = ctx.config, ctx.runner, ctx.store, ctx.fingerprint
    si = config.section_as(SelfInstructConfig)
    seeds = load_seed_instructions(si.seed_path or "")
    ctx.prepare()
    work = store.child(STAGES_DIR)
    work.prepare(f"{fingerprint}/stages", {"stages_of": fingerprint}, overwrite=False)

    pool = RougePool(seeds)
    accepted: list[dict[str, Any]] = []
    drops: Counter[str] = Counter()
    considered = rounds = 0
    compared: list[float] = []  # diversity: each considered instruction's nn similarity
    generation = InstructionGeneration()
    for rnd in range(si.max_rounds):
        if len(accepted) >= si.target:
            break
        rounds += 1
        docs = round_prompts(config, seeds, [a["instruction"] for a in accepted], rnd)
        stage = f"generate-r{rnd:03d}"
        runner.run_stage(stage, work, lambda docs=docs: iter(docs), generation, fingerprint)
        instructions = [i for row in work.rows(stage) for i in row["instructions"]]
        diversity = runner.diversity_filter()
        if diversity and rnd == 0:  # the seeds are the pool's first members, on every run
            diversity.restore(diversity.embed_cached("seeds", seeds))
        batch = (
            diversity.ordered(diversity.embed_cached(stage, instructions)) if diversity else None
        )
        for position, instruction in enumerate(instructions):
            considered += 1
            if len(accepted) >= si.target:
                drops["over_target"] += 1
                continue
            reason = heuristic_drop(instruction, si.min_words, si.max_words)
            nn = None
            if reason is None:
                score = pool.max_similarity(instruction)
                if score > si.rouge_threshold:
                    reason = "rouge_similarity"
            if reason is None and batch is not None:
                similarity = batch.similarity(position)
                compared.append(similarity)
                nn = nn_value(similarity)
                if similarity >= config.filters.diversity.threshold:
                    reason = "diversity"
            if reason is not None:
                drops[reason] += 1
                continue
            if batch is not None:
                batch.accept(position)
            pool.add(instruction)
            accepted.append(
                {"instruction": instruction, "max_rouge": score, "round": rnd, "nn_similarity": nn}
            )
        if diversity and batch is not None:
            diversity.finish(batch)
        snapshot = {"round": rnd, "accepted": accepted, "dropped_by_filter": dict(drops)}
        work.location.write_bytes_atomic("pool.json", json.dumps(snapshot, indent=1).encode())

    docs = [
        Document(
            i,
            row_id(a["instruction"]),
            a["instruction"],
            extra={
                "max_rouge": a["max_rouge"],
                "round": a["round"],
                "nn_similarity": a["nn_similarity"],
            },
        )
        for i, a in enumerate(accepted)
    ]
    classify = ClassificationCheck(si.templates.get("classify", CLASSIFY), si.constrain)
    runner.run_stage("classify", work, lambda: iter(docs), classify, fingerprint)
    labels = {r["source_id"]: r["is_classification"] for r in work.rows("classify")}
    docs = [
        replace(d, extra={**d.extra, "is_classification": labels.get(d.source_id, False)})
        for d in docs
    ]
    # the responder: the job's model, or another pool's (the job's engine given back first)
    pool = si.instance_pool or "default"
    instances = InstanceGeneration(
        runner.model_name(pool),
        si.templates.get("input_first", INPUT_FIRST),
        si.templates.get("output_first", OUTPUT_FIRST),
        si.max_instances,
        config.sampling.max_tokens if si.constrain else None,
    )
    write = functools.partial(
        runner.run_stage, "instances", store, lambda: iter(docs), instances, fingerprint
    )
    runner.run_together([Together(write, pool)])

    pool_stage = UnitStats(rows_in=considered - len(accepted), dropped=drops)
    if compared:
        pool_stage.nn_histogram = histogram(np.array(compared, dtype=np.float32))
    generation_stats = UnitStats()
    for rnd in range(rounds):
        generation_stats.merge(work.totals(f"generate-r{rnd:03d}"))
    summary = {
        "rounds": rounds,
        "seeds": len(seeds),
        "instructions_considered": considered,
        "instructions_accepted": len(accepted),
        "target": si.target,
        "generation_stats": generation_stats.to_dict(),  # the rounds' requests and parses
    }
    return store.write_stats(
        units_total=runner.summary.units_total,
        extra=pool_stage,
        sections={"self_instruct": summary},
    )


def seed_path(config: JobConfig) -> str:
    return config.section_as(SelfInstructConfig).seed_path or ""


def self_instruct_files(config: JobConfig) -> dict[tuple[str, str], str]:
    path = config.section_as(SelfInstructConfig).seed_path
    return {("self_instruct", "seed_path"): path} if path else {}


register(
    MethodSpec(
        "self_instruct",
        run=run_rounds,
        input_spec=None,  # it grows from seed tasks, not input rows
        section=SelfInstructConfig,
        sample_texts=lambda config: load_seed_instructions(seed_path(config)),
        check=lambda config: load_seed_instructions(seed_path(config)) and None,
        files=self_instruct_files,
        papers=lambda config: ["wang2023selfinstruct"],
    )
)
