"""Input discovery, validation and streaming: Parquet and JSONL files, source files, a folder
or a glob.

    python -c "from synth_ray.io.inputs import *; print(list(iter_documents(InputSpec('data.jsonl'))))"

`validate_inputs` runs before any work and raises `InputError` (one line, exit 2) for a missing
path, an unreadable file or a missing column. `iter_documents` then streams rows in a fixed order
(files sorted by path, rows in file order), so planning and execution see the same sequence.
A single bad row (unparsable JSON line, null or non-string text) becomes a `Document` with
`error` set: it is reported in the errors shard and never fails its batch.
Source files (`SOURCE_SUFFIXES`: seed code, as OSS-Instruct reads) are one row per file: its
UTF-8 content, id = its path relative to the input folder; an undecodable, binary or empty file
is an error row. They have no columns, so `input.text_column` is unused and `input.id_column`
must be unset. A folder (or glob) holding any .parquet/.jsonl file is read as data files only;
otherwise as source files (a folder's hidden files and folders are skipped).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synth_ray.errors import InputError

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
SOURCE_SUFFIXES = (
    ".py", ".js", ".ts", ".java", ".c", ".cc", ".cpp", ".h", ".hpp", ".go", ".rs", ".rb", ".php",
    ".cs", ".swift", ".kt", ".scala", ".sh", ".lua", ".r", ".jl", ".sql",
)  # fmt: skip
_BATCH_ROWS = 4096


@dataclass(frozen=True)
class InputSpec:
    path: str
    text_column: str = "text"
    id_column: str | None = None
    limit: int | None = None
    extra_columns: tuple[str, ...] = ()  # read too, into Document.extra (e.g. a reference answer)
    # the input files as planned (name under the input's root, size): reads check them
    files: tuple[tuple[str, int], ...] | None = None


class InputChangedError(InputError):
    """An input file grew, shrank, appeared or vanished after the job planned its units."""


def _names_and_sizes(root: Path, files: list[Path]) -> list[tuple[str, int]]:
    return [
        (f.relative_to(root).as_posix() if f.is_relative_to(root) else str(f), f.stat().st_size)
        for f in files
    ]


def snapshot_inputs(spec: InputSpec) -> InputSpec:
    """`spec` with its input files as they are now (name and size). Every later read of it,
    planning and each generator's slices alike, first checks the files still match, so a file
    added to the folder, or a JSONL still being written, can never shift a unit's rows into
    another unit: the read fails with one line naming the file instead. Sizes, not mtimes:
    a cluster job's input is unpacked again on every node, with new mtimes."""
    root, files = resolve_input_files(spec.path)
    return dataclasses.replace(spec, files=tuple(_names_and_sizes(root, files)))


_SAMPLE_BYTES = 4096


