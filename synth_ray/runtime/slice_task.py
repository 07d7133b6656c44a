"""A slice of a unit: what the driver sends a replica to generate.

    python -m pytest tests/test_slices.py

Its own module, below runtime/slices.py (which cuts and tracks them) and
runtime/stage_documents.py (which reads a slice's documents), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from synth_ray.io.inputs import Seek
from synth_ray.plan import WorkUnit


@dataclass(frozen=True)
class SliceTask:
    """Input rows [start, stop) of unit `unit_index` (rows [unit_start, unit_stop)).

    With `fail_reason` set the replica generates nothing: every row of the slice becomes an
    error row with that reason (a row that kept killing replicas)."""

    stage_key: str
    unit_index: int
    unit_id: str
    unit_start: int
    unit_stop: int
    start: int
    stop: int
    fail_reason: str | None = None
    unit_seek: Seek | None = None  # where the unit's first document starts in the input
    # the earlier stage's shards this unit reads, when that stage ran beside this one (its
    # commits came after this stage was planned: runtime/streaming.py); None: the stage's own
    earlier_shards: tuple[Any, ...] | None = None

    @property
    def key(self) -> str:
        return f"{self.stage_key}#{self.unit_index}:{self.start}-{self.stop}"

    @property
    def whole_unit(self) -> bool:
        return self.start == self.unit_start and self.stop == self.unit_stop

    def as_unit(self) -> WorkUnit:
        return WorkUnit(self.unit_index, self.unit_id, self.start, self.stop, 0)
