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
Every SEGMENT_SIZE commits, the committing run copies them into one segment object, so a new
reader (a resume, `status`, the card) of 10^5 units makes ~100 GETs, not 10^5; the objects no
segment covers yet are fetched in parallel.
`open_commit_log` picks this for a URI location and the JSONL manifest for a local folder.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from synth_ray.io.conditional import ObstoreConditional, open_conditional
from synth_ray.io.filesystem import Location
from synth_ray.io.manifest import Manifest, UnitRecord, parse_record, record_json

COMMITS_DIR = "_commits"
SEGMENTS_DIR = f"{COMMITS_DIR}/_segments"
SEGMENT_SIZE = 1000  # commits copied into one segment object
READERS = 32  # parallel GETs of commit objects no segment covers


class CommitLog(Protocol):
    def read(self) -> dict[str, UnitRecord]: ...

    def append(self, record: UnitRecord) -> None: ...

    def has_commits(self) -> bool: ...

    def drop(self, unit_ids: set[str]) -> None: ...

    def checkpoint(self) -> None: ...

    def forget(self) -> None: ...


def commit_object_name(record: UnitRecord) -> str:
    return f"{record.stage + '-' if record.stage else ''}unit-{record.unit_index:06d}.json"


class CommitObjects:
    """The commit log of a URI output: one object per committed unit under `_commits/`, and
    segments (`_commits/_segments/`, one JSONL object per SEGMENT_SIZE commits) that copy
    them, so a reader fetches a few segments and only the objects no segment covers. A
    segment never commits anything: its records count only where their commit object is
    listed, so the object stays the commit point."""

    def __init__(self, location: Location) -> None:
        self.location = location
        # create-only writes on the object stores obstore speaks (io/conditional.py); a file://
        # output keeps the store's own check-then-PUT, like any store pyarrow alone reaches
        cas = open_conditional(location)
        self.cas = cas if isinstance(cas, ObstoreConditional) else None
        self._parsed: dict[str, UnitRecord] = {}
        self._segments_read: set[str] = set()
        self._uncovered: list[UnitRecord] = []  # committed by this process, in no segment yet

    def read(self) -> dict[str, UnitRecord]:
        """Committed units by unit id, in object-name order (stage, then unit index): one
        LIST, a GET per segment not read yet, and parallel GETs of the objects still unknown."""
        names = [n for n in self.location.listdir(COMMITS_DIR) if n.endswith(".json")]
        for segment in self.location.listdir(SEGMENTS_DIR):
            if segment not in self._segments_read:
                data = self.location.read_bytes(f"{SEGMENTS_DIR}/{segment}") or b""
                for line in data.splitlines():
                    record = parse_record(line)
                    if record is not None:
                        self._parsed.setdefault(commit_object_name(record), record)
                self._segments_read.add(segment)
        unknown = [name for name in names if name not in self._parsed]
        with ThreadPoolExecutor(max_workers=READERS) as pool:
            found = pool.map(lambda n: self.location.read_bytes(f"{COMMITS_DIR}/{n}"), unknown)
            for name, data in zip(unknown, found, strict=True):
                record = parse_record(data or b"")
                if record is None or commit_object_name(record) != name:
                    continue  # torn (a killed write on file://) or foreign: not committed
                self._parsed[name] = record
        return {self._parsed[n].unit_id: self._parsed[n] for n in names if n in self._parsed}

    def append(self, record: UnitRecord) -> None:
        """Commit a unit: call only after every shard it names was written. A unit's first
        commit object stays (a later one can only come from a run fenced off after its lease
        was taken over, see manifest.py): a create-only PUT where the store has one, else
        checked, then PUT, two steps (pyarrow's filesystems have no conditional create)."""
        name = f"{COMMITS_DIR}/{commit_object_name(record)}"
        data = (record_json(record) + "\n").encode()
        if self.cas is not None:  # create-only: of two writers, the first one wins
            if not self._create_or_repair(name, data):
                return
        else:
            existing = parse_record(self.location.read_bytes(name) or b"")
            if existing is not None and existing.unit_id == record.unit_id:
                return
            self.location.write_bytes_atomic(name, data)
        self._parsed[commit_object_name(record)] = record
        self._uncovered.append(record)
        if len(self._uncovered) >= SEGMENT_SIZE:
            self.write_segment()

    def _create_or_repair(self, name: str, data: bytes) -> bool:
        """Create the commit object; False when a whole one is there already (the first
        wins). A torn one (a killed write on a store that can tear) is replaced, only in the
        version that was read."""
        assert self.cas is not None
        for _ in range(3):
            if self.cas.create(name, data) is not None:
                return True
            found = self.cas.read(name)
            if found is not None and parse_record(found[0]) is not None:
                return False
            if found is not None and self.cas.swap(name, data, found[1]) is not None:
                return True
        raise OSError(f"{name}: changed by another writer while this run committed it")

    def checkpoint(self) -> None:
        """The records committed since the last segment, into one (a stage's end)."""
        self.write_segment()

    def write_segment(self) -> None:
        """Copy the records this process committed since its last segment into a new one
        (only after their objects exist)."""
        if not self._uncovered:
            return
        lines = "".join(record_json(r) + "\n" for r in self._uncovered)
        name = f"segment-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
        self.location.write_bytes_atomic(f"{SEGMENTS_DIR}/{name}", lines.encode())
        self._segments_read.add(name)
        self._uncovered = []

    def has_commits(self) -> bool:
        return bool(self.location.listdir(COMMITS_DIR))

    def drop(self, unit_ids: set[str]) -> None:
        """Take units out of the log (a re-plan whose input changed under them). The
        segments go too (their records would name objects that may be committed again
        with other units): the objects left are read one by one until the next segment."""
        records = list(self.read().values())
        self.location.delete(SEGMENTS_DIR)  # first: a segment must never outlive its objects
        for record in records:
            if record.unit_id in unit_ids:
                self.location.delete(f"{COMMITS_DIR}/{commit_object_name(record)}")
        self.forget()

    def forget(self) -> None:
        self._parsed.clear()
        self._segments_read.clear()
        self._uncovered = []


def open_commit_log(location: Location) -> CommitLog:
    """The JSONL manifest in a local folder, commit objects on a URI."""
    if location.local is not None:
        return Manifest(location.local)
    return CommitObjects(location)
