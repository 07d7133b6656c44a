"""`synth-ray status OUTPUT`: what the commit log says is done, and what is pending.

    synth-ray status out/quickstart --json
    synth-ray status s3://bucket/runs/quickstart

Reads only the output folder, local or a URI (`_job.json`; the commit log, `_manifest.jsonl` or
`_commits/`; the run log, `_runs.jsonl` or `_runs/`), so it works while a job is running and
after it was killed. `live` is the running stage's latest sample (`_progress.json`,
rewritten every few seconds): a "running" state not updated for minutes means the driver is
gone. `held_by` is the run holding the output's lease (io/lease.py), with its heartbeat's age. Pending units are the planned total (recorded in stats.json by the last
run that planned) minus the committed ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from synth_ray.errors import UserError
from synth_ray.io.lease import HOLDER_FILE, seconds
from synth_ray.io.output_store import PROGRESS_FILE, STATS_FILE, OutputStore


def collect_status(output: str | Path) -> dict[str, Any]:
    store = OutputStore(output)
    store.location.kind()  # an unreachable store: one ConfigError line, not a traceback
    job = store.read_job()
    if job is None:
        raise UserError(f"output folder {output}: no synth-ray job here (_job.json missing)")
    totals = store.all_totals().to_dict()
    committed = len(store.committed())
    units_total = (store.read_json(STATS_FILE) or {}).get("units_total")
    runs = store.runs()
    report: dict[str, Any] = {
        "method": job["config"].get("method"),
        "model": job["config"].get("engine", {}).get("model"),
        "units_committed": committed,
        "units_pending": (units_total - committed) if units_total is not None else "unknown",
        **totals,
        "accounted": totals["rows_in"]
        == totals["rows_out"] + totals["rows_dropped"] + totals["rows_errored"],
        "runs": len(runs),
        "generation_wall_s": round(sum(r.get("generation_wall_s", 0.0) for r in runs), 1),
    }
    holder = store.read_json(HOLDER_FILE)
    if isinstance(holder, dict):  # a run holds the output now (or died holding it)
        report["held_by"] = {
            **{k: holder.get(k) for k in ("run_id", "host", "pid")},
            "heartbeat_s_ago": round(time.time() - seconds(holder.get("heartbeat")), 1),
        }
    live = store.read_json(PROGRESS_FILE)
    if live:
        report["live"] = {
            **{k: live.get(k) for k in ("state", "stage", "units_done", "units_total")},
            **{k: live.get(k) for k in ("output_tokens_per_s", "rows_per_s", "eta_s")},
            **{k: live.get(k) for k in ("rows_errored", "replica_failures", "requests_resent")},
            "updated_s_ago": round(time.time() - live.get("updated", time.time()), 1),
        }
    return report
