"""Row accounting: every candidate row ends kept, dropped (by filter) or errored (by stage).

    python -c "from synth_ray.stats import UnitStats; s = UnitStats(); print(s.to_dict())"

Each unit also carries the distributions the report draws (`observe`: computed where its rows
are written, merged like the counts), so no reader re-reads the output's rows for them.

`rows_in` counts candidate rows (one per rephrased chunk-style, one per generate prompt, one per
input document that failed before it could be expanded). The invariant
`rows_in == rows_out + sum(dropped) + sum(errored)` is checked before each unit commits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# kept rows' token counts, binned by powers of two: bin 0 holds 0, bin k holds [2^(k-1), 2^k)
LENGTH_COLUMNS = ("n_output_tokens", "n_input_tokens")
LENGTH_BINS = 24
# kept rows per value of these columns, where a method has them
CATEGORY_COLUMNS = (
    "style",
    "operation",
    "format",
    "audience",
    "source",
    "label",
    "rubric",
    "augmentation",
)
MAX_CATEGORIES = 40  # a column with more distinct values is counted as MANY, not by value
MANY = "__many__"


def length_bin(value: int) -> int:
    return min(LENGTH_BINS - 1, max(0, int(value)).bit_length())


def _merge_categories(mine: dict[str, int], other: dict[str, int]) -> dict[str, int]:
    merged = dict(mine)
    for value, count in other.items():
        merged[value] = merged.get(value, 0) + count
    if MANY in merged or len(merged) > MAX_CATEGORIES:
        return {MANY: sum(merged.values())}
    return merged


@dataclass
class UnitStats:
    input_documents: int = 0
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    errored: Counter[str] = field(default_factory=Counter)
    input_tokens: int = 0
    output_tokens: int = 0
    # diversity filter: rows per nn_similarity bin (20 bins of 0.05), kept and dropped alike
    nn_histogram: list[int] = field(default_factory=list)
    # kept rows per length bin (LENGTH_COLUMNS) and per value (CATEGORY_COLUMNS)
    lengths: dict[str, list[int]] = field(default_factory=dict)
    categories: dict[str, dict[str, int]] = field(default_factory=dict)
    # a method's own counts of its candidates by label (`Candidate.tallies`): what it asked
    # for, per kind, counted where the candidates are made, so no driver re-reads them
    tallies: Counter[str] = field(default_factory=Counter)
    # kept rows a method sent to a named split (`Kept(row, split=...)`), counted in rows_out
    splits: Counter[str] = field(default_factory=Counter)
    # a remote engine's retried attempts, by reason (HTTP 429, timeout, ...)
    retries: Counter[str] = field(default_factory=Counter)

    def observe(self, row: dict[str, Any]) -> None:
        """Count a kept row into the distributions."""
        for column in LENGTH_COLUMNS:
            value = row.get(column)
            if isinstance(value, int):
                bins = self.lengths.setdefault(column, [0] * LENGTH_BINS)
                bins[length_bin(value)] += 1
        for column in CATEGORY_COLUMNS:
            value = row.get(column)
            if isinstance(value, str):
                counts = self.categories.setdefault(column, {})
                if MANY in counts:
                    counts[MANY] += 1
                else:
                    counts[value] = counts.get(value, 0) + 1
                    if len(counts) > MAX_CATEGORIES:
                        self.categories[column] = {MANY: sum(counts.values())}

    def observe_rows(self, rows: Any) -> None:
        """`observe` every row of a pyarrow table (only the columns counted are read)."""
        wanted = [c for c in (*LENGTH_COLUMNS, *CATEGORY_COLUMNS) if c in rows.column_names]
        if wanted:
            for row in rows.select(wanted).to_pylist():
                self.observe(row)

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def rows_errored(self) -> int:
        return sum(self.errored.values())

    def is_balanced(self) -> bool:
        return self.rows_in == self.rows_out + self.rows_dropped + self.rows_errored

    def merge(self, other: UnitStats) -> None:
        self.input_documents += other.input_documents
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.dropped.update(other.dropped)
        self.errored.update(other.errored)
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.tallies.update(other.tallies)
        self.splits.update(other.splits)
        self.retries.update(other.retries)
        if other.nn_histogram:
            mine = self.nn_histogram or [0] * len(other.nn_histogram)
            self.nn_histogram = [a + b for a, b in zip(mine, other.nn_histogram, strict=True)]
        for column, bins in other.lengths.items():
            mine = self.lengths.get(column) or [0] * len(bins)
            self.lengths[column] = [a + b for a, b in zip(mine, bins, strict=True)]
        for column, counts in other.categories.items():
            self.categories[column] = _merge_categories(self.categories.get(column, {}), counts)

    def to_dict(self) -> dict[str, Any]:
        histogram = {"nn_similarity_histogram": self.nn_histogram} if self.nn_histogram else {}
        if self.lengths:
            histogram["length_bins"] = self.lengths  # type: ignore[assignment]
        if self.categories:
            histogram["categories"] = self.categories  # type: ignore[assignment]
        if self.tallies:
            histogram["tallies"] = dict(sorted(self.tallies.items()))  # type: ignore[assignment]
        if self.splits:
            histogram["rows_by_split"] = dict(sorted(self.splits.items()))  # type: ignore[assignment]
        if self.retries:
            histogram["retries_by_reason"] = dict(sorted(self.retries.items()))  # type: ignore[assignment]
        return {
            "input_documents": self.input_documents,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_dropped": self.rows_dropped,
            "rows_errored": self.rows_errored,
            "dropped_by_filter": dict(sorted(self.dropped.items())),
            "errored_by_stage": dict(sorted(self.errored.items())),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            **histogram,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnitStats:
        return cls(
            input_documents=data.get("input_documents", 0),
            rows_in=data.get("rows_in", 0),
            rows_out=data.get("rows_out", 0),
            dropped=Counter(data.get("dropped_by_filter", {})),
            errored=Counter(data.get("errored_by_stage", {})),
            input_tokens=data.get("input_tokens", 0),
            output_tokens=data.get("output_tokens", 0),
            nn_histogram=list(data.get("nn_similarity_histogram", [])),
            lengths={k: list(v) for k, v in data.get("length_bins", {}).items()},
            categories={k: dict(v) for k, v in data.get("categories", {}).items()},
            tallies=Counter(data.get("tallies", {})),
            splits=Counter(data.get("rows_by_split", {})),
            retries=Counter(data.get("retries_by_reason", {})),
        )
