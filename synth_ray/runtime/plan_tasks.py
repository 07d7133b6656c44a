"""Scan the input for planning in Ray tasks beside the data, so the driver parses no row.

    python -m pytest tests/test_plan_scan.py

`scan_input` yields every part's PartScan (io/input_scan.py) in input order. With Ray
connected and an input of at least `TASKS_FROM_BYTES`, each part is a Ray task (spread over
the nodes, no CPU reserved, so replicas holding every CPU cannot starve planning), at most
`window` of them in flight: the driver only merges arrays (plan.py's `plan_scanned`). JSONL
files cut into several parts are counted first (bytes only, also in tasks) so each part knows
its first row number. A small input, or one planned without Ray (tests with a caller-owned
backend), is scanned in this process by the same functions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from synth_ray.io.input_scan import (
    InputPart,
    PartScan,
    count_jsonl,
    input_parts,
    numbered,
    scan_part,
)
from synth_ray.io.inputs import Document, InputSpec, check_snapshot, resolve_input_files
from synth_ray.runtime.ray_tasks import connected, get, window

TASKS_FROM_BYTES = 64 << 20  # below this, Ray tasks cost more than they save


def scan_input(
    spec: InputSpec, estimate: Callable[[Document], int], hash_ids: bool
) -> Iterator[PartScan]:
    """Every part of the input, scanned, in read order (stopping early stops the tasks)."""
    root, files = resolve_input_files(spec.path)
    check_snapshot(spec, root, files)
    parts = input_parts(spec, root, files)
    cut = _cut(parts)
    if not connected() or sum(p.size for p in parts if not p.start) < TASKS_FROM_BYTES:
        parts = numbered(parts, {i: count_jsonl(p.path, p.start, p.end or p.size) for i, p in cut})
        for part in parts:
            yield scan_part(spec, part, estimate, hash_ids)
        return
    import ray

    remote_count = ray.remote(num_cpus=0, scheduling_strategy="SPREAD")(count_jsonl)
    counted = get([remote_count.remote(p.path, p.start, p.end or p.size) for _, p in cut])
    parts = numbered(parts, dict(zip([i for i, _ in cut], counted, strict=True)))
    remote_scan = ray.remote(num_cpus=0, scheduling_strategy="SPREAD", max_retries=2)(scan_part)
    in_flight = window()
    pending: deque[Any] = deque()
    spec_ref, estimate_ref = ray.put(spec), ray.put(estimate)
    todo = iter(parts)
    try:
        for part in todo:
            pending.append(remote_scan.remote(spec_ref, part, estimate_ref, hash_ids))
            if len(pending) >= in_flight:
                yield get(pending.popleft())
        while pending:
            yield get(pending.popleft())
    finally:
        for ref in pending:  # planning stopped early (a limit, an error): drop the rest
            ray.cancel(ref)


def input_bytes(spec: InputSpec) -> int:
    """The input's size in bytes, as snapshotted (or as it is now)."""
    if spec.files is not None:
        return sum(size for _, size in spec.files)
    _, files = resolve_input_files(spec.path)
    return sum(f.stat().st_size for f in files)


def _cut(parts: list[InputPart]) -> list[tuple[int, InputPart]]:
    """The JSONL parts followed by another part of the same file: their counts number it."""
    return [
        (i, p)
        for i, p in enumerate(parts)
        if i + 1 < len(parts) and parts[i + 1].file_index == p.file_index
    ]
