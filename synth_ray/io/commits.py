"""Commit objects: how a unit is committed on a URI output, where there is no rename or append.

    python -c "from synth_ray.io.commits import CommitObjects; from synth_ray.io.filesystem import open_location as o; print(CommitObjects(o('file:///tmp/x')).read())"

A unit's shards are PUT straight to their final, deterministic names; then one small JSON
object, `_commits/<stage>-unit-NNNNNN.json` (`unit-NNNNNN.json` without a stage) holding its
UnitRecord, is PUT. That second PUT is the commit point:
- a unit is committed iff its commit object exists and parses into a record whose name matches;
- a run killed before it leaves shards without a commit object: readers ignore them (they read
  only the shards a record names) and the rerun rewrites the same names, then commits;
- a run killed after it resumes with that unit skipped.
A parsed commit object is never rewritten (committed units are skipped), so `read` caches them
and only fetches names it has not parsed yet; `forget` drops the cache after an overwrite.
`open_commit_log` picks this for a URI location and the JSONL manifest for a local folder.
"""

from __future__ import annotations

from typing import Protocol

from synth_ray.io.filesystem import Location
from synth_ray.io.manifest import Manifest, UnitRecord, parse_record, record_json

COMMITS_DIR = "_commits"


class CommitLog(Protocol):
    def read(self) -> dict[str, UnitRecord]: ...

    def append(self, record: UnitRecord) -> None: ...

    def has_commits(self) -> bool: ...

    def drop(self, unit_ids: set[str]) -> None: ...

    def forget(self) -> None: ...


def commit_object_name(record: UnitRecord) -> str:
    return f"{record.stage + '-' if record.stage else ''}unit-{record.unit_index:06d}.json"


class CommitObjects:
    """The commit log of a URI output: one object per committed unit under `_commits/`."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self._parsed: dict[str, UnitRecord] = {}

    def read(self) -> dict[str, UnitRecord]:
        """Committed units by unit id, in object-name order (stage, then unit index)."""
        records: dict[str, UnitRecord] = {}
        for name in self.location.listdir(COMMITS_DIR):
            record = self._parsed.get(name)
            if record is None and name.endswith(".json"):
                record = parse_record(self.location.read_bytes(f"{COMMITS_DIR}/{name}") or b"")
                if record is None or commit_object_name(record) != name:
                    continue  # torn (a killed write on file://) or foreign: not committed
                self._parsed[name] = record
            if record is not None:
                records[record.unit_id] = record
        return records

    def append(self, record: UnitRecord) -> None:
        """Commit a unit: call only after every shard it names was written. A unit's first
        commit object stays (a later one can only come from a run fenced off after its lease
        was taken over, see manifest.py): checked, then PUT, two steps, since pyarrow's
        filesystems have no conditional create."""
        name = f"{COMMITS_DIR}/{commit_object_name(record)}"
        existing = parse_record(self.location.read_bytes(name) or b"")
        if existing is not None and existing.unit_id == record.unit_id:
            return
        self.location.write_bytes_atomic(name, (record_json(record) + "\n").encode())

    def has_commits(self) -> bool:
        return bool(self.location.listdir(COMMITS_DIR))

    def drop(self, unit_ids: set[str]) -> None:
        """Take units out of the log (a re-plan whose input changed under them)."""
        for record in list(self.read().values()):
            if record.unit_id in unit_ids:
                self.location.delete(f"{COMMITS_DIR}/{commit_object_name(record)}")
        self._parsed.clear()

    def forget(self) -> None:
        self._parsed.clear()


def open_commit_log(location: Location) -> CommitLog:
    """The JSONL manifest in a local folder, commit objects on a URI."""
    if location.local is not None:
        return Manifest(location.local)
    return CommitObjects(location)
