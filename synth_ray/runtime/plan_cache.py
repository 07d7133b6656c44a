"""A stage's plan over the input files, kept in the output, so a resume reads no input row.

    python -m pytest tests/test_job_fake_engine.py -k "resume_reads_no_input_row"

Planning streams the whole input once (each row's id, its estimated output rows, where it
starts: plan.py). The run that plans writes the units to `_plans/<key>.parquet` once it has
claimed the output; a later run loads them instead of planning again. The key hashes all that
the units depend on: the stage's plan key (the config's fingerprint and the stage's name),
`output.rows_per_shard`, the input's limit and identity (every file's name, size and a digest
of sampled bytes: inputs.identify_inputs). An input changed since misses the cache and is
refused or re-planned (job.py); a same-size rewrite the samples miss is caught by the
generators' check of each unit's source ids (slice_worker.py), and `--replan` plans anew.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from synth_ray.io.filesystem import Location
from synth_ray.io.inputs import Seek
from synth_ray.io.output_store import PLANS_DIR, OutputStore
from synth_ray.plan import WorkUnit
from synth_ray.runtime.stage_documents import InputDocuments

_FORMAT = 1  # bump when the columns or their meaning change: older plans are then ignored

_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("unit_id", pa.string()),
        ("start", pa.int64()),
        ("stop", pa.int64()),
        ("estimated_rows", pa.int64()),
        ("seek_file", pa.int64()),  # -1: no seek
        ("seek_row", pa.int64()),
        ("seek_offset", pa.int64()),
        ("seek_line", pa.int64()),
    ]
)


def plan_name(plan_key: str, rows_per_shard: int, docs: InputDocuments) -> str | None:
    """The cache file's name for this stage's plan; None when the input was not identified."""
    if docs.identity is None:
        return None
    what = [_FORMAT, plan_key, rows_per_shard, docs.spec.limit, docs.identity]
    digest = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:24]
    return f"{PLANS_DIR}/plan-{digest}.parquet"


def save_units(location: Location, name: str, units: list[WorkUnit]) -> None:
    """Write the plan (one small row per unit; never a row of the input)."""
    seeks = [u.seek for u in units]
    columns = {
        "index": [u.index for u in units],
        "unit_id": [u.unit_id for u in units],
        "start": [u.start for u in units],
        "stop": [u.stop for u in units],
        "estimated_rows": [u.estimated_rows for u in units],
        "seek_file": [s.file_index if s else -1 for s in seeks],
        "seek_row": [s.row if s else 0 for s in seeks],
        "seek_offset": [s.offset if s else 0 for s in seeks],
        "seek_line": [s.line if s else 0 for s in seeks],
    }
    plan_key = units[0].plan_key if units else ""
    table = pa.table(columns, schema=_SCHEMA).replace_schema_metadata({"plan_key": plan_key})
    OutputStore(location).write_table(name, table)


def load_units(location: Location, name: str) -> list[WorkUnit] | None:
    """The cached plan; None when there is none or it cannot be read (planned again)."""
    if not location.exists(name):
        return None
    try:
        table = location.read_table(name)
    except (OSError, pa.ArrowException):
        return None
    if table.schema.remove_metadata() != _SCHEMA:
        return None
    plan_key = (table.schema.metadata or {}).get(b"plan_key", b"").decode()
    c = {column: table.column(column).to_pylist() for column in _SCHEMA.names}
    units = []
    for i in range(table.num_rows):
        seek = None
        if c["seek_file"][i] >= 0:
            seek = Seek(
                c["start"][i],
                c["seek_file"][i],
                c["seek_row"][i],
                c["seek_offset"][i],
                c["seek_line"][i],
            )
        units.append(
            WorkUnit(
                c["index"][i],
                c["unit_id"][i],
                c["start"][i],
                c["stop"][i],
                c["estimated_rows"][i],
                plan_key,
                seek,
            )
        )
    return units
