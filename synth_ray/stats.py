"""Row accounting: every candidate row ends kept, dropped (by filter) or errored (by stage).

    python -c "from synth_ray.stats import UnitStats; s = UnitStats(); print(s.to_dict())"

`rows_in` counts candidate rows (one per rephrased chunk-style, one per generate prompt, one per
input document that failed before it could be expanded). The invariant
`rows_in == rows_out + sum(dropped) + sum(errored)` is checked before each unit commits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


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
        if other.nn_histogram:
            mine = self.nn_histogram or [0] * len(other.nn_histogram)
            self.nn_histogram = [a + b for a, b in zip(mine, other.nn_histogram, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        histogram = {"nn_similarity_histogram": self.nn_histogram} if self.nn_histogram else {}
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
        )
