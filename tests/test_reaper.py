"""An engine's processes must not outlive their replica: the reaper kills a SIGKILLed
process's descendants (vLLM's EngineCore and workers would otherwise keep their memory)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

PARENT = """
import subprocess, sys, time
from synth_ray.runtime.reaper import start_reaper
reaper = start_reaper(record=sys.argv[1])
child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"])
print(child.pid, reaper.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def recorded(path) -> set[int]:
    try:
        return {int(x) for x in path.read_text().split()}
    except (OSError, ValueError):
        return set()


def test_children_of_a_sigkilled_process_are_killed(tmp_path):
    record = tmp_path / "reaper.pids"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(record)], stdout=subprocess.PIPE, text=True
    )
    child_pid, reaper_pid = map(int, parent.stdout.readline().split())
    # until the child has started its own child and the reaper has recorded both
    deadline = time.monotonic() + 120
    grandchildren: list[int] = []
    while time.monotonic() < deadline:
        grandchildren = [p.pid for p in psutil.Process(child_pid).children()]
        if grandchildren and {child_pid, *grandchildren} <= recorded(record):
            break
        time.sleep(0.1)
    assert grandchildren and alive(child_pid)
    assert {child_pid, *grandchildren} <= recorded(record), "the reaper never saw them"
    parent.kill()  # SIGKILL: no cleanup of its own runs
    parent.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
        alive(p) for p in [child_pid, *grandchildren, reaper_pid]
    ):
        time.sleep(0.2)
    assert not alive(child_pid), "the orphaned child survived"
    assert not any(alive(p) for p in grandchildren), "its own child survived"
    assert not alive(reaper_pid), "the reaper did not exit"
