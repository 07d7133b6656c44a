"""The manifest: an append-only JSONL file; a unit is committed once its line is on disk.
This is the commit log of a local output folder; a URI output uses commit objects instead
(commits.py), since object stores cannot append.

    python -c "from synth_ray.io.manifest import Manifest; print(Manifest('out').read())"

Readers and `synth-ray status` trust the manifest, not a listing of the shard folder: a shard
renamed into place by a run that died before appending its line is not committed (the rerun
writes the unit again, under its own attempt's names). A torn last line (killed mid-append) is
ignored; a unit's first line is the one that counts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from synth_ray.io.jsonl_log import append_line, read_lines

MANIFEST_NAME = "_manifest.jsonl"


@dataclass
class UnitRecord:
    """What a committed unit wrote; `stats` follows `synth_ray.stats.UnitStats.to_dict`."""

    unit_index: int
    unit_id: str
    data_shard: str
    error_shard: str | None
    rows_out: int
    stats: dict[str, Any] = field(default_factory=dict)
    stage: str = ""  # multi-stage methods commit several stages into one folder
    embedding_shard: str | None = None  # the diversity filter's vectors of the kept rows
    # a unit generated in several slices (the end of a job) has one data shard per slice,
    # the first in `data_shard`, the rest here in row order; the same for error shards
    more_data_shards: list[str] = field(default_factory=list)
    more_error_shards: list[str] = field(default_factory=list)
    run_id: str = ""  # the run that committed it (its lease's id, io/lease.py)
    # output.keep_dropped: the dropped rows' shards, one per slice that dropped any, in row
    # order (none for a unit committed while it was off)
    dropped_shards: list[str] = field(default_factory=list)
    # rows the method kept into a named split (`Kept(row, split=...)`): split -> its shards,
    # one per slice in row order, for every split the stage's method declares
    split_shards: dict[str, list[str]] = field(default_factory=dict)

    def data_shards(self) -> list[str]:
        return [self.data_shard, *self.more_data_shards]

    def error_shards(self) -> list[str]:
        return [s for s in (self.error_shard, *self.more_error_shards) if s]

    def all_shards(self) -> list[str]:
        """Every file the record names: what a sweep keeps and an uncommit deletes."""
        embedding = [self.embedding_shard] if self.embedding_shard else []
        splits = [s for shards in self.split_shards.values() for s in shards]
        return [
            *self.data_shards(),
            *self.error_shards(),
            *embedding,
            *self.dropped_shards,
            *splits,
        ]


_FIELDS = {f.name for f in fields(UnitRecord)}


def parse_record(text: str | bytes) -> UnitRecord | None:
    """The record in one manifest line or commit object; None when it does not parse (torn).
    Fields a newer writer added are ignored, never a reason to drop the record."""
    try:
        data = json.loads(text)
        return UnitRecord(**{k: v for k, v in data.items() if k in _FIELDS})
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError):
        return None


def _unit_of(line: str) -> str | None:
    record = parse_record(line)
    return record.unit_id if record is not None else None


def record_json(record: UnitRecord) -> str:
    return json.dumps(asdict(record), sort_keys=True)


class Manifest:
    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / MANIFEST_NAME

    def read(self) -> dict[str, UnitRecord]:
        """Committed units by unit id (a torn last line is a unit never committed). A unit's
        first record is the one that counts: a later one can only come from a run fenced off
        after its lease was taken over (a run skips committed units), whose shards the new
        holder may already have swept."""
        records: dict[str, UnitRecord] = {}
        for line in read_lines(self.path):
            record = parse_record(line)
            if record is not None:
                records.setdefault(record.unit_id, record)
        return records

    def has_commits(self) -> bool:
        return self.path.exists()

    def forget(self) -> None:
        """Nothing cached here: every `read` reads the file."""

    def checkpoint(self) -> None:
        """Nothing to compact: one file, read in one go."""

    def drop(self, unit_ids: set[str]) -> None:
        """Take units out of the log (a re-plan whose input changed under them): the file is
        rewritten without their lines, atomically, so a kill leaves the old log or the new."""
        from synth_ray.io.shards import write_bytes_atomic

        kept = [line for line in read_lines(self.path) if _unit_of(line) not in unit_ids]
        write_bytes_atomic("".join(f"{line}\n" for line in kept).encode(), self.path)

    def append(self, record: UnitRecord) -> None:
        """Commit a unit: one line, fsync'd (and the file's name with its first line) before
        this returns; a torn line a full disk left is cut first (io/jsonl_log.py)."""
        append_line(self.path, record_json(record))
