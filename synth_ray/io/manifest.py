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
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from synth_ray.io.storage_errors import naming

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
        """Committed units by unit id."""
        records: dict[str, UnitRecord] = {}
        if not self.path.exists():
            return records
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # torn final append: that unit was never committed
                record = parse_record(line)
                if record is not None:
                    records[record.unit_id] = record
        return records

    def has_commits(self) -> bool:
        return self.path.exists()

    def forget(self) -> None:
        """Nothing cached here: every `read` reads the file."""

    def append(self, record: UnitRecord) -> None:
        """Commit a unit: one line, flushed and fsync'd before this returns."""
        with naming(self.path):  # a full disk may leave a torn line: cut by the next append
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._drop_torn_tail()
            line = record_json(record) + "\n"
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())

    def _drop_torn_tail(self) -> None:
        """Cut a partial last line so the next append starts on a line of its own."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return
            fh.seek(0)
            data = fh.read()
            fh.truncate(data.rfind(b"\n") + 1)
            fh.flush()
            os.fsync(fh.fileno())
