"""Plan: cut the input into deterministic work units, each becoming one committed shard.

    python -c "from synth_ray.plan import plan_units; help(plan_units)"

A unit is a contiguous run of input documents, cut when its estimated output rows reach
`output.rows_per_shard`. Its id hashes the job fingerprint, its position and every source id
in it, so the same config and input always give the same units, and a changed input never
matches an old unit's commit. Planning streams the input once and keeps only the unit bounds.
"""

from __future__ import annotations

import hashlib
import tempfile
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth_ray.errors import InputError
from synth_ray.io.input_scan import PartScan, id_hash
from synth_ray.io.inputs import Seek
from synth_ray.methods.base import Method
from synth_ray.methods.stages import DocumentSource

SPILL_AT = 1 << 22  # id hashes held in memory (32 MB) before they go to temporary files


@dataclass(frozen=True)
class WorkUnit:
    index: int
    unit_id: str
    start: int  # first document ordinal
    stop: int  # one past the last
    estimated_rows: int
    plan_key: str = ""  # what its id hashes first (`unit_id_of`): the job's and stage's key
    seek: Seek | None = None  # where its first document starts in the input files


def unit_id_of(plan_key: str, index: int, start: int, stop: int, source_ids: list[str]) -> str:
    """The id `plan_units` gives unit `index` holding documents [start, stop) with these
    source ids: a generator recomputes it from the rows its slice's unit reads, so a unit
    never commits rows other than the planned ones."""
    hasher = hashlib.sha256(plan_key.encode())
    for source_id in source_ids:
        hasher.update(source_id.encode() + b"\x1f")
    hasher.update(f"|{index}:{start}:{stop}".encode())
    return hasher.hexdigest()[:16]


def plan_units(
    docs: DocumentSource,
    method: Method,
    fingerprint: str,
    rows_per_shard: int,
    id_column: str | None = None,
) -> list[WorkUnit]:
    """Units over the documents `docs()` yields. With `id_column`, a repeated id is an
    InputError naming it (found by hashing ids to 8 bytes, in bounded memory: `IdHashes`)."""
    units: list[WorkUnit] = []
    hasher = hashlib.sha256(fingerprint.encode())
    start, rows, ordinal = 0, 0, 0
    seek: Seek | None = None
    id_hashes = IdHashes() if id_column is not None else None

    def close(stop: int) -> None:
        nonlocal hasher, start, rows, seek
        hasher.update(f"|{len(units)}:{start}:{stop}".encode())  # as unit_id_of does
        unit_id = hasher.hexdigest()[:16]
        units.append(WorkUnit(len(units), unit_id, start, stop, rows, fingerprint, seek))
        hasher = hashlib.sha256(fingerprint.encode())
        start, rows, seek = stop, 0, None

    for doc in docs():
        if ordinal == start:
            seek = doc.seek
        ordinal = doc.ordinal + 1
        hasher.update(doc.source_id.encode() + b"\x1f")
        if id_hashes is not None:
            id_hashes.add(id_hash(doc.source_id))
        rows += method.estimate_rows(doc)
        if rows >= rows_per_shard:
            close(ordinal)
    if ordinal > start:
        close(ordinal)
    if id_hashes is not None:
        _check_unique(id_hashes.repeated(), docs, id_column)
    return units


