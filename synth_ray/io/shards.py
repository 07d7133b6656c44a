"""Atomic Parquet shard writes: temp name -> close -> fsync -> rename -> fsync the folder.

    python -c "import pyarrow as pa; from synth_ray.io.shards import write_shard_atomic; write_shard_atomic(pa.table({'a': [1]}), '/tmp/x.parquet')"

A crash at any moment leaves either no file or a complete one under the final name, never a
truncated file that looks finished. Leftover temp files (names starting with '.') are ignored by
readers and swept by `sweep_temp_files` when a run starts. This is the discipline of a local
(or shared-filesystem) output folder; a URI output has no rename and writes whole objects
instead (filesystem.py).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synth_ray.io.jsonl_log import fsync_folder as fsync_dir
from synth_ray.io.storage_errors import naming

TEMP_PREFIX = ".tmp-"


def write_bytes_atomic(data: bytes, path: str | Path) -> None:
    """Write a small file (JSON) with the same temp -> fsync -> rename discipline."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # unique per writer: threads of one process, or two nodes, may write the same name
        tmp = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk gets its space back; never a half file
            raise
        fsync_dir(path.parent)


def write_parquet(table: pa.Table, sink: object) -> None:
    """Write `table` as one zstd Parquet file. An empty table becomes a file with its schema
    and no row group: Hugging Face `datasets` cannot read a row group of 0 rows ("BatchSize
    must be greater than 0"), which is what `pq.write_table` writes for an empty unit."""
    if table.num_rows:
        pq.write_table(table, sink, compression="zstd")
    else:
        pq.ParquetWriter(sink, table.schema, compression="zstd").close()


def write_shard_atomic(table: pa.Table, path: str | Path) -> int:
    """Write `table` as Parquet at `path` atomically; returns the file size in bytes.

    An existing file at `path` (left by a run killed after its rename but before its manifest
    entry) is replaced whole: shard names are deterministic, so the rerun's shard supersedes it.
    A failed write (a full disk) removes its temp file and raises an OSError naming `path`.
    """
    path = Path(path)
    with naming(path):
        new_folder = not path.parent.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        # unique per writer: on a shared filesystem two nodes may write the same shard name
        tmp = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}"
        try:
            with open(tmp, "wb") as fh:
                write_parquet(table, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk gets its space back; never a half file
            raise
        fsync_dir(path.parent)
        if new_folder:  # the folder's own name must survive a power loss too
            fsync_dir(path.parent.parent)
        return path.stat().st_size


def sweep_temp_files(folder: str | Path) -> int:
    """Delete temp files a killed run left behind; returns how many were removed."""
    removed = 0
    for tmp in Path(folder).rglob(f"{TEMP_PREFIX}*"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
