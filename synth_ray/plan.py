"""Plan: cut the input into deterministic work units, each becoming one committed shard.

    python -c "from synth_ray.plan import plan_units; help(plan_units)"

A unit is a contiguous run of input documents, cut when its estimated output rows reach
`output.rows_per_shard`. Its id hashes the job fingerprint, its position and every source id
in it, so the same config and input always give the same units, and a changed input never
matches an old unit's commit. Planning streams the input once and keeps only the unit bounds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from synth_ray.errors import InputError
from synth_ray.io.inputs import Seek
from synth_ray.methods.base import Method
from synth_ray.methods.stages import DocumentSource


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


def _id_hash(source_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(source_id.encode(), digest_size=8).digest(), "little")


def plan_units(
    docs: DocumentSource,
    method: Method,
    fingerprint: str,
    rows_per_shard: int,
    id_column: str | None = None,
) -> list[WorkUnit]:
    """Units over the documents `docs()` yields. With `id_column`, a repeated id is an
    InputError naming it (found by hashing ids to 8 bytes: ~1 GB per 100M rows)."""
    units: list[WorkUnit] = []
    hasher = hashlib.sha256(fingerprint.encode())
    start, rows, ordinal = 0, 0, 0
    seek: Seek | None = None
    id_hashes: list[int] = []

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
        if id_column is not None:
            id_hashes.append(_id_hash(doc.source_id))
        rows += method.estimate_rows(doc)
        if rows >= rows_per_shard:
            close(ordinal)
    if ordinal > start:
        close(ordinal)
    if id_hashes:
        _check_unique(np.array(id_hashes, dtype=np.uint64), docs, id_column)
    return units


def _check_unique(hashes: np.ndarray, docs: DocumentSource, id_column: str | None) -> None:
    values, counts = np.unique(hashes, return_counts=True)
    if (counts == 1).all():
        return
    repeated = set(values[counts > 1].tolist())
    seen: set[str] = set()
    for doc in docs():  # rare path: find the repeated id's name for the message
        if _id_hash(doc.source_id) in repeated:
            if doc.source_id in seen:
                raise InputError(
                    f"input.id_column {id_column!r}: id {doc.source_id!r} appears more than once"
                )
            seen.add(doc.source_id)
