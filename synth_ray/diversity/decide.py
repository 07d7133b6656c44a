"""Decisions over one ordered batch: a row is kept iff its similarity to everything kept before
it (the index, holding earlier batches and any reference corpus, and the rows kept earlier in
this batch) stays below `threshold`.

    python -c "import numpy as np; from synth_ray.diversity.decide import decide_batch; v = np.eye(2, dtype=np.float16)[[0, 0, 1]]; print(decide_batch(v, np.full(3, -np.inf), 0.9))"

The in-batch part is exact and sequential, so of two near-duplicates in one batch the first is
kept; the same batches in the same order give the same decisions whoever generated the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HISTOGRAM_BINS = 20  # nn_similarity histogram: 20 bins of 0.05 over [0, 1]


@dataclass
class BatchDecision:
    keep: np.ndarray  # bool per row
    nn_similarity: np.ndarray  # float32 per row; -inf where nothing was kept before it


class OrderedBatch:
    """Row-by-row decisions for callers that interleave other filters (Self-Instruct's ROUGE-L):
    `similarity(i)` is row i's highest similarity to the index and the rows kept so far."""

    def __init__(self, vectors: np.ndarray, index_max: np.ndarray) -> None:
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.best = np.asarray(index_max, dtype=np.float32).copy()
        self.keep = np.zeros(len(self.vectors), dtype=bool)
        self._kept = np.zeros((len(self.vectors), self.vectors.shape[1]), dtype=np.float32)
        self._n_kept = 0

    def similarity(self, i: int) -> float:
        if self._n_kept:
            within = float((self._kept[: self._n_kept] @ self.vectors[i]).max())
            self.best[i] = max(self.best[i], within)
        return float(self.best[i])

    def accept(self, i: int) -> None:
        self.keep[i] = True
        self._kept[self._n_kept] = self.vectors[i]
        self._n_kept += 1

    def decision(self) -> BatchDecision:
        return BatchDecision(self.keep, self.best)


def decide_batch(
    vectors: np.ndarray,
    index_max: np.ndarray,
    threshold: float,
    eligible: np.ndarray | None = None,
) -> BatchDecision:
    """`index_max[i]`: row i's highest similarity to the index as it was before this batch.
    Rows with `eligible` False are neither kept nor compared with."""
    batch = OrderedBatch(vectors, index_max)
    for i in range(len(batch.vectors)):
        if eligible is not None and not eligible[i]:
            continue
        if batch.similarity(i) < threshold:
            batch.accept(i)
    return batch.decision()


def histogram(similarities: np.ndarray) -> list[int]:
    """Counts over 20 bins of width 0.05 on [0, 1]; negatives fall in the first, -inf skipped."""
    values = np.asarray(similarities, dtype=np.float32)
    finite = values[np.isfinite(values)]
    bins = np.clip((finite * HISTOGRAM_BINS).astype(int), 0, HISTOGRAM_BINS - 1)
    return np.bincount(bins, minlength=HISTOGRAM_BINS).astype(int).tolist()


def merge_histograms(a: list[int], b: list[int]) -> list[int]:
    if not a or not b:
        return list(a or b)
    return [x + y for x, y in zip(a, b, strict=True)]


def nn_value(similarity: float) -> float | None:
    """The `nn_similarity` column's value: None when nothing was kept before the row."""
    return round(float(similarity), 6) if np.isfinite(similarity) else None


def format_histogram(counts: list[int]) -> str:
    """Non-empty bins as 'lo-hi:count', e.g. '0.10-0.15:4 0.95-1.00:2'."""
    width = 1 / HISTOGRAM_BINS
    return " ".join(f"{i * width:.2f}-{(i + 1) * width:.2f}:{n}" for i, n in enumerate(counts) if n)
