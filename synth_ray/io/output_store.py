"""The output folder: which job owns it, committed units, shards, stats.json.

    python -c "from synth_ray.io.output_store import OutputStore; print(OutputStore('out').committed())"

`output.path` is a local (or shared-filesystem) folder, or a URI on a pyarrow filesystem
(s3://, gs://, abfs://, hdfs://, file://; see filesystem.py). Layout:
    _job.json            fingerprint and config of the job that owns the folder
    _manifest.jsonl      local: one line per committed unit, the commit point (manifest.py)
    _commits/            URI: one object per committed unit, the commit point (commits.py)
    _runs.jsonl          local: one line per finished run: wall time, units and tokens
    _runs/               URI: the same, one object per run (object stores cannot append)
    data/part-NNNNNN-<attempt>.parquet   output rows of unit NNNNNN (possibly empty)
    data/part-NNNNNN-SSSSSS-EEEEEE-<attempt>.parquet   the same, for a unit generated in
                                 slices (the end of a job): rows [SSSSSS, EEEEEE) of the unit
    errors/part-NNNNNN-<attempt>.parquet   error rows of unit NNNNNN (only when it had some)
    dropped/part-NNNNNN-<attempt>.parquet  dropped rows of unit NNNNNN with their completion
                                 (output.keep_dropped, only when it had some)
    <split>/part-NNNNNN-<attempt>.parquet  rows a method kept into its named split (every
                                 unit of a stage whose method declares it, possibly empty)
    embeddings/part-NNNNNN-<attempt>.parquet   vectors of the unit's kept rows (diversity filter only)
    _diversity/          the filter's centroids and reference-corpus vectors
    _staging/            filtered slices' rows before their unit is decided (swept per stage)
    _plans/              each stage's units over the input files: a resume loads, never re-plans
    stats.json           totals over committed units plus run wall time
A unit is committed by writing its shards (local: temp, fsync, rename; URI: one PUT each to the
final name) and then its commit record (local: a manifest line; URI: a commit object). Readers
go through the commit log, never a listing of data/, so a shard without a record never counts.
Every write of a shard carries its attempt in its name (`shard_name`): a replica declared dead
that still finishes writes a stray beside the committed shard, never over it; strays go when
the stage ends (`sweep_unreferenced`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from synth_ray.errors import OutputConflictError
from synth_ray.io.commits import COMMITS_DIR, open_commit_log
from synth_ray.io.filesystem import Location, open_location
from synth_ray.io.inputs import InputChangedError, first_change
from synth_ray.io.jsonl_log import append_line, read_records
from synth_ray.io.lease import OutputLease
from synth_ray.io.manifest import MANIFEST_NAME, UnitRecord
from synth_ray.io.shards import write_shard_atomic
from synth_ray.io.vectors import table_vectors
from synth_ray.stats import UnitStats

JOB_FILE = "_job.json"
RUNS_FILE = "_runs.jsonl"
RUNS_DIR = "_runs"  # URI outputs: one object per run
STATS_FILE = "stats.json"
DRIVER_STATS_FILE = "_driver_stats.json"  # rows a method's driver decided outside any unit
DATA_DIR = "data"
ERRORS_DIR = "errors"
DROPPED_DIR = "dropped"  # output.keep_dropped: the rows methods dropped, with their completion
EMBEDDINGS_DIR = "embeddings"
DIVERSITY_DIR = "_diversity"
STAGING_DIR = "_staging"  # diversity-filtered slices, written before the unit is decided

ERROR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("source_id", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("error", pa.string()),
        pa.field("unit_index", pa.int32()),
    ]
)

DROPPED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("source_id", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("filter", pa.string()),
        pa.field("completion", pa.string()),
        pa.field("unit_index", pa.int32()),
    ]
)

STAGES_DIR = "stages"  # multi-round methods: one sub-store per stage
PROGRESS_FILE = "_progress.json"  # the latest sample of the running stage (runtime/timeline.py)
TIMELINE_DIR = "_timeline"  # every sample, one file per run of each stage
CARD_FILE = "README.md"  # the dataset card (dataset/card.py)
REPORT_DIR = "report"  # the run report (dataset/report.py)
PLANS_DIR = "_plans"  # stages' plans over the input files (runtime/plan_cache.py)
_OWNED = (
    JOB_FILE,
    MANIFEST_NAME,
    COMMITS_DIR,
    RUNS_FILE,
    RUNS_DIR,
    STATS_FILE,
    DRIVER_STATS_FILE,
    DATA_DIR,
    ERRORS_DIR,
    STAGES_DIR,
    EMBEDDINGS_DIR,
    DIVERSITY_DIR,
    STAGING_DIR,
    PROGRESS_FILE,
    TIMELINE_DIR,
    CARD_FILE,
    REPORT_DIR,
    PLANS_DIR,
    DROPPED_DIR,
)
# the dataset card's own config names: a split cannot take them either
_CARD_CONFIGS = ("default", ERRORS_DIR, DROPPED_DIR)
_SPLIT_NAME = re.compile(r"[a-z][a-z0-9_]*")


def check_split_name(name: str) -> None:
    """Raise ValueError unless `name` can name a split of kept rows (`Kept(row, split=...)`):
    a lowercase identifier, since it becomes the output's folder `<name>/` and a dataset-card
    config, and none of the folders or configs the output already has (data, errors,
    dropped, embeddings, stages, report, default)."""
    reserved = sorted({n for n in (*_OWNED, *_CARD_CONFIGS) if _SPLIT_NAME.fullmatch(n)})
    if not isinstance(name, str) or not _SPLIT_NAME.fullmatch(name):
        raise ValueError(f"split {name!r}: a lowercase identifier ([a-z][a-z0-9_]*)")
    if name in reserved:
        raise ValueError(f"split {name!r}: reserved (not one of {', '.join(reserved)})")


def shard_name(
    stage: str, unit_index: int, span: tuple[int, int] | None = None, attempt: str = ""
) -> str:
    """`[stage-]part-NNNNNN[-SSSSSS-EEEEEE][-ATTEMPT].parquet`. `span` (first, end) rows
    within the unit name one slice of a unit generated in slices; `attempt` (`new_attempt`:
    the run id and a nonce) makes every write of a slice a file of its own, so a late writer
    (a replica declared dead that still finishes) never replaces a committed shard: the
    commit record names the attempt that counted, and the late file is a stray."""
    suffix = f"-{span[0]:06d}-{span[1]:06d}" if span is not None else ""
    tag = f"-{attempt}" if attempt else ""
    return f"{stage + '-' if stage else ''}part-{unit_index:06d}{suffix}{tag}.parquet"


def new_attempt(run_id: str) -> str:
    """A tag no other write of any run shares: `<run id>-<6 hex>` (the nonce alone when the
    run has no id: a store used outside `run_job`)."""
    nonce = uuid.uuid4().hex[:6]
    return f"{run_id}-{nonce}" if run_id else nonce


_COMMITTING = threading.RLock()  # stages running at once share folders


def _in_turn(method: Any) -> Any:
    """Run a write to the folder's records under the process's one lock: stages running at
    once (runtime/streaming.py) write into shared folders (commits, drops, runs, stats)."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _COMMITTING:
            return method(self, *args, **kwargs)

    return locked


