"""Run a generator replica at normal CPU priority, as raw vLLM runs.

    python -c "from synth_ray.runtime.priority import run_at_normal_priority as r; print(r())"

Ray starts every worker process at nice 15 (its `worker_niceness`), below the driver, raylet,
GCS and dashboard agent at nice 0; a GPU engine's EngineCore and Worker processes inherit it
from the actor that spawns them, and a CPU engine's step thread from the actor's thread. On a machine where those share the engine's cores (a 2-core laptop,
a CPU node, a GPU node whose engine core process busy-loops), every wake-up of a nice-0 process
preempts the engine: CFS weighs nice 0 about 28x nice 15. So the actor lowers itself to nice 0
before it builds the engine. Linux keeps a nice value per thread, so every thread of the
process is changed. Lowering nice needs CAP_SYS_NICE (root in most containers); without it the
replica keeps Ray's value and reports it.
"""

from __future__ import annotations

import os


def _thread_ids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return [0]  # no /proc: the calling thread only


def run_at_normal_priority(target: int = 0) -> int:
    """Set every thread of this process to nice `target` (if it is above it); returns the nice
    value in force afterwards. Engine processes started after this inherit it."""
    if not hasattr(os, "setpriority"):
        return 0
    for tid in _thread_ids():
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) > target:
                os.setpriority(os.PRIO_PROCESS, tid, target)
        except PermissionError:
            break  # not permitted here: keep Ray's niceness, reported by the caller
        except (ProcessLookupError, OSError):
            continue  # a thread that ended meanwhile
    return os.getpriority(os.PRIO_PROCESS, 0)
