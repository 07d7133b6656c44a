"""One partition's accepted vectors: exact inner-product search, HNSW past a measured size.

    python -c "import numpy as np; from synth_ray.diversity.index import PartitionIndex as P; i = P(4); i.add(np.eye(4, dtype=np.float16)); print(i.max_similarity(np.eye(4, dtype=np.float16)))"

Vectors are unit-length, so inner product is cosine similarity. Below `exact_max` vectors the
search is exact (`IndexFlatIP`); past it the partition is rebuilt once as `IndexHNSWFlat`
(32 links, efSearch 128), whose cost per query grows with log(size) instead of size.
faiss runs single-threaded here: HNSW built with several threads links nodes in a racy
order, and the same accepted vectors must give the same index on every run and resume.
Where faiss's GPU build is installed and a GPU is visible, the exact index lives on the GPU.
"""

from __future__ import annotations

import numpy as np

HNSW_LINKS = 32
HNSW_EF_SEARCH = 128
HNSW_EF_CONSTRUCTION = 80


def _faiss():  # noqa: ANN202 - faiss has no type stubs
    import faiss

    faiss.omp_set_num_threads(1)
    return faiss


def gpu_available() -> bool:
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class PartitionIndex:
    def __init__(self, dim: int, exact_max: int = 200_000, use_gpu: bool | None = None) -> None:
        faiss = _faiss()
        self.dim = dim
        self.exact_max = exact_max
        self.use_gpu = gpu_available() if use_gpu is None else use_gpu
        self._gpu_resources = faiss.StandardGpuResources() if self.use_gpu else None
        self.index = self._exact()
        self.kind = "exact"

    def _exact(self):  # noqa: ANN202
        faiss = _faiss()
        index = faiss.IndexFlatIP(self.dim)
        if self._gpu_resources is not None:
            index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
        return index

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        """Append vectors (any float dtype; used as float32 of their float16 values)."""
        if len(vectors) == 0:
            return
        if self.kind == "exact" and self.size + len(vectors) > self.exact_max:
            self._to_hnsw()
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def _to_hnsw(self) -> None:
        faiss = _faiss()
        held = self.index.reconstruct_n(0, self.size) if self.size else None
        hnsw = faiss.IndexHNSWFlat(self.dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        if held is not None:
            hnsw.add(held)
        self.index = hnsw
        self.kind = "hnsw"

    def serialize(self) -> bytes:
        """The whole index as bytes (`faiss.serialize_index` of a CPU copy): what a snapshot
        keeps, so a resume loads it instead of adding every kept vector again."""
        faiss = _faiss()
        index = self.index
        if self._gpu_resources is not None and self.kind == "exact":
            index = faiss.index_gpu_to_cpu(index)
        return faiss.serialize_index(index).tobytes()

    def load(self, data: bytes) -> None:
        """Replace the index by one `serialize` gave (of the same dimension)."""
        faiss = _faiss()
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if index.d != self.dim:
            raise ValueError(f"a snapshot of dimension {index.d}, expected {self.dim}")
        self.kind = "hnsw" if isinstance(index, faiss.IndexHNSWFlat) else "exact"
        if self.kind == "hnsw":
            index.hnsw.efSearch = HNSW_EF_SEARCH
        elif self._gpu_resources is not None:
            index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
        self.index = index

    def max_similarity(self, vectors: np.ndarray) -> np.ndarray:
        """Highest similarity of each vector to the index; -inf where the index is empty."""
        n = len(vectors)
        if n == 0 or self.size == 0:
            return np.full(n, -np.inf, dtype=np.float32)
        scores, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
        best = scores[:, 0].astype(np.float32)
        best[ids[:, 0] < 0] = -np.inf
        return best
