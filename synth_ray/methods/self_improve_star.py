"""Method `self_improve`'s driver and registration: one stage for most modes, and STaR's two
stages in one output folder: direct rationales, then rationalization with a hint.

    synth-ray run configs/self_improve.yaml

The modes' requests and parsing are in methods/self_improve.py; this module runs them.

The questions sent to `rationalize` are derived from what `direct` committed: every input
question with neither a kept direct row nor an error row. They go by reference: one
rationalize unit per direct unit, whose replica reads the unit's input rows and the source ids
of the direct unit's shards (runtime `run_unsettled_stage`), so the driver holds no question.
That set is the same whenever it is computed from the same committed stage, so a run killed in
either stage resumes exactly: the direct stage skips its committed units, and the rationalize
stage derives the same units again.
"""

from __future__ import annotations

import functools
from typing import Any

from synth_ray.config import JobConfig
from synth_ray.io.inputs import InputSpec, absolute_path
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.self_improve import SelfImproveConfig, SelfImproveMethod, load_few_shot
from synth_ray.methods.stages import JobContext, Together, run_single_stage
from synth_ray.verify.sandbox import sandbox_or_config_error


def run_star(ctx: JobContext) -> dict[str, Any]:
    """Run (or resume) both stages into the job's folder, together on the job's replicas: a
    unit's failed questions are rationalized as soon as its direct unit commits."""
    assert ctx.docs is not None
    docs, store, runner = ctx.docs, ctx.store, ctx.runner
    section = ctx.config.section_as(SelfImproveConfig)
    direct = SelfImproveMethod(section, ctx.model_name, stage="direct")
    units = runner.plan(docs, direct, f"{ctx.fingerprint}/direct", ctx.id_column)
    ctx.prepare()
    rationalize = SelfImproveMethod(section, ctx.model_name, stage="rationalize")
    first = functools.partial(runner.execute, store, docs, direct, units, "direct")
    second = functools.partial(
        runner.run_unsettled_stage,
        "rationalize", store, docs, units, "direct", rationalize, ctx.fingerprint,
    )  # fmt: skip
    # both stages are the diversity filter's (when on): then one after the other
    parts = [Together(first, publishes=((store, "direct"),), filtered=True)]
    runner.run_together([*parts, Together(second, filtered=True)])
    return store.write_stats(units_total=runner.summary.units_total)  # both stages' last word


def run_self_improve(ctx: JobContext) -> dict[str, Any]:
    """STaR runs two stages (methods/self_improve_star.py); the other modes are one stage."""
    if ctx.config.section_as(SelfImproveConfig).mode == "star":
        return run_star(ctx)
    section = ctx.config.section_as(SelfImproveConfig)
    return run_single_stage(ctx, SelfImproveMethod(section, ctx.model_name))


def self_improve_input(config: JobConfig) -> InputSpec:
    """The question column, plus the reference answers' column when there is one."""
    i, si = config.input, config.section_as(SelfImproveConfig)
    assert i is not None
    extra = (si.answer_column,) if si.answer_column else ()
    return InputSpec(absolute_path(i.path), si.question_column, i.id_column, i.limit, extra)


def self_improve_files(config: JobConfig) -> dict[tuple[str, str], str]:
    path = config.section_as(SelfImproveConfig).few_shot_path
    return {("self_improve", "few_shot_path"): path} if path else {}


def check_self_improve(config: JobConfig) -> None:
    """Before any work: the few-shot file reads, and programs can be confined on this node."""
    section = config.section_as(SelfImproveConfig)
    load_few_shot(section.few_shot_path)
    if section.checker == "program":
        sandbox_or_config_error(section.sandbox, "self_improve.checker")


def self_improve_papers(config: JobConfig) -> list[str]:
    section = config.section_as(SelfImproveConfig)
    mode = {"star": "zelikman2022star", "rejection": "yuan2023rft"}
    papers = [mode.get(section.mode, "huang2022selfimprove")]
    return papers + (["chen2022pot"] if section.checker == "program" else [])


register(
    MethodSpec(
        "self_improve",
        run=run_self_improve,
        input_spec=self_improve_input,
        section=SelfImproveConfig,
        check=check_self_improve,
        files=self_improve_files,
        papers=self_improve_papers,
        streams=lambda config: config.section_as(SelfImproveConfig).mode == "star",
    )
)
