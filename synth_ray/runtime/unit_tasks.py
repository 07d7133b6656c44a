"""Summarize each committed unit of a stage from its shards, in Ray tasks beside the data, so
the driver reads no row (Magpie's global dedup gets each unit's instruction keys this way).

    python -m pytest tests/test_magpie.py

`summarize_units(location, shards, columns, summarize)` returns `summarize(table)` for every
unit, in unit order, where `table` holds the `columns` of the unit's shards, concatenated in
their order. With Ray connected, batches of `UNITS_PER_TASK` units are Ray tasks (no CPU
reserved, spread over the nodes, `ray_tasks.window()` in flight); without Ray (tests with a
caller-owned backend) they run in this process. What `summarize` returns should be small:
the driver holds all of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from synth_ray.io.filesystem import Location, read_columns
from synth_ray.runtime.ray_tasks import connected, get, window

UNITS_PER_TASK = 16  # a task's overhead (~ms) against a unit's read (~10 ms at 10k rows)

Summarize = Callable[[pa.Table], Any]


def summarize_batch(
    location: Location,
    batch: Sequence[tuple[str, ...]],
    columns: tuple[str, ...],
    summarize: Summarize,
) -> list[Any]:
    """`summarize` of each unit's table (its shards' `columns`, in shard order)."""
    return [summarize(read_columns([(location, n) for n in shards], columns)) for shards in batch]


def summarize_units(
    location: Location,
    shards: Sequence[tuple[str, ...]],
    columns: tuple[str, ...],
    summarize: Summarize,
) -> list[Any]:
    """`summarize(table)` per unit, in unit order (see the module's docstring)."""
    batches = [shards[i : i + UNITS_PER_TASK] for i in range(0, len(shards), UNITS_PER_TASK)]
    if not connected():
        return [
            s for batch in batches for s in summarize_batch(location, batch, columns, summarize)
        ]
    import ray

    remote = ray.remote(num_cpus=0, scheduling_strategy="SPREAD", max_retries=2)(summarize_batch)
    location_ref, summarize_ref = ray.put(location), ray.put(summarize)
    in_flight, pending, out = window(), deque(), []
    try:
        for batch in batches:
            pending.append(remote.remote(location_ref, list(batch), columns, summarize_ref))
            if len(pending) >= in_flight:
                out.extend(get(pending.popleft()))
        while pending:
            out.extend(get(pending.popleft()))
    finally:
        for ref in pending:  # failed: drop the rest
            ray.cancel(ref)
    return out
