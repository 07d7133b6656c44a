"""Scale-out by centroids: each vector lives in the partition of its nearest centroid and is
searched for in its `probes` nearest partitions.

    python -c "import numpy as np; from synth_ray.diversity.partitioning import train_centroids; print(train_centroids(np.random.rand(200, 8).astype('float32'), 4).shape)"

Near-duplicates are close, so they almost always share a nearest centroid; probing the second
nearest too catches most of those on a boundary. benchmarks/bench_diversity.py measures the
share of the exact filter's drops that the partitioned one also makes.
"""

from __future__ import annotations

import numpy as np

KMEANS_SEED = 1234
KMEANS_ITERATIONS = 25


def train_centroids(sample: np.ndarray, k: int) -> np.ndarray:
    """(k, dim) float32 unit centroids by spherical k-means on `sample` (deterministic)."""
    import faiss

    data = np.ascontiguousarray(sample, dtype=np.float32)
    if len(data) < k:
        raise ValueError(f"{len(data)} sample vectors cannot train {k} centroids")
    kmeans = faiss.Kmeans(
        data.shape[1], k, niter=KMEANS_ITERATIONS, seed=KMEANS_SEED, spherical=True, verbose=False
    )
    kmeans.train(data)
    return np.asarray(kmeans.centroids, dtype=np.float32)


def route(vectors: np.ndarray, centroids: np.ndarray, probes: int) -> np.ndarray:
    """(n, probes) partition ids per vector, nearest first; column 0 is where it is stored."""
    scores = np.asarray(vectors, dtype=np.float32) @ centroids.T
    # stable sort: ties go to the lower partition id, the same on every run
    return np.argsort(-scores, axis=1, kind="stable")[:, :probes]