def identify_inputs(spec: InputSpec) -> list[list[Any]]:
    """Each input file's name, size and a digest of three 4 KiB windows of its bytes (start,
    middle, end): what a later run compares to tell the input it planned with, reading a
    few KiB per file, never a row. A rewrite at the same size that changes none of those
    bytes passes unseen here (a generator's check of its unit's ids still catches it for the
    units it generates)."""
    root, files = resolve_input_files(spec.path)
    identity = []
    for name, size in _names_and_sizes(root, files):
        path = root / name if not Path(name).is_absolute() else Path(name)
        digest = hashlib.blake2b(digest_size=8)
        with open(path, "rb") as fh:
            for offset in sorted(
                {0, max(0, size // 2 - _SAMPLE_BYTES // 2), max(0, size - _SAMPLE_BYTES)}
            ):
                fh.seek(offset)
                digest.update(fh.read(_SAMPLE_BYTES))
        identity.append([name, size, digest.hexdigest()])
    return identity


def check_snapshot(spec: InputSpec, root: Path, files: list[Path]) -> None:
    """Raise InputChangedError naming the first file that differs from `spec.files`."""
    if spec.files is None:
        return
    change = first_change(spec.files, _names_and_sizes(root, files), "the job planned")
    if change is not None:
        raise InputChangedError(
            f"input.path {spec.path}: {change}; its rows no longer match the planned units; "
            "rerun once the input is final"
        )


def first_change(
    before: Iterable[Sequence[Any]], now: Iterable[Sequence[Any]], since: str
) -> str | None:
    """How the first differing file of two snapshots ((name, size[, digest]) lists) changed,
    as a phrase (`docs.jsonl changed after {since} (size A -> B bytes)`); None when they
    match. Digests are compared where both snapshots have one (`identify_inputs`)."""
    planned = {str(entry[0]): list(entry[1:]) for entry in before}
    current = {str(entry[0]): list(entry[1:]) for entry in now}
    for name in planned:
        if name not in current:
            return f"{name} is gone since {since}"
    for name, (size, *digest) in current.items():
        if name not in planned:
            return f"{name} appeared after {since}"
        old_size, *old_digest = planned[name]
        if size != old_size:
            return f"{name} changed after {since} (size {old_size} -> {size} bytes)"
        if digest and old_digest and digest != old_digest:
            return f"{name} changed after {since} (same size, other bytes)"
    return None


@dataclass(frozen=True)
class Document:
    """One input row. `error` is set (and `text` may be None) when the row itself is bad."""

    ordinal: int
    source_id: str
    text: str | None
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    # where it starts in the input (`Seek`); None for documents not read from input files
    seek: Seek | None = None


@dataclass(frozen=True)
class Seek:
    """Where document `ordinal` starts: file `file_index` of the input's files (in read
    order), its row `row` (non-blank lines of a JSONL file), at byte `offset` of a JSONL
    file, physical line `line` (1-based, blank lines counted). A reader given one starts
    there instead of scanning every file and line before it."""

    ordinal: int
    file_index: int
    row: int
    offset: int = 0
    line: int = 1


def absolute_path(path: str) -> str:
    """A local path made absolute now: connecting to Ray as a submitted job's driver changes
    the working directory, and inputs are read after that. URIs are left as they are."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def _is_input_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in PARQUET_SUFFIXES + JSONL_SUFFIXES


def _is_source_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SOURCE_SUFFIXES


def _data_or_source(paths: list[Path]) -> list[Path]:
    """The data files among `paths`; where there are none, the source files. A `.json` file
    beside source files is a project's config (package.json, tsconfig.json), not data: it
    makes a folder data only with no source file in it."""
    data = [p for p in paths if _is_input_file(p)]
    source = [p for p in paths if _is_source_file(p)]
    if source and all(p.suffix.lower() == ".json" for p in data):
        return source
    return data or source


def _hidden(relative: Path) -> bool:
    """A dot-file or anything in a dot-folder (.git/, temp files): never an input."""
    return any(part.startswith(".") for part in relative.parts)


def resolve_input_files(path: str) -> tuple[Path, list[Path]]:
    """Return (root used for relative names, sorted input files). Raises InputError if none."""
    candidate = Path(path).expanduser()
    if candidate.is_file():
        if not (_is_input_file(candidate) or _is_source_file(candidate)):
            raise InputError(
                f"input.path {path}: expected a .parquet or .jsonl file or a source file, got "
                f"{candidate.suffix or 'no suffix'}"
            )
        return candidate.parent, [candidate]
    if candidate.is_dir():
        files = _data_or_source(
            sorted(p for p in candidate.rglob("*") if not _hidden(p.relative_to(candidate)))
        )
        if not files:
            raise InputError(f"input.path {path}: folder holds no .parquet, .jsonl or source files")
        return candidate, files
    if any(ch in path for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(path), recursive=True))
        files = _data_or_source(files)
        if not files:
            raise InputError(f"input.path {path}: glob matches no .parquet, .jsonl or source files")
        root = Path(os.path.commonpath([str(p.parent) for p in files]))
        return root, files
    raise InputError(f"input.path {path}: no such file or folder")


def _required_columns(spec: InputSpec) -> list[tuple[str, str | None]]:
    """(config key, column) pairs every input file must have."""
    extra = [("extra column", column) for column in spec.extra_columns]
    return [("input.text_column", spec.text_column), ("input.id_column", spec.id_column), *extra]


def _check_parquet(file: Path, spec: InputSpec) -> None:
    try:
        schema = pq.read_schema(file)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise InputError(f"input file {file}: unreadable Parquet ({type(err).__name__})") from None
    for key, column in _required_columns(spec):
        if column is None:
            continue
        if column not in schema.names:
            raise InputError(
                f"{key} {column!r}: no such column in {file} (columns: {', '.join(schema.names)})"
            )
    text_type = schema.field(spec.text_column).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise InputError(
            f"input.text_column {spec.text_column!r}: expected a string column in {file}, got {text_type}"
        )


def _check_jsonl(file: Path, spec: InputSpec) -> None:
    try:
        with open(file, encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), None)
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"input file {file}: unreadable ({type(err).__name__})") from None
    if first is None:
        return  # an empty file contributes no rows
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        raise InputError(f"input file {file}: first line is not JSON") from None
    if not isinstance(record, dict):
        raise InputError(f"input file {file}: expected one JSON object per line")
    for key, column in _required_columns(spec):
        if column is not None and column not in record:
            raise InputError(
                f"{key} {column!r}: no such field in {file} (fields: {', '.join(record)})"
            )


def _check_source(file: Path, spec: InputSpec) -> None:
    """A source file is its text alone: a column it was asked for cannot exist."""
    for key, column in _required_columns(spec)[1:]:
        if column is not None:
            raise InputError(
                f"{key} {column!r}: source file {file} has no columns (its id is its path)"
            )


DEFAULT_ID_COLUMN = "id"


def default_id_column(spec: InputSpec) -> str | None:
    """`id` when every input file has an `id` column (a Parquet file's schema, a JSONL file's
    first row), else None: ids then derive from file name and row number. Source files are
    named by their path and have none."""
    _, files = resolve_input_files(spec.path)
    for file in files:
        suffix = file.suffix.lower()
        if suffix in SOURCE_SUFFIXES:
            return None
        try:
            if suffix in PARQUET_SUFFIXES:
                names = pq.read_schema(file).names
            else:
                with open(file, encoding="utf-8") as fh:
                    first = next((line for line in fh if line.strip()), None)
                if first is None:
                    continue  # an empty file has no rows to name
                record = json.loads(first)
                names = list(record) if isinstance(record, dict) else []
        except Exception:  # noqa: BLE001 - validate_inputs then names what is wrong
            return None
        if DEFAULT_ID_COLUMN not in names:
            return None
    return DEFAULT_ID_COLUMN


def validate_inputs(spec: InputSpec) -> list[Path]:
    """Check every input file is readable and has the columns; return the files in read order."""
    _, files = resolve_input_files(spec.path)
    for file in files:
        if file.suffix.lower() in PARQUET_SUFFIXES:
            _check_parquet(file, spec)
        elif file.suffix.lower() in SOURCE_SUFFIXES:
            _check_source(file, spec)
        else:
            _check_jsonl(file, spec)
    return files


# text, id, error, extra columns, byte offset of a JSONL line, its physical line number
Row = tuple[object, object, str | None, dict[str, object], int, int]


def _rows_parquet(file: Path, spec: InputSpec, skip: int = 0) -> Iterator[Row]:
    """Rows of `file` from row number `skip` on; whole row groups before it are never read."""
    columns = [spec.text_column] + ([spec.id_column] if spec.id_column else [])
    columns += [c for c in spec.extra_columns if c not in columns]
    parquet = pq.ParquetFile(file)
    first_group = 0
    while first_group < parquet.num_row_groups:
        group_rows = parquet.metadata.row_group(first_group).num_rows
        if skip < group_rows:
            break
        skip -= group_rows
        first_group += 1
    groups = list(range(first_group, parquet.num_row_groups))
    if not groups:
        return
    batches = parquet.iter_batches(batch_size=_BATCH_ROWS, columns=columns, row_groups=groups)
    for batch in batches:
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        batch, skip = batch.slice(skip), 0
        texts = batch.column(spec.text_column).to_pylist()
        ids = batch.column(spec.id_column).to_pylist() if spec.id_column else [None] * len(texts)
        extras = {c: batch.column(c).to_pylist() for c in spec.extra_columns}
        for i, (text, row_id) in enumerate(zip(texts, ids, strict=True)):
            yield text, row_id, None, {c: values[i] for c, values in extras.items()}, 0, 0


def _parquet_rows(file: Path) -> int:
    return pq.ParquetFile(file).metadata.num_rows


def _check_line_start(spec: InputSpec, file: Path, offset: int) -> None:
    """Raise InputChangedError unless a line of `file` starts at byte `offset` (a planned
    seek into a file rewritten since at the same size would start mid-line)."""
    with open(file, "rb") as fh:
        fh.seek(offset - 1)
        if fh.read(1) != b"\n":
            raise InputChangedError(
                f"input.path {spec.path}: {file.name} changed since the job planned (no line "
                f"starts at byte {offset} any more); rerun with --replan"
            )


def _skip_jsonl(file: Path, offset: int, line: int, rows: int) -> tuple[int, int, int]:
    """Pass over up to `rows` rows (non-blank lines, never parsed) of a JSONL file from byte
    `offset`, physical line `line`; returns how many it passed, and the offset and line
    number where it stopped."""
    passed = 0
    with open(file, "rb") as fh:
        fh.seek(offset)
        for raw in fh:
            if passed == rows:
                break
            offset += len(raw)
            line += 1
            passed += 1 if raw.strip() else 0
    return passed, offset, line


def _rows_jsonl(
    file: Path, spec: InputSpec, offset: int = 0, first_line: int = 1, end: int | None = None
) -> Iterator[Row]:
    """Rows of a JSONL file from byte `offset`, the start of physical line `first_line`, up
    to the first line starting at or after byte `end`."""
    with open(file, "rb") as fh:
        fh.seek(offset)
        for line_number, raw in enumerate(fh, start=first_line):
            at = offset
            if end is not None and at >= end:
                return
            offset += len(raw)
            if not raw.strip():
                continue
            line = raw.decode("utf-8", errors="replace")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                yield None, None, f"line {line_number} is not JSON: {err.msg}", {}, at, line_number
                continue
            if not isinstance(record, dict):
                yield None, None, f"line {line_number} is not a JSON object", {}, at, line_number
                continue
            row_id = record.get(spec.id_column) if spec.id_column else None
            extra = {c: record.get(c) for c in spec.extra_columns}
            if spec.text_column not in record:
                error = f"line {line_number} has no field {spec.text_column!r}"
                yield None, row_id, error, extra, at, line_number
                continue
            yield record[spec.text_column], row_id, None, extra, at, line_number


def _rows_source(file: Path, spec: InputSpec, skip: int = 0) -> Iterator[Row]:
    """The file's whole text as one row (none when it is skipped)."""
    if skip:
        return
    try:
        data = file.read_bytes()
    except OSError as err:
        yield None, None, f"unreadable file ({type(err).__name__})", {}, 0, 1
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        yield None, None, f"not UTF-8 text (byte {err.start})", {}, 0, 1
        return
    if "\x00" in text:
        yield None, None, "binary file (holds NUL bytes)", {}, 0, 1
    elif not text.strip():
        yield None, None, "empty file", {}, 0, 1
    else:
        yield text, None, None, {}, 0, 1


def iter_documents(spec: InputSpec) -> Iterator[Document]:
    """Stream every input row, in a fixed order, up to `spec.limit` rows."""
    return iter_document_range(spec, 0, None)


def iter_document_range(
    spec: InputSpec, start: int, stop: int | None, seek: Seek | None = None
) -> Iterator[Document]:
    """The documents with ordinals in [start, stop), exactly as `iter_documents` numbers them,
    each with its `Seek`.

    What a generator reads for its slice of a unit. With `seek` (where a document at or
    before `start` begins: the plan records one per unit) the read starts there, so it costs
    the rows from `seek` to `stop`, wherever they are in the input. Without one, files wholly
    before `start` are skipped by their row counts (Parquet metadata; a JSONL file's lines are
    scanned, never parsed), and so are whole Parquet row groups."""
    root, files = resolve_input_files(spec.path)
    check_snapshot(spec, root, files)
    if spec.limit is not None:
        stop = spec.limit if stop is None else min(stop, spec.limit)
    ordinal, first = 0, 0
    if seek is not None and seek.ordinal <= start and seek.file_index < len(files):
        ordinal, first = seek.ordinal, seek.file_index
    for index in range(first, len(files)):
        file = files[index]
        if stop is not None and ordinal >= stop:
            return
        parquet = file.suffix.lower() in PARQUET_SUFFIXES
        source = file.suffix.lower() in SOURCE_SUFFIXES
        row, offset, line = 0, 0, 1
        if seek is not None and index == first and seek.ordinal == ordinal:
            row, offset, line = seek.row, seek.offset, seek.line
            if offset and not (parquet or source):
                _check_line_start(spec, file, offset)
        skip = 0
        if start > ordinal and (parquet or source):  # rows of the file from `row` on
            rows = _parquet_rows(file) - row if parquet else 1 - row
            if ordinal + rows <= start:
                ordinal += rows
                continue
            skip = start - ordinal
        elif start > ordinal:  # JSONL: count the rows before `start`, as far as they go
            skipped, offset, line = _skip_jsonl(file, offset, line, start - ordinal)
            row += skipped
            ordinal += skipped
            if ordinal < start:
                continue  # the file ended first
        ordinal += skip
        name = input_name(root, file)
        for doc in file_documents(spec, name, index, file, ordinal, row + skip, offset, line):
            if stop is not None and doc.ordinal >= stop:
                return
            yield doc
            ordinal += 1


def input_name(root: Path, file: Path) -> str:
    """A file's name in source ids: its path under the input's root."""
    return file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name


def file_documents(
    spec: InputSpec,
    name: str,
    index: int,
    file: Path,
    ordinal: int,
    row: int = 0,
    offset: int = 0,
    line: int = 1,
    end: int | None = None,
) -> Iterator[Document]:
    """The documents of input file number `index` (`name` in source ids: `input_name`) from
    its row `row` on, the first numbered `ordinal`: for a JSONL file `row` starts at byte
    `offset`, physical line `line`, and the read stops before the first line starting at or
    after byte `end`. Every reader of the input (slices, planning) makes its documents
    here, so they agree on ids and errors."""
    parquet = file.suffix.lower() in PARQUET_SUFFIXES
    source = file.suffix.lower() in SOURCE_SUFFIXES
    if parquet:
        rows_of = _rows_parquet(file, spec, row)
    elif source:
        rows_of = _rows_source(file, spec, row)
    else:
        rows_of = _rows_jsonl(file, spec, offset, line, end)
    for row_number, (text, row_id, error, extra, at, line_number) in enumerate(rows_of, start=row):
        source_id = name if source else f"{name}:{row_number}" if row_id is None else str(row_id)
        if error is None and text is not None and not isinstance(text, str):
            error = f"text is {type(text).__name__}, expected a string"
        elif error is None and text is None:
            error = "text is null"
        yield Document(
            ordinal=ordinal,
            source_id=source_id,
            text=text if isinstance(text, str) else None,
            error=error,
            extra=extra,
            seek=Seek(ordinal, index, row_number, at, line_number),
        )
        ordinal += 1
