"""STaR's two stages in one output folder: direct rationales, then rationalization with a hint.

The questions sent to `rationalize` are derived from what `direct` committed: every input
question with neither a kept direct row nor an error row. That set is the same whenever it is
computed from the same committed stage, so a run killed in either stage resumes exactly: the
direct stage skips its committed units, and the rationalize stage plans the same units again.
"""

from __future__ import annotations

import dataclasses
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
    settled = {r["source_id"] for r in store.rows("direct")}
    settled |= {r["source_id"] for r in store.rows("direct", errors=True)}
    wrong = [doc for doc in docs() if doc.source_id not in settled]
    renumbered = [dataclasses.replace(doc, ordinal=i) for i, doc in enumerate(wrong)]
    rationalize = SelfImproveMethod(section, ctx.model_name, stage="rationalize")
    return runner.run_stage(
        "rationalize", store, lambda: iter(renumbered), rationalize, ctx.fingerprint
    )
