"""Graceful stop: the first SIGTERM or SIGINT drains, the second exits at once.

    python -m pytest tests/test_stopping.py   # signals a real `synth-ray run` and resumes it

Ctrl-C, Slurm preemption (`--signal`), a Kubernetes pod deletion and `synth-ray stop` all
arrive as SIGTERM or SIGINT. On the first one the scheduler stops dispatching, lets the
batches in flight finish for up to the grace period so their units commit, and the job ends
with `JobStopped`: the CLI exits with `EXIT_STOPPED` and says how to resume. A second signal
exits the process at once. Either way nothing is half-committed (a unit's commit is one
atomic step), so the rerun resumes from the committed units.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped on request; the same command resumes
DEFAULT_GRACE_S = 25.0  # inside Kubernetes' default 30 s terminationGracePeriodSeconds


class JobStopped(Exception):
    """The job stopped on a signal after committing what finished within the grace period.
    `summary` (a RunSummary, set by run_job) says what this run committed."""

    summary: Any = None


class StopRequest:
    """Set by the first signal; read by the scheduler between polls. The handler only sets
    the flag: it runs in the main thread between any two bytecodes, commit path included, so
    it does no I/O that could raise there or re-enter a stream; the loop that notices the
    flag announces it (`acknowledge`)."""

    def __init__(
        self, grace_s: float = DEFAULT_GRACE_S, clock: Callable[[], float] = time.monotonic
    ):
        self.grace_s = grace_s
        self.clock = clock
        self.signal_name: str | None = None
        self.deadline: float | None = None
        self._announce: Callable[[str], None] | None = None
        self._acknowledged = False

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, signal_name: str) -> None:
        if self.signal_name is None:
            self.signal_name = signal_name
            self.deadline = self.clock() + self.grace_s

    def acknowledge(self) -> None:
        """Announce the stop, once, from the loop that noticed it (not from the handler)."""
        if not self.requested or self._acknowledged:
            return
        self._acknowledged = True
        if self._announce is not None:
            self._announce(
                f"{self.signal_name}: stopping; no new work is sent, work in flight has "
                f"{self.grace_s:g}s (--grace) to finish and commit. Send it again to exit at once."
            )

    def expired(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def install_signal_handlers(self, announce: Callable[[str], None]) -> None:
        """First SIGTERM/SIGINT: `request`, announced once. Second: exit now with
        EXIT_STOPPED, killing this process's descendants (a local Ray cluster it started, its
        workers and their engines: Ray's agents would otherwise outlive it) but nothing else.
        `ray.init` replaces the SIGTERM handler: call `reinstall` after it."""

        def handle(signum: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self.requested:  # never returns: nothing it does can reach the commit path
                # a raw write: sys.stderr may be in the middle of a write of the main thread
                os.write(2, f"\n{name} again: exiting now; committed units are kept\n".encode())
                _kill_descendants()
                os._exit(EXIT_STOPPED)
            self.request(name)

        self._announce = announce
        self._handler = handle
        self.reinstall()

    def reinstall(self) -> None:
        """Put this request's handlers back (after `ray.init` replaced SIGTERM's)."""
        handler = getattr(self, "_handler", None)
        if handler is not None and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, handler)

    def check(self) -> None:
        """Raise JobStopped if a stop was requested (between stages, before planning)."""
        if self.requested:
            self.acknowledge()
            raise JobStopped(f"stopped by {self.signal_name} before more work started")


def _kill_descendants() -> None:
    """SIGKILL every process below this one. Only descendants: a cluster this run joined is
    not its child and is left alone, as is whatever started this run."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            continue
