"""Scan the input for planning, one part at a time, where the part can be read.

    python -m pytest tests/test_plan_scan.py

Planning needs, for every input row in order: its source id (what unit ids hash), its
estimated output rows (where units are cut) and where it starts (each unit's seek). A part
is one Parquet or source file, or a byte range of a JSONL file cut at line starts; `scan_part`
reads one and returns those facts as arrays, so whoever plans (plan.py's `plan_scanned`)
never parses a row. The runtime runs parts as Ray tasks beside the data
(runtime/plan_tasks.py); a small input is scanned in-process with the same function.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth_ray.errors import InputError
from synth_ray.io.inputs import (
    JSONL_SUFFIXES,
    Document,
    InputChangedError,
    InputSpec,
    file_documents,
    input_name,
)

JSONL_PART_BYTES = 128 << 20  # a JSONL file larger than this is read in several parts
_BLANK_LINE = re.compile(rb"(?m)^[ \t\r\x0b\x0c]*\n")  # what bytes.strip() leaves empty
_COUNT_CHUNK = 16 << 20


@dataclass(frozen=True)
class InputPart:
    """Rows of input file number `file_index` (`path`, `size` bytes when planned). A JSONL
    part holds the lines starting in [start, end) bytes, its first being the file's row
    `row` on physical line `line`; other files are one part each."""

    file_index: int
    path: str
    name: str
    size: int
    start: int = 0
    end: int | None = None
    row: int = 0
    line: int = 1


@dataclass
class PartScan:
    """What planning needs of a part's rows, as arrays (one entry per row, in order)."""

    part: InputPart
    estimated: np.ndarray  # int64: the method's estimated output rows
    ids: bytes  # every source id UTF-8 encoded and followed by 0x1f: what unit ids hash
    id_ends: np.ndarray  # int64: where each row's id (with its 0x1f) ends in `ids`
    id_hashes: np.ndarray | None  # uint64 hashes of the ids, when they must be unique
    offsets: np.ndarray  # int64: byte where the row's line starts (JSONL), else 0
    lines: np.ndarray  # int64: the row's physical line (JSONL), else 0 (Parquet) or 1

    @property
    def rows(self) -> int:
        return len(self.estimated)


def id_hash(source_id: str) -> int:
    """A source id's 8-byte hash, what the repeated-id check compares."""
    return _hash(source_id.encode())


def _hash(encoded: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "little")


def jsonl_cuts(path: Path, size: int, part_bytes: int) -> list[int]:
    """Byte offsets where a JSONL file's parts start: about every `part_bytes`, each moved on
    to the next line start. Reads one line per cut, never a row's worth of parsing."""
    cuts = [0]
    with open(path, "rb") as fh:
        for target in range(part_bytes, size, part_bytes):
            if target <= cuts[-1]:
                continue
            fh.seek(target - 1)
            fh.readline()  # the rest of the line holding byte target - 1
            at = fh.tell()
            if at < size and at > cuts[-1]:
                cuts.append(at)
    return cuts


def count_jsonl(path: str, start: int, end: int) -> tuple[int, int]:
    """(rows, physical lines) of the JSONL lines starting in [start, end): what the parts
    after it need to number their rows. Counts bytes; parses nothing."""
    rows = lines = 0
    tail = b""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below; an error here is one line
    except OSError as err:
        raise _unreadable(path, Path(path).name, err) from None
    with fh:
        fh.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = fh.read(min(_COUNT_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            complete, tail = data[:cut], data[cut:]
            newlines = complete.count(b"\n")
            lines += newlines
            rows += newlines - len(_BLANK_LINE.findall(complete))
    if tail:
        lines += 1
        rows += 1 if tail.strip() else 0
    return rows, lines


def _unreadable(where: str, name: str, err: OSError) -> InputError:
    """A part that cannot be read on the node a planning task runs on, as one line."""
    return InputError(
        f"input.path {where}: {name} cannot be read on node {socket.gethostname()} "
        f"({type(err).__name__}); the input must be on a filesystem every node shares"
    )


def input_parts(
    spec: InputSpec, root: Path, files: list[Path], part_bytes: int | None = None
) -> list[InputPart]:
    """The parts of the input in read order (JSONL files cut about every `part_bytes`, by
    default JSONL_PART_BYTES). JSONL parts after a file's first still need their `row` and
    `line` (`count_jsonl` of the parts before them, then `numbered`)."""
    part_bytes = part_bytes or JSONL_PART_BYTES
    sizes = dict(spec.files or ())
    parts = []
    for index, file in enumerate(files):
        name = input_name(root, file)
        size = int(sizes.get(name, file.stat().st_size))
        if file.suffix.lower() in JSONL_SUFFIXES and size > part_bytes:
            cuts = jsonl_cuts(file, size, part_bytes)
            for start, end in zip(cuts, [*cuts[1:], size], strict=True):
                parts.append(InputPart(index, str(file), name, size, start, end))
        else:
            parts.append(InputPart(index, str(file), name, size))
    return parts


def numbered(parts: list[InputPart], counts: dict[int, tuple[int, int]]) -> list[InputPart]:
    """`parts` with each JSONL part's first row and line set from the (rows, lines) counts of
    the parts before it in its file (`counts` by position in `parts`)."""
    out: list[InputPart] = []
    for position, part in enumerate(parts):
        if part.start and out and out[-1].file_index == part.file_index:
            rows, lines = counts[position - 1]
            before = out[-1]
            part = InputPart(
                part.file_index,
                part.path,
                part.name,
                part.size,
                part.start,
                part.end,
                before.row + rows,
                before.line + lines,
            )
        out.append(part)
    return out


def scan_part(
    spec: InputSpec, part: InputPart, estimate: Callable[[Document], int], hash_ids: bool
) -> PartScan:
    """Read one part's rows (as the slices will: inputs.file_documents) into a PartScan.
    Fails with InputChangedError when the file's size is no longer the planned one."""
    path = Path(part.path)
    try:
        size = os.stat(path).st_size
    except OSError as err:
        raise _unreadable(spec.path, part.name, err) from None
    if size != part.size:
        raise InputChangedError(
            f"input.path {spec.path}: {part.name} changed after the job planned (size "
            f"{part.size} -> {size} bytes); rerun once the input is final"
        )
    estimated: list[int] = []
    encoded: list[bytes] = []
    offsets: list[int] = []
    lines: list[int] = []
    docs = file_documents(
        spec, part.name, part.file_index, path, 0, part.row, part.start, part.line, part.end
    )
    for doc in docs:
        estimated.append(estimate(doc))
        encoded.append(doc.source_id.encode())
        assert doc.seek is not None
        offsets.append(doc.seek.offset)
        lines.append(doc.seek.line)
    ends = np.cumsum(np.fromiter((len(e) + 1 for e in encoded), np.int64, len(encoded)))
    hashes = np.fromiter(map(_hash, encoded), np.uint64, len(encoded)) if hash_ids else None
    return PartScan(
        part,
        np.asarray(estimated, np.int64),
        b"\x1f".join(encoded) + (b"\x1f" if encoded else b""),
        ends,
        hashes,
        np.asarray(offsets, np.int64),
        np.asarray(lines, np.int64),
    )
