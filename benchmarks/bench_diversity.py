"""The diversity filter's costs: embeddings/s, index search vs size (exact and HNSW), and what
splitting the index over K partition actors costs against the exact global filter.

    python benchmarks/bench_diversity.py [--texts 6000] [--sizes 25000,100000,200000,400000]

1. Embeddings/s of the embedded all-MiniLM-L6-v2 (GPU when torch sees one).
2. Search time of one 512-row batch against an index of N accepted vectors, single-threaded as
   in a partition actor: IndexFlatIP (exact) against IndexHNSWFlat. This is what sets
   `filters.diversity.exact_max_vectors`: past the size where exact search of a batch costs
   more than embedding it, the partition switches to HNSW.
3. The real filter (Ray actors, runtime/diversity.py) over a corpus with planted paraphrases:
   K=1 is the exact global filter; for K partitions and P probes, the share of the exact
   filter's drops the partitioned one also makes, its kept-row agreement, and decisions/s.
Results are appended to benchmarks/results.md and results.jsonl with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import machine, machine_line  # noqa: E402

SUBJECTS = "the farmer|a young engineer|the city council|our neighbour|the research team|a small startup|the old librarian|the football club|a travelling musician|the hospital staff|a local baker|the museum curator".split(
    "|"
)
VERBS = "repaired|studied|argued about|painted|sold|documented|rebuilt|celebrated|questioned|measured|designed|photographed".split(
    "|"
)
OBJECTS = "the wooden bridge|a rare manuscript|the water supply|an electric bicycle|the school garden|a broken telescope|the harbour lights|a vintage radio|the mountain trail|a solar panel array|the railway timetable|a family recipe".split(
    "|"
)
TIMES = "last winter|after the storm|every Sunday|during the festival|before dawn|in the early nineties|for three weeks|at the end of the season".split(
    "|"
)
REASONS = "to save money|because nobody else would|for a documentary|to win a bet|as part of a grant|to teach the children|for the annual report|out of pure curiosity".split(
    "|"
)
SYNONYMS = {
    "repaired": "fixed",
    "studied": "examined",
    "sold": "auctioned off",
    "rebuilt": "reconstructed",
    "celebrated": "honoured",
    "designed": "drew up",
    "every Sunday": "each Sunday",
    "before dawn": "before sunrise",
    "last winter": "in the previous winter",
}


def corpus(n: int, seed: int = 0) -> tuple[list[str], int]:
    """n sentences; about a third are paraphrases of an earlier one. Returns (texts, planted)."""
    rng = random.Random(seed)
    texts: list[str] = []
    planted = 0
    while len(texts) < n:
        if texts and rng.random() < 0.33:
            base = rng.choice(texts)
            variant = base
            for a, b in SYNONYMS.items():
                if a in variant and rng.random() < 0.7:
                    variant = variant.replace(a, b)
            if variant == base:
                variant = base.replace(" the ", " that ", 1)
            texts.append(variant)
            planted += 1
        else:
            s = f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TIMES)} {rng.choice(REASONS)}."
            texts.append(s)
    return texts, planted


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)


def bench_embedding(texts: list[str]) -> tuple[dict, np.ndarray]:
    from synth_ray.diversity.embedding import Embedder

    t = time.perf_counter()
    embedder = Embedder()
    load = time.perf_counter() - t
    embedder.encode(texts[:64])  # warm-up
    t = time.perf_counter()
    vectors = embedder.encode(texts)
    wall = time.perf_counter() - t
    return {
        "device": embedder.device,
        "texts": len(texts),
        "load_s": round(load, 1),
        "embeddings_per_s": round(len(texts) / wall, 1),
    }, vectors


def bench_index(sizes: list[int], dim: int, batch: int = 512) -> list[dict]:
    from synth_ray.diversity.index import PartitionIndex

    queries = unit_vectors(batch, dim, seed=99)
    rows = []
    for size in sizes:
        data = unit_vectors(size, dim, seed=size)
        exact = PartitionIndex(dim, exact_max=size + 1, use_gpu=False)
        exact.add(data)
        exact.max_similarity(queries[:8])
        t = time.perf_counter()
        exact.max_similarity(queries)
        exact_s = time.perf_counter() - t
        hnsw = PartitionIndex(dim, exact_max=0, use_gpu=False)
        t = time.perf_counter()
        hnsw.add(data)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        approx = hnsw.max_similarity(queries)
        hnsw_s = time.perf_counter() - t
        truth = exact.max_similarity(queries)
        # what the filter needs: a near-duplicate of a stored vector (similarity ~0.9) is found
        noise = unit_vectors(batch, dim, seed=size + 1).astype(np.float32)
        stored = data[:batch].astype(np.float32)
        near = 0.9 * stored + np.sqrt(1 - 0.9**2) * noise
        near = (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float16)
        found = hnsw.max_similarity(near) >= 0.85
        rows.append(
            {
                "size": size,
                "exact_ms_per_batch": round(exact_s * 1000, 1),
                "hnsw_ms_per_batch": round(hnsw_s * 1000, 1),
                "hnsw_build_us_per_vector": round(build_s / size * 1e6, 1),
                "hnsw_top1_exact_share_random": round(
                    float(np.mean(np.abs(approx - truth) < 1e-4)), 3
                ),
                "hnsw_near_duplicate_found": round(float(found.mean()), 4),
            }
        )
        print(rows[-1], flush=True)
    return rows


def bench_partitions(
    texts: list[str], vectors: np.ndarray, threshold: float, settings: list[tuple[int, int]]
) -> list[dict]:
    import ray

    from synth_ray.filter_config import DiversityConfig
    from synth_ray.runtime.diversity import DECIDE_BATCH, DiversityFilter

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    results = []
    exact_keep = None
    for k, probes in settings:
        cfg = DiversityConfig(enabled=True, threshold=threshold, partitions=k, probes=probes)
        with tempfile.TemporaryDirectory() as state:
            filt = DiversityFilter(cfg, Path(state), lambda: texts)
            keep = np.zeros(len(vectors), dtype=bool)
            t = time.perf_counter()
            for start in range(0, len(vectors), DECIDE_BATCH):
                part = vectors[start : start + DECIDE_BATCH]
                keep[start : start + len(part)] = filt.decide(part).keep
            wall = time.perf_counter() - t
            filt.close()
        row = {
            "partitions": k,
            "probes": probes,
            "dropped": int((~keep).sum()),
            "decisions_per_s": round(len(vectors) / wall, 1),
            "decisions_per_s_per_partition": round(len(vectors) / wall / k, 1),
        }
        if exact_keep is None:
            exact_keep = keep
        exact_drops = ~exact_keep
        row["exact_drops_also_dropped"] = round(
            float((~keep & exact_drops).sum() / max(1, exact_drops.sum())), 4
        )
        row["decision_agreement"] = round(float((keep == exact_keep).mean()), 4)
        results.append(row)
        print(row, flush=True)
    ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=6000)
    parser.add_argument("--sizes", default="25000,50000,100000,200000")
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--settings", default="1:1,4:1,4:2,8:1,8:2,16:2")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    texts, planted = corpus(args.texts)
    embedding, vectors = bench_embedding(texts)
    print(embedding, flush=True)
    index = bench_index([int(s) for s in args.sizes.split(",")], vectors.shape[1])
    settings = [tuple(int(x) for x in s.split(":")) for s in args.settings.split(",")]
    partitions = bench_partitions(texts, vectors, args.threshold, settings)

    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "benchmark": "diversity",
        "machine": machine(),
        "texts": len(texts),
        "planted_paraphrases": planted,
        "threshold": args.threshold,
        "embedding": embedding,
        "index": index,
        "partitions": partitions,
    }
    if args.no_record:
        return
    with open(HERE / "results.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    m = record["machine"]
    lines = [
        f"\n## {record['date']} diversity filter: {len(texts)} texts ({planted} planted paraphrases), threshold {args.threshold}",
        f"Machine: {machine_line(m)}{'' if 'gpu' in m else ', no GPU'}; embedder on {embedding['device']}.",
        "",
        f"Embedding (all-MiniLM-L6-v2): {embedding['embeddings_per_s']} texts/s (model load {embedding['load_s']} s).",
        "",
        "Index search of one 512-row batch, one thread (random unit vectors, 384 dims):",
        "",
        "| accepted vectors | exact ms | HNSW ms | HNSW build us/vector | HNSW top-1 = exact (random queries) | HNSW finds a 0.9-similar near-duplicate |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['size']:,} | {r['exact_ms_per_batch']} | {r['hnsw_ms_per_batch']} | {r['hnsw_build_us_per_vector']} | {r['hnsw_top1_exact_share_random']} | {r['hnsw_near_duplicate_found']} |"
            for r in index
        ],
        "",
        "Partitioned filter against the exact global filter (K=1), real Ray actors:",
        "",
        "| K | probes | dropped | share of exact drops also dropped | decisions agree | decisions/s | per partition |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['partitions']} | {r['probes']} | {r['dropped']} | {r['exact_drops_also_dropped']} | {r['decision_agreement']} | {r['decisions_per_s']} | {r['decisions_per_s_per_partition']} |"
            for r in partitions
        ],
    ]
    with open(HERE / "results.md", "a") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
