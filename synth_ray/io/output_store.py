"""The output folder: which job owns it, committed units, shards, stats.json.

    python -c "from synth_ray.io.output_store import OutputStore; print(OutputStore('out').committed())"

Layout (names are deterministic, so a rerun writes the same names):
    _job.json            fingerprint and config of the job that owns the folder
    _manifest.jsonl      one line per committed unit: the commit point (see manifest.py)
    _runs.jsonl          one line per finished run: wall time, units and tokens of that run
    data/part-NNNNNN.parquet     output rows of unit NNNNNN (possibly empty)
    errors/part-NNNNNN.parquet   error rows of unit NNNNNN (only when it had some)
    embeddings/part-NNNNNN.parquet   vectors of the unit's kept rows (diversity filter only)
    _diversity/          the filter's centroids and reference-corpus vectors
    stats.json           totals over committed units plus run wall time
A unit is committed by writing its shards atomically and then appending its manifest line.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synth_ray.errors import OutputConflictError
from synth_ray.io.manifest import MANIFEST_NAME, Manifest, UnitRecord
from synth_ray.io.shards import sweep_temp_files, write_bytes_atomic, write_shard_atomic
from synth_ray.io.vectors import read_vectors, write_vectors_atomic
from synth_ray.stats import UnitStats

JOB_FILE = "_job.json"
RUNS_FILE = "_runs.jsonl"
STATS_FILE = "stats.json"
DRIVER_STATS_FILE = "_driver_stats.json"  # rows a method's driver decided outside any unit
DATA_DIR = "data"
ERRORS_DIR = "errors"
EMBEDDINGS_DIR = "embeddings"
DIVERSITY_DIR = "_diversity"

ERROR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("source_id", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("error", pa.string()),
        pa.field("unit_index", pa.int32()),
    ]
)

STAGES_DIR = "stages"  # multi-round methods: one sub-store per stage
_OWNED = (
    JOB_FILE,
    MANIFEST_NAME,
    RUNS_FILE,
    STATS_FILE,
    DRIVER_STATS_FILE,
    DATA_DIR,
    ERRORS_DIR,
    STAGES_DIR,
    EMBEDDINGS_DIR,
    DIVERSITY_DIR,
)


class OutputStore:
    def __init__(self, path: str | Path) -> None:
        self.root = Path(path).expanduser()
        self.manifest = Manifest(self.root)

    def read_job(self) -> dict[str, Any] | None:
        job_file = self.root / JOB_FILE
        return json.loads(job_file.read_text()) if job_file.exists() else None

    def prepare(self, fingerprint: str, config: dict[str, Any], overwrite: bool) -> None:
        """Claim the folder for this job; refuse another job's output unless `overwrite`."""
        if self.root.exists() and not self.root.is_dir():
            raise OutputConflictError(f"output.path {self.root}: exists and is not a folder")
        job = self.read_job()
        owned_by_other = (job is not None and job.get("fingerprint") != fingerprint) or (
            job is None and (self.root / MANIFEST_NAME).exists()
        )
        if owned_by_other and not overwrite:
            method = (job or {}).get("config", {}).get("method", "unknown")
            raise OutputConflictError(
                f"output.path {self.root}: holds output of a different config (method {method}, "
                f"fingerprint {(job or {}).get('fingerprint')} != {fingerprint}); "
                "rerun with --overwrite to replace it, or choose another output.path"
            )
        if overwrite:
            for name in _OWNED:
                target = self.root / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        self.root.mkdir(parents=True, exist_ok=True)
        sweep_temp_files(self.root)
        if job is None or overwrite:
            payload = {"fingerprint": fingerprint, "config": config, "created": time.time()}
            write_bytes_atomic(
                json.dumps(payload, indent=2, default=str).encode(), self.root / JOB_FILE
            )

    def committed(self, stage: str | None = None) -> dict[str, UnitRecord]:
        """Committed units by id; only those of `stage` when it is given."""
        records = self.manifest.read()
        if stage is None:
            return records
        return {k: r for k, r in records.items() if r.stage == stage}

    def commit_unit(
        self,
        unit_index: int,
        unit_id: str,
        rows: list[dict[str, Any]],
        schema: pa.Schema,
        errors: list[dict[str, Any]],
        stats: UnitStats,
        stage: str = "",
        vectors: tuple[list[str], np.ndarray] | None = None,
    ) -> UnitRecord:
        """Write the unit's shards atomically, then append its manifest line (the commit).
        A `stage` prefixes the shard names, so stages sharing a folder never collide.
        `vectors` (ids, float16 array) of the kept rows go to an embeddings shard, committed
        by the same manifest line."""
        if not stats.is_balanced():
            raise AssertionError(f"unit {unit_index}: row accounting does not balance: {stats}")
        name = f"{stage + '-' if stage else ''}part-{unit_index:06d}.parquet"
        data_shard = f"{DATA_DIR}/{name}"
        write_shard_atomic(pa.Table.from_pylist(rows, schema=schema), self.root / data_shard)
        error_shard = None
        if errors:
            error_shard = f"{ERRORS_DIR}/{name}"
            table = pa.Table.from_pylist(
                [{**e, "unit_index": unit_index} for e in errors], schema=ERROR_SCHEMA
            )
            write_shard_atomic(table, self.root / error_shard)
        embedding_shard = None
        if vectors is not None:
            embedding_shard = f"{EMBEDDINGS_DIR}/{name}"
            write_vectors_atomic(self.root / embedding_shard, vectors[0], vectors[1])
        record = UnitRecord(
            unit_index=unit_index,
            unit_id=unit_id,
            data_shard=data_shard,
            error_shard=error_shard,
            rows_out=len(rows),
            stats=stats.to_dict(),
            stage=stage,
            embedding_shard=embedding_shard,
        )
        self.manifest.append(record)
        return record

    def record_run(self, run: dict[str, Any]) -> None:
        with open(self.root / RUNS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(run, sort_keys=True) + "\n")

    def runs(self) -> list[dict[str, Any]]:
        path = self.root / RUNS_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def totals(self, stage: str | None = None) -> UnitStats:
        total = UnitStats()
        for record in self.committed(stage).values():
            total.merge(UnitStats.from_dict(record.stats))
        return total

    def driver_stats(self) -> UnitStats | None:
        path = self.root / DRIVER_STATS_FILE
        return UnitStats.from_dict(json.loads(path.read_text())) if path.exists() else None

    def all_totals(self) -> UnitStats:
        """Committed units plus the driver's own decisions: what every reader should report."""
        total = self.totals()
        extra = self.driver_stats()
        if extra is not None:
            total.merge(extra)
        return total

    def write_stats(
        self,
        units_total: int | None = None,
        extra: UnitStats | None = None,
        sections: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Rewrite stats.json from the manifest and the run log; returns what it wrote.

        `extra` (kept in _driver_stats.json for later readers) adds rows a method's driver
        decided on outside any unit (Self-Instruct's pool filters, Evol-Instruct's judge), so
        the accounting covers them; `sections` adds method-specific figures."""
        committed = self.committed()
        runs = self.runs()
        if extra is not None:
            write_bytes_atomic(json.dumps(extra.to_dict()).encode(), self.root / DRIVER_STATS_FILE)
        totals = self.all_totals()
        stats: dict[str, Any] = {
            "units_committed": len(committed),
            **totals.to_dict(),
            "generation_wall_s": round(sum(r.get("generation_wall_s", 0.0) for r in runs), 3),
            "runs": len(runs),
        }
        if units_total is not None:
            stats["units_total"] = units_total
        stats["accounted"] = stats["rows_in"] == (
            stats["rows_out"] + stats["rows_dropped"] + stats["rows_errored"]
        )
        stats.update(sections or {})
        write_bytes_atomic(json.dumps(stats, indent=2).encode(), self.root / STATS_FILE)
        return stats

    def rows(self, stage: str | None = None, errors: bool = False) -> list[dict[str, Any]]:
        """Committed rows (or error rows) in (stage, unit) order, candidate order within a unit:
        what a later stage of a multi-round method reads as its input."""
        records = sorted(self.committed(stage).values(), key=lambda r: (r.stage, r.unit_index))
        shards = [r.error_shard if errors else r.data_shard for r in records]
        return [row for s in shards if s for row in pq.read_table(self.root / s).to_pylist()]

    def committed_vectors(self, stage: str = "") -> list[np.ndarray]:
        """The kept rows' vectors of each committed unit of `stage`, in unit order."""
        records = sorted(self.committed(stage).values(), key=lambda r: r.unit_index)
        return [
            read_vectors(self.root / r.embedding_shard)[1] for r in records if r.embedding_shard
        ]

    def data_files(self, stage: str | None = None) -> list[Path]:
        """Committed data shards in (stage, unit) order: what a reader should read."""
        records = sorted(self.committed(stage).values(), key=lambda r: (r.stage, r.unit_index))
        return [self.root / r.data_shard for r in records]
