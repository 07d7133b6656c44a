"""The manifest: an append-only JSONL file; a unit is committed once its line is on disk.
This is the commit log of a local output folder; a URI output uses commit objects instead
(commits.py), since object stores cannot append.

    python -c "from synth_ray.io.manifest import Manifest; print(Manifest('out').read())"

Readers and `synth-ray status` trust the manifest, not a listing of the shard folder: a shard
renamed into place by a run that died before appending its line is not committed, and the
rerun rewrites it under the same name. A torn last line (killed mid-append) is ignored.
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

    def data_shards(self) -> list[str]:
        return [self.data_shard, *self.more_data_shards]

    def error_shards(self) -> list[str]:
        return [s for s in (self.error_shard, *self.more_error_shards) if s]


_FIELDS = {f.name for f in fields(UnitRecord)}


def parse_record(text: str | bytes) -> UnitRecord | None:
    """The record in one manifest line or commit object; None when it does not parse (torn).
    Fields a newer writer added are ignored, never a reason to drop the record."""
    try:
        data = json.loads(text)
        return UnitRecord(**{k: v for k, v in data.items() if k in _FIELDS})
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError):
        return None


def record_json(record: UnitRecord) -> str:
    return json.dumps(asdict(record), sort_keys=True)


class Manifest:
    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / MANIFEST_NAME

    def read(self) -> dict[str, UnitRecord]:
        """Committed units by unit id (a torn last line is a unit never committed)."""
        records: dict[str, UnitRecord] = {}
        for line in read_lines(self.path):
            record = parse_record(line)
            if record is not None:
                records[record.unit_id] = record
        return records

    def has_commits(self) -> bool:
        return self.path.exists()

    def forget(self) -> None:
        """Nothing cached here: every `read` reads the file."""

    def append(self, record: UnitRecord) -> None:
        """Commit a unit: one line, fsync'd (and the file's name with its first line) before
        this returns; a torn line a full disk left is cut first (io/jsonl_log.py)."""
        append_line(self.path, record_json(record))