class OutputStore:
    def __init__(self, path: str | Path | Location) -> None:
        """`path`: a folder, a URI (`s3://bucket/run1`), or a Location; a URI pyarrow cannot
        open is a one-line ConfigError naming output.path."""
        self.location = path if isinstance(path, Location) else open_location(path)
        self.commits = open_commit_log(self.location)
        # the run's hold on the output (io/lease.py), set by run_job: checked before a commit
        self.lease: OutputLease | None = None

    @property
    def root(self) -> Path:
        """The local folder; a URI output has none (use `location`, `child`, `read_json`)."""
        if self.location.local is None:
            raise TypeError(f"output {self.location.uri} is a URI, not a local folder")
        return self.location.local

    def child(self, name: str) -> OutputStore:
        """The store in a sub-folder (a multi-round method's `stages/`), under the same lease."""
        child = OutputStore(self.location.child(name))
        child.lease = self.lease
        return child

    def read_json(self, name: str) -> Any:
        """A small JSON file of this folder; None when absent or torn (a killed file:// PUT)."""
        data = self.location.read_bytes(name)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    def read_job(self) -> dict[str, Any] | None:
        return self.read_json(JOB_FILE)

    def prepare(
        self,
        fingerprint: str,
        config: dict[str, Any],
        overwrite: bool,
        inputs: list[list[Any]] | None = None,
    ) -> None:
        """Claim the folder for this job; refuse another job's output unless `overwrite`.
        `inputs`, the input files' identity ((name, size, digest) lists: `identify_inputs`),
        is recorded in _job.json for later runs to compare with (`check_recorded_inputs`); a
        different one replaces it (the caller checked it, or was told to re-plan)."""
        loc = self.location
        if loc.kind() == "file":
            raise OutputConflictError(f"output.path {loc.uri}: exists and is not a folder")
        job = self.read_job()
        owned_by_other = (job is not None and job.get("fingerprint") != fingerprint) or (
            job is None and self.commits.has_commits()
        )
        if owned_by_other and not overwrite:
            method = (job or {}).get("config", {}).get("method", "unknown")
            raise OutputConflictError(
                f"output.path {loc.uri}: holds output of a different config (method {method}, "
                f"fingerprint {(job or {}).get('fingerprint')} != {fingerprint}); "
                "rerun with --overwrite to replace it, or choose another output.path"
            )
        if overwrite:  # with the folders of the old job's splits its records name
            splits = {split for r in self.committed().values() for split in r.split_shards}
            for name in (*_OWNED, *sorted(splits)):
                loc.delete(name)
            self.commits.forget()
        loc.make_dir()
        loc.sweep_temp_files()
        new_inputs = inputs is not None and (job or {}).get("inputs") != inputs
        if job is None or overwrite or new_inputs:
            created = time.time() if job is None or overwrite else job.get("created")
            payload = {"fingerprint": fingerprint, "config": config, "created": created}
            if inputs is not None:
                payload["inputs"] = inputs
            loc.write_bytes_atomic(JOB_FILE, json.dumps(payload, indent=2, default=str).encode())

    def check_recorded_inputs(self, fingerprint: str, path: str, inputs: list[list[Any]]) -> None:
        """Raise InputChangedError naming the first input file that differs (appeared, gone,
        another size or sampled bytes: `identify_inputs`) from what the output's earlier runs
        planned with: a resume must not mix units of two inputs. Outputs of another job, or
        with no snapshot recorded, pass."""
        job = self.read_job()
        if not job or job.get("fingerprint") != fingerprint:
            return
        recorded = job.get("inputs")
        if not isinstance(recorded, list):
            return
        change = first_change(recorded, inputs, "the output's last run planned")
        if change is not None:
            raise InputChangedError(
                f"input.path {path}: {change}; rerun with --replan to keep the committed "
                "units whose rows still match and generate the rest, or with --overwrite to "
                "start over"
            )

    def committed(self, stage: str | None = None) -> dict[str, UnitRecord]:
        """Committed units by id; only those of `stage` when it is given."""
        records = self.commits.read()
        if stage is None:
            return records
        return {k: r for k, r in records.items() if r.stage == stage}

    def write_data_shard(self, name: str, rows: list[dict[str, Any]], schema: pa.Schema) -> str:
        """Write `data/<name>` (always, possibly empty); returns its name. Nothing is
        committed until a record names it (and the unit's error, dropped and split shards,
        written under the same `name`: runtime/slice_worker.py `write_beside_data`)."""
        data_shard = f"{DATA_DIR}/{name}"
        self._write_shard(data_shard, pa.Table.from_pylist(rows, schema=schema))
        return data_shard

    def write_error_shard(
        self, name: str, unit_index: int, errors: list[dict[str, Any]]
    ) -> str | None:
        """Write `errors/<name>` when there are error rows; returns its name (None if none)."""
        if not errors:
            return None
        error_shard = f"{ERRORS_DIR}/{name}"
        table = pa.Table.from_pylist(
            [{**e, "unit_index": unit_index} for e in errors], schema=ERROR_SCHEMA
        )
        self._write_shard(error_shard, table)
        return error_shard

    def write_dropped_shard(
        self, name: str, unit_index: int, stage: str, dropped: list[dict[str, Any]]
    ) -> str | None:
        """Write `dropped/<name>` when there are dropped rows (output.keep_dropped: `id`,
        `source_id`, `filter`, `completion` each, `stage` added); returns its name (None if
        none)."""
        if not dropped:
            return None
        shard = f"{DROPPED_DIR}/{name}"
        rows = [{**d, "stage": stage, "unit_index": unit_index} for d in dropped]
        self._write_shard(shard, pa.Table.from_pylist(rows, schema=DROPPED_SCHEMA))
        return shard

    def write_split_shards(
        self, name: str, splits: dict[str, list[dict[str, Any]]], schema: pa.Schema
    ) -> dict[str, str]:
        """Write `<split>/<name>` for every split in `splits`, an empty one too (so each
        declared split is readable, with its schema, even when no row went there); returns
        split -> shard name."""
        shards = {}
        for split, rows in splits.items():
            shards[split] = f"{split}/{name}"
            self._write_shard(shards[split], pa.Table.from_pylist(rows, schema=schema))
        return shards

    def write_table(self, name: str, table: pa.Table) -> None:
        """Write any table under `name` (a temp name and rename locally, one PUT on a URI)."""
        self._write_shard(name, table)

    def commit(self, record: UnitRecord) -> None:
        """Commit a unit whose shards the generators wrote: call only once all are written.
        Raises LeaseLost, committing nothing, once another run has taken the output over."""
        if not UnitStats.from_dict(record.stats).is_balanced():
            raise AssertionError(f"unit {record.unit_index}: row accounting does not balance")
        with _COMMITTING:  # stages running at once (runtime/streaming.py) commit in turn
            if self.lease is not None:  # and which run committed it: an audit trail
                self.lease.check()
                record = dataclasses.replace(record, run_id=self.lease.run_id)
            self.commits.append(record)

    @property
    def run_id(self) -> str:
        """The id of the run holding this output (empty outside `run_job`)."""
        return self.lease.run_id if self.lease is not None else ""

    @_in_turn
    def drop_units(self, records: list[UnitRecord]) -> None:
        """Uncommit units whose input rows changed (a re-plan on purpose): their records go
        first, then their shards, so a kill in between leaves strays, never a record naming a
        missing shard."""
        if self.lease is not None:
            self.lease.check()
        self.commits.drop({r.unit_id for r in records})
        for record in records:
            for shard in record.all_shards():
                self.location.delete(shard)

    def sweep_unreferenced(self, stage: str, splits: tuple[str, ...] = ()) -> int:
        """Delete `stage`'s data, error, dropped and split shards (`splits`: the stage's
        method's, plus any a record names) that no commit record names, and its staged rows,
        so a plain listing of data/ holds committed rows only; returns how many went. Call
        when the stage has committed every unit.

        What it deletes is provably nobody's live work: the lease is checked first, so this
        run is the output's only writer; a stray is then this run's own (a slice's failed or
        late attempt: every attempt writes a name of its own) or a run's that held the output
        before it (killed, or fenced off: its heartbeat went stale and its next lease check
        stops it). A fenced run that still appends a record names a unit this run committed
        already, and a unit's first record is the one that counts (manifest.py), so no shard
        a reader follows is ever deleted."""
        if self.lease is not None:  # another run's uncommitted shards are not strays
            self.lease.check()
        named: set[str] = set()
        folders = [DATA_DIR, ERRORS_DIR, STAGING_DIR, EMBEDDINGS_DIR, DROPPED_DIR, *splits]
        for record in self.committed(stage).values():
            named.update(record.all_shards())
            folders += [s for s in record.split_shards if s not in folders]
        prefix = f"{stage}-part-" if stage else "part-"
        removed = 0
        for folder in folders:
            for file in self.location.listdir(folder):
                if file.startswith(prefix) and f"{folder}/{file}" not in named:
                    self.location.delete(f"{folder}/{file}")
                    removed += 1
        return removed

    def _write_shard(self, name: str, table: pa.Table) -> None:
        """Local: temp, fsync, rename (`write_shard_atomic`); URI: one PUT to the final name."""
        if self.location.local is not None:
            write_shard_atomic(table, self.location.local / name)
        else:
            self.location.write_table_atomic(name, table)

    @_in_turn
    def record_run(self, run: dict[str, Any]) -> None:
        line = json.dumps(run, sort_keys=True)
        if self.location.local is None:  # no append on object stores: one object per run
            name = f"{RUNS_DIR}/run-{time.time_ns():020d}-{os.getpid()}.json"
            self.location.write_bytes_atomic(name, (line + "\n").encode())
            return
        append_line(self.location.local / RUNS_FILE, line)

    def runs(self) -> list[dict[str, Any]]:
        if self.location.local is None:
            found = [self.read_json(f"{RUNS_DIR}/{n}") for n in self.location.listdir(RUNS_DIR)]
            return [run for run in found if isinstance(run, dict)]
        return read_records(self.location.local / RUNS_FILE)  # a torn tail is skipped

    def totals(self, stage: str | None = None) -> UnitStats:
        total = UnitStats()
        for record in self.committed(stage).values():
            total.merge(UnitStats.from_dict(record.stats))
        return total

    def driver_stats(self) -> UnitStats | None:
        data = self.read_json(DRIVER_STATS_FILE)
        return UnitStats.from_dict(data) if data is not None else None

    def all_totals(self) -> UnitStats:
        """Committed units plus the driver's own decisions: what every reader should report."""
        total = self.totals()
        extra = self.driver_stats()
        if extra is not None:
            total.merge(extra)
        return total

    @_in_turn
    def write_stats(
        self,
        units_total: int | None = None,
        extra: UnitStats | None = None,
        sections: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Rewrite stats.json from the commit log and the run log; returns what it wrote.

        `extra` (kept in _driver_stats.json for later readers) adds rows a method's driver
        decided on outside any unit (Self-Instruct's pool filters, Evol-Instruct's judge), so
        the accounting covers them; `sections` adds method-specific figures."""
        if self.lease is not None:  # the writer: what it committed goes into a segment
            self.commits.checkpoint()
        committed = self.committed()
        runs = self.runs()
        if extra is not None:
            self.location.write_bytes_atomic(
                DRIVER_STATS_FILE, json.dumps(extra.to_dict()).encode()
            )
        totals = self.all_totals()
        stats: dict[str, Any] = {
            "units_committed": len(committed),
            **totals.to_dict(),
            "generation_wall_s": round(sum(r.get("generation_wall_s", 0.0) for r in runs), 3),
            "runs": len(runs),
            "requests_resent": sum(r.get("requests_resent", 0) for r in runs),
            "replicas_stalled": sum(r.get("replicas_stalled", 0) for r in runs),
        }
        stalls = [reason for r in runs for reason in r.get("stalls", [])]
        if stalls:
            stats["last_stall"] = stalls[-1]
        if units_total is not None:
            stats["units_total"] = units_total
        engine_runs = [r for r in runs if "engine_dtype" in r]
        if engine_runs:  # the latest run that started an engine says what it ran
            stats["engine_dtype"] = engine_runs[-1]["engine_dtype"]
            stats["engine_dtype_reason"] = engine_runs[-1].get("engine_dtype_reason", "")
        stats["accounted"] = stats["rows_in"] == (
            stats["rows_out"] + stats["rows_dropped"] + stats["rows_errored"]
        )
        stats.update(sections or {})
        self.location.write_bytes_atomic(STATS_FILE, json.dumps(stats, indent=2).encode())
        return stats

    @_in_turn
    def add_stats_sections(self, sections: dict[str, Any]) -> dict[str, Any]:
        """Add `sections` to the stats.json a method wrote; returns the whole."""
        stats = self.read_json(STATS_FILE) or {}
        stats.update(sections)
        self.location.write_bytes_atomic(STATS_FILE, json.dumps(stats, indent=2).encode())
        return stats

    def rows(self, stage: str | None = None, errors: bool = False) -> list[dict[str, Any]]:
        """Committed rows (or error rows) in (stage, unit) order, candidate order within a unit:
        what a later stage of a multi-round method reads as its input."""
        records = sorted(self.committed(stage).values(), key=lambda r: (r.stage, r.unit_index))
        shards = [s for r in records for s in (r.error_shards() if errors else r.data_shards())]
        return [row for s in shards for row in self.location.read_table(s).to_pylist()]

    def data_tables(
        self, stage: str | None = None, columns: list[str] | None = None, split: str | None = None
    ) -> Iterator[pa.Table]:
        """The committed data shards as tables (only `columns`, when given), in (stage, unit)
        order, read one at a time; with `split`, the shards of that named split instead."""
        records = sorted(self.committed(stage).values(), key=lambda r: (r.stage, r.unit_index))
        for record in records:
            shards = record.data_shards() if split is None else record.split_shards.get(split, [])
            for shard in shards:
                yield self.location.read_table(shard, columns=columns)

    def committed_vectors(self, stage: str = "") -> list[np.ndarray]:
        """The kept rows' vectors of each committed unit of `stage`, in unit order."""
        records = sorted(self.committed(stage).values(), key=lambda r: r.unit_index)
        return [
            table_vectors(self.location.read_table(r.embedding_shard))
            for r in records
            if r.embedding_shard
        ]

    def data_files(self, stage: str | None = None) -> list[Path] | list[str]:
        """Committed data shards in (stage, unit) order: what a reader should read. Paths for
        a local folder, URIs for a URI output (`pq.read_table(uri)` opens them)."""
        records = sorted(self.committed(stage).values(), key=lambda r: (r.stage, r.unit_index))
        return [self.location.file_ref(s) for r in records for s in r.data_shards()]  # type: ignore[return-value]
