"""Embedding vectors on disk: Parquet with an `id` column and the float16 vector as bytes.

    python -c "import numpy as np; from synth_ray.io.vectors import *; write_vectors_atomic('/tmp/v.parquet', ['a'], np.ones((1, 4), np.float16)); print(read_vectors('/tmp/v.parquet'))"

The diversity filter persists the vectors of the rows it kept beside the committed shards, so
a resumed run rebuilds the same accepted set without re-embedding; float16 bytes round-trip
exactly, which is what makes the resumed decisions identical. Extra columns (a decision, a
similarity) may ride along.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synth_ray.io.shards import write_shard_atomic


def vectors_table(ids: list[str], vectors: np.ndarray, **columns: list[Any]) -> pa.Table:
    vecs = np.ascontiguousarray(vectors, dtype=np.float16)
    dim = vecs.shape[1] if vecs.ndim == 2 else 0
    data = [bytes(row.tobytes()) for row in vecs]
    table = pa.table(
        {"id": pa.array(ids, pa.string()), "vector": pa.array(data, pa.binary(2 * dim))}
    )
    for name, values in columns.items():
        table = table.append_column(name, pa.array(values))
    return table.replace_schema_metadata({"dim": str(dim), "dtype": "float16"})


def write_vectors_atomic(
    path: str | Path, ids: list[str], vectors: np.ndarray, **columns: list[Any]
) -> None:
    write_shard_atomic(vectors_table(ids, vectors, **columns), path)


def table_vectors(table: pa.Table) -> np.ndarray:
    dim = int((table.schema.metadata or {}).get(b"dim", b"0"))
    raw = b"".join(table.column("vector").to_pylist())
    return (
        np.frombuffer(raw, dtype=np.float16).reshape(len(table), dim)
        if dim
        else np.zeros((len(table), 0), np.float16)
    )


def read_vectors(path: str | Path) -> tuple[pa.Table, np.ndarray]:
    """The table (ids and any extra columns) and its (n, dim) float16 vectors."""
    table = pq.read_table(path)
    return table, table_vectors(table)
