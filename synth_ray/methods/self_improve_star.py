"""STaR's two stages in one output folder: direct rationales, then rationalization with a hint.

The questions sent to `rationalize` are derived from what `direct` committed: every input
question with neither a kept direct row nor an error row. They go by reference: one
rationalize unit per direct unit, whose replica reads the unit's input rows and the source ids
of the direct unit's shards (runtime `run_unsettled_stage`), so the driver holds no question.
That set is the same whenever it is computed from the same committed stage, so a run killed in
either stage resumes exactly: the direct stage skips its committed units, and the rationalize
stage derives the same units again.
"""

from __future__ import annotations

from typing import Any

from synth_ray.methods.self_improve import SelfImproveConfig, SelfImproveMethod
from synth_ray.methods.stages import JobContext


def run_star(ctx: JobContext) -> dict[str, Any]:
    """Run (or resume) both stages into the job's folder."""
    assert ctx.docs is not None
    docs, store, runner = ctx.docs, ctx.store, ctx.runner
    section = ctx.config.section_as(SelfImproveConfig)
    direct = SelfImproveMethod(section, ctx.model_name, stage="direct")
    units = runner.plan(docs, direct, f"{ctx.fingerprint}/direct", ctx.id_column)
    ctx.prepare()
    runner.execute(store, docs, direct, units, stage="direct")
    rationalize = SelfImproveMethod(section, ctx.model_name, stage="rationalize")
    return runner.run_unsettled_stage(
        "rationalize", store, docs, units, "direct", rationalize, ctx.fingerprint
    )
