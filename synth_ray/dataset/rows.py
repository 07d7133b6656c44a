"""Rows of a finished or running output that meet an SQL condition: `synth-ray inspect`.

    synth-ray inspect out/quickstart --where "style = 'qa' and n_output_tokens > 200" --n 3
    python -c "from synth_ray.dataset.rows import pick_rows; print(pick_rows('out/quickstart'))"

Reads only committed shards (the commit log, never a listing), one at a time in (stage, unit)
order, and stops once `n` rows matched, so a look at a billion-row output reads a few shards.
The condition is a DuckDB SQL expression over the shard's columns; a wrong one fails before
any shard is read with one line naming it, and the columns there are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from synth_ray.errors import UserError
from synth_ray.io.manifest import UnitRecord
from synth_ray.io.output_store import OutputStore


def pick_rows(
    output: str | Path,
    where: str | None = None,
    n: int = 5,
    errors: bool = False,
    kept: str = "data",
) -> list[dict[str, Any]]:
    """Up to `n` committed rows for which `where` holds: error rows with `errors`, else the
    rows `kept` in `data` (the dataset), `dropped` (`output.keep_dropped`) or a method's
    named split (`uncertain`)."""
    store = OutputStore(output)
    store.location.kind()  # an unreachable store: one line, not a traceback
    if store.read_job() is None:
        raise UserError(f"output folder {output}: no synth-ray job here (_job.json missing)")
    records = sorted(store.committed().values(), key=lambda r: (r.stage, r.unit_index))
    shards = [s for r in records for s in _shards(r, "errors" if errors else kept)]
    if not shards and kept not in ("data", "dropped") and not errors:
        named = sorted({split for r in records for split in r.split_shards})
        raise UserError(
            f"output {output}: no split {kept!r} (splits: {', '.join(named) or 'none'})"
        )
    picked: list[dict[str, Any]] = []
    checked = False
    for shard in shards:
        if len(picked) >= n:
            break
        table = store.location.read_table(shard)
        if not checked:
            _matching(table.schema.empty_table(), where, 0)  # a bad condition fails here
            checked = True
        picked += _matching(table, where, n - len(picked))
    return picked


def _shards(record: UnitRecord, kept: str) -> list[str]:
    if kept == "errors":
        return record.error_shards()
    if kept == "data":
        return record.data_shards()
    if kept == "dropped":
        return record.dropped_shards
    return record.split_shards.get(kept, [])


def _matching(table: pa.Table, where: str | None, limit: int) -> list[dict[str, Any]]:
    if not where:
        return table.slice(0, limit).to_pylist()
    with duckdb.connect() as con:
        con.register("shard", table)
        try:
            query = con.sql(f"SELECT * FROM shard WHERE {where} LIMIT {int(limit)}")
            return query.to_arrow_table().to_pylist()
        except duckdb.Error as err:
            first = str(err).strip().splitlines()[0]
            columns = ", ".join(table.column_names)
            raise UserError(f"--where {where!r}: {first} (columns: {columns})") from None
