"""Small helpers for the driver's Ray tasks (planning scans, per-unit summaries).

    python -m pytest tests/test_plan_scan.py tests/test_magpie.py

Work the driver hands to Ray tasks runs beside the data, reserves no CPU (replicas holding
every CPU cannot starve it) and is spread over the nodes; at most `window()` tasks are in
flight, so the driver holds only what the finished ones returned.
"""

from __future__ import annotations

from typing import Any

MAX_WINDOW = 256


def connected() -> bool:
    """Whether this process is connected to Ray (then tasks may run beside the data)."""
    try:
        import ray
    except ImportError:  # pragma: no cover - Ray is a dependency
        return False
    return ray.is_initialized()


def window() -> int:
    """How many tasks to keep in flight: one per CPU of the cluster, at least 2."""
    import ray

    return min(MAX_WINDOW, max(2, int(ray.cluster_resources().get("CPU", 2))))


def get(refs: Any) -> Any:
    """`ray.get`, raising a task's own exception (an InputChangedError's one line) rather
    than Ray's wrapper with the remote traceback."""
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
