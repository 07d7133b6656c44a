"""What a diversity-filter resume costs with and without an index snapshot.

    python benchmarks/bench_index_snapshot.py [--vectors 200000] [--exact-max 50000]

One partition (diversity/index.py's PartitionIndex, as a partition actor holds it) of random
unit 384-dim float16 vectors, the default embedder's size. Without a snapshot a resume adds
every committed unit's kept vectors again, in units of 2,000 (past `--exact-max` the index is
HNSW, whose adds dominate); with one it loads the serialized index (`serialize`/`load`, what
the actor writes and reads). Reading the embedding shards, which a resume without a snapshot
also pays, is not counted. Results are appended to benchmarks/results.md and results.jsonl.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from common import append_results, machine, machine_line  # noqa: E402

from synth_ray.diversity.index import PartitionIndex  # noqa: E402

DIM = 384
UNIT = 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--exact-max", type=int, default=50_000)
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.vectors, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors.astype(np.float16)

    started = time.perf_counter()
    rebuilt = PartitionIndex(DIM, args.exact_max, use_gpu=False)
    for lo in range(0, len(vectors), UNIT):
        rebuilt.add(vectors[lo : lo + UNIT])
    rebuild_s = time.perf_counter() - started

    started = time.perf_counter()
    data = rebuilt.serialize()
    save_s = time.perf_counter() - started
    started = time.perf_counter()
    loaded = PartitionIndex(DIM, args.exact_max, use_gpu=False)
    loaded.load(data)
    load_s = time.perf_counter() - started
    probe = vectors[:1000]
    assert np.array_equal(loaded.max_similarity(probe), rebuilt.max_similarity(probe))

    m = machine()
    stamp = time.strftime("%Y-%m-%d %H:%M")
    record = {
        "bench": "index_snapshot",
        "time": stamp,
        "machine": m,
        "vectors": args.vectors,
        "exact_max": args.exact_max,
        "kind": rebuilt.kind,
        "rebuild_s": round(rebuild_s, 2),
        "serialize_s": round(save_s, 2),
        "load_s": round(load_s, 2),
        "snapshot_mib": round(len(data) / 2**20, 1),
    }
    print(record)
    lines = [
        f"\n## {stamp} bench_index_snapshot: a diversity resume, re-adding vs loading\n",
        f"Machine: {machine_line(m)}. One partition, {DIM}-dim vectors, re-added in units of "
        f"{UNIT} (shard reads not counted); HNSW past {args.exact_max} vectors.\n",
        "| vectors | index | re-add s | serialize s | load s | snapshot MiB |",
        "|---|---|---|---|---|---|",
        f"| {args.vectors} | {rebuilt.kind} | {record['rebuild_s']} | {record['serialize_s']} | "
        f"{record['load_s']} | {record['snapshot_mib']} |",
    ]
    append_results(args.results, "\n".join(lines), [record])


if __name__ == "__main__":
    main()
