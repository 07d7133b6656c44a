"""Kill a process's descendants once it dies, even when it dies by SIGKILL.

    python -m synth_ray.runtime.reaper PID [RECORD_FILE]

On a GPU, vLLM runs its engine in child processes of the generator actor (EngineCore,
tensor-parallel workers; a CPU engine runs inside the actor and needs none of this). When
the actor is SIGKILLed (ray.kill, a lost raylet, the OOM killer), those children are
reparented and live on with their memory; on a GPU that is the GPU memory a replacement
replica needs, so it cannot start. The actor starts this watcher on itself before building the
engine: every second it records the actor's descendants, and once the actor is gone it kills
the last recorded set (and anything they started), then exits. With RECORD_FILE it also writes
the pids it would kill after each round (one per line, replaced atomically): what an operator
or a test reads to know the reaper has seen a process, without guessing how long it takes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def _write_record(path: str, pids: list[int]) -> None:
    staging = f"{path}.tmp"
    with open(staging, "w") as fh:
        fh.write("".join(f"{p}\n" for p in pids))
    os.replace(staging, path)


def watch(pid: int, interval_s: float = 1.0, record: str | None = None) -> None:
    import psutil

    try:
        target = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    me = os.getpid()
    known: dict[int, psutil.Process] = {}
    while True:
        try:
            if not target.is_running() or target.status() == psutil.STATUS_ZOMBIE:
                break
            for child in target.children(recursive=True):
                if child.pid != me:
                    known[child.pid] = child
        except psutil.NoSuchProcess:
            break
        if record:
            _write_record(record, sorted(known))
        time.sleep(interval_s)
    for proc in known.values():
        try:
            victims = [*proc.children(recursive=True), proc]
        except psutil.Error:
            victims = [proc]
        for victim in victims:
            try:
                victim.kill()  # psutil checks the create time, so a reused pid is left alone
            except psutil.Error:
                pass


def start_reaper(pid: int | None = None, record: str | None = None) -> subprocess.Popen:
    """Start the watcher for `pid` (default: this process) in its own session; with `record`,
    it writes the pids it would kill to that file after each round."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "synth_ray.runtime.reaper",
            str(pid or os.getpid()),
            *([record] if record else []),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


if __name__ == "__main__":
    watch(int(sys.argv[1]), record=sys.argv[2] if len(sys.argv) > 2 else None)