def plan_scanned(
    scans: Iterable[PartScan],
    fingerprint: str,
    rows_per_shard: int,
    limit: int | None = None,
    id_column: str | None = None,
    docs: DocumentSource | None = None,
) -> list[WorkUnit]:
    """The units `plan_units` cuts, from the input's parts scanned in order (io/input_scan.py):
    the same ids, bounds and seeks, but this process touches no row, only arrays; its cost
    is O(units) Python plus vectorized work over the rows. `limit` keeps the first rows only.
    `docs` (the input's documents) is read only to name a repeated id."""
    units: list[WorkUnit] = []
    hasher = hashlib.sha256(fingerprint.encode())
    start, pending, ordinal = 0, 0, 0  # the open unit's first document and rows so far
    seek: Seek | None = None
    id_hashes = IdHashes() if id_column is not None else None
    for scan in scans:
        n = scan.rows if limit is None else min(scan.rows, limit - ordinal)
        if n <= 0:
            if limit is not None and ordinal >= limit:
                break
            continue
        if id_hashes is not None and scan.id_hashes is not None:
            id_hashes.extend(scan.id_hashes[:n])
        cumulative = np.cumsum(scan.estimated[:n])
        ends = scan.id_ends
        position = 0  # the first row of this part not yet in a closed unit
        while position < n:
            if ordinal + position == start:
                part = scan.part
                seek = Seek(
                    start,
                    part.file_index,
                    part.row + position,
                    int(scan.offsets[position]),
                    int(scan.lines[position]),
                )
            before = int(cumulative[position - 1]) if position else 0
            last = int(np.searchsorted(cumulative, before + rows_per_shard - pending))
            first_byte = int(ends[position - 1]) if position else 0
            if last >= n:  # the unit goes on into the next part
                hasher.update(scan.ids[first_byte : int(ends[n - 1])])
                pending += int(cumulative[n - 1]) - before
                break
            hasher.update(scan.ids[first_byte : int(ends[last])])
            stop = ordinal + last + 1
            hasher.update(f"|{len(units)}:{start}:{stop}".encode())  # as unit_id_of does
            rows = pending + int(cumulative[last]) - before
            units.append(
                WorkUnit(len(units), hasher.hexdigest()[:16], start, stop, rows, fingerprint, seek)
            )
            hasher = hashlib.sha256(fingerprint.encode())
            start, pending, seek = stop, 0, None
            position = last + 1
        ordinal += n
    if ordinal > start:
        hasher.update(f"|{len(units)}:{start}:{ordinal}".encode())
        units.append(
            WorkUnit(
                len(units), hasher.hexdigest()[:16], start, ordinal, pending, fingerprint, seek
            )
        )
    if id_hashes is not None:
        repeated = id_hashes.repeated()
        if repeated and docs is not None:
            _check_unique(repeated, docs, id_column)
    return units


def _repeated(hashes: np.ndarray) -> set[int]:
    values, counts = np.unique(hashes, return_counts=True)
    return set(values[counts > 1].tolist())


class IdHashes:
    """Every id's 8-byte hash in bounded memory: an array of up to SPILL_AT hashes, spilled
    by their top byte into 256 temporary files, each checked for repeats alone at the end.
    So a 10^9-row input costs 8 GB of temporary disk and ~64 MB of memory, not 8 GB of it."""

    def __init__(self) -> None:
        self.buffer = array("Q")
        self.folder: tempfile.TemporaryDirectory[str] | None = None

    def add(self, value: int) -> None:
        self.buffer.append(value)
        if len(self.buffer) >= SPILL_AT:
            self._spill()

    def extend(self, values: np.ndarray) -> None:
        values = values.astype(np.uint64)
        for lo in range(0, len(values), SPILL_AT):  # a huge part still spills every SPILL_AT
            self.buffer.frombytes(values[lo : lo + SPILL_AT].tobytes())
            if len(self.buffer) >= SPILL_AT:
                self._spill()

    def _spill(self) -> None:
        if self.folder is None:
            self.folder = tempfile.TemporaryDirectory(prefix="synth-ray-ids-")
        hashes = np.frombuffer(self.buffer, dtype=np.uint64)
        buckets = (hashes >> np.uint64(56)).astype(np.uint8)
        order = np.argsort(buckets, kind="stable")
        hashes, buckets = hashes[order], buckets[order]
        bounds = np.searchsorted(buckets, np.arange(257))
        for bucket in range(256):
            chunk = hashes[bounds[bucket] : bounds[bucket + 1]]
            if len(chunk):
                with open(Path(self.folder.name) / f"{bucket:03d}", "ab") as fh:
                    chunk.tofile(fh)
        self.buffer = array("Q")

    def repeated(self) -> set[int]:
        """The hashes seen more than once (the temporary files go)."""
        if self.folder is None:
            return _repeated(np.frombuffer(self.buffer, dtype=np.uint64))
        self._spill()
        try:
            found: set[int] = set()
            for path in sorted(Path(self.folder.name).iterdir()):
                found |= _repeated(np.fromfile(path, dtype=np.uint64))
            return found
        finally:
            self.folder.cleanup()
            self.folder = None


def _check_unique(repeated: set[int], docs: DocumentSource, id_column: str | None) -> None:
    if not repeated:
        return
    seen: set[str] = set()
    for doc in docs():  # rare path: find the repeated id's name for the message
        if id_hash(doc.source_id) in repeated:
            if doc.source_id in seen:
                raise InputError(
                    f"input.id_column {id_column!r}: id {doc.source_id!r} appears more than "
                    "once (input.id_column: '' derives ids from file name and row number)"
                )
            seen.add(doc.source_id)
