"""STaR's two stages in one output folder: direct rationales, then rationalization with a hint.

The questions sent to `rationalize` are derived from what `direct` committed: every input
question with neither a kept direct row nor an error row. That set is the same whenever it is
computed from the same committed stage, so a run killed in either stage resumes exactly: the
direct stage skips its committed units, and the rationalize stage plans the same units again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pyarrow.parquet as pq

from synth_ray.io.output_store import OutputStore
from synth_ray.methods.self_improve import SelfImproveMethod
from synth_ray.runtime.stage import JobContext


def _source_ids(store: OutputStore, stage: str, errors: bool) -> set[str]:
    ids: set[str] = set()
    for record in store.committed(stage).values():
        shard = record.error_shard if errors else record.data_shard
        if shard:
            ids.update(
                pq.read_table(store.root / shard, columns=["source_id"])["source_id"].to_pylist()
            )
    return ids


def run_star(ctx: JobContext) -> dict[str, Any]:
    """Run (or resume) both stages into the job's folder."""
    assert ctx.docs is not None
    docs, store, runner = ctx.docs, ctx.store, ctx.runner
    direct = SelfImproveMethod(ctx.config.self_improve, ctx.model_name, stage="direct")
    units = runner.plan(docs, direct, f"{ctx.fingerprint}/direct", ctx.id_column)
    ctx.prepare()
    runner.execute(store, docs, direct, units, stage="direct")
    settled = _source_ids(store, "direct", errors=False) | _source_ids(store, "direct", errors=True)
    wrong = [doc for doc in docs() if doc.source_id not in settled]
    renumbered = [dataclasses.replace(doc, ordinal=i) for i, doc in enumerate(wrong)]
    rationalize = SelfImproveMethod(ctx.config.self_improve, ctx.model_name, stage="rationalize")
    return runner.run_stage(
        "rationalize", store, lambda: iter(renumbered), rationalize, ctx.fingerprint
    )
