"""Progress while a job runs: units done/total, rows/s, output tokens/s, acceptance, errored
rows and replica failures so far, and the time left.

On a terminal it is a rich progress bar; elsewhere (CI, logs, `ray job logs`) one plain line
when a unit commits, at most every `log_every_s` seconds, so logs stay readable. The ETA is the
time the running stage needs for its units left, at the rate units committed since this run's
first commit (engine start-up left out); from the run's start after its first commit only.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from synth_ray.stats import UnitStats


def format_duration(seconds: float) -> str:
    """`45s`, `12m05s`, `3h07m`, `2d04h`."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class JobProgress:
    def __init__(
        self,
        units_total: int,
        units_done: int,
        enabled: bool = True,
        log_every_s: float = 10.0,
        label: str = "",
    ) -> None:
        self.units_total = units_total
        self.units_done = units_done
        self.units_at_start = units_done
        self.label = label or "units"
        self.stats = UnitStats()
        self.started = time.monotonic()
        self.enabled = enabled
        self.log_every_s = log_every_s
        self._last_log = 0.0
        self.failures = 0  # replica failures so far (the timeline keeps it current)
        self.first_commit_at: float | None = None
        self.console = Console(stderr=True)
        self.bar: Progress | None = None
        if enabled and sys.stderr.isatty():
            self.bar = Progress(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("units", total=units_total, completed=units_done, rate="")
            self.bar.start()

    def eta_s(self) -> float | None:
        """Seconds until every unit is committed, at this run's rate so far."""
        done = self.units_done - self.units_at_start
        if done <= 0:
            return None
        now = time.monotonic()
        if done >= 2 and self.first_commit_at is not None:
            rate = (done - 1) / max(now - self.first_commit_at, 1e-9)
        else:
            rate = done / max(now - self.started, 1e-9)
        return round((self.units_total - self.units_done) / rate, 1)

    def describe(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = self.stats.rows_in
        acceptance = self.stats.rows_out / done if done else 0.0
        eta = self.eta_s()
        failed = (f", {self.stats.rows_errored} errored" if self.stats.rows_errored else "") + (
            f", {self.failures} replica failures" if self.failures else ""
        )
        return (
            f"{self.stats.rows_out / elapsed:.1f} rows/s, "
            f"{self.stats.output_tokens / elapsed:.0f} out tok/s, "
            f"acceptance {acceptance:.0%}{failed}, "
            f"ETA {format_duration(eta) if eta is not None else 'after the first commit'}"
        )

    def unit_committed(self, stats: UnitStats) -> None:
        self.units_done += 1
        if self.first_commit_at is None:
            self.first_commit_at = time.monotonic()
        self.stats.merge(stats)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.units_done, rate=self.describe())
        elif self.enabled and time.monotonic() - self._last_log >= self.log_every_s:
            self._last_log = time.monotonic()
            share = self.units_done / self.units_total if self.units_total else 1.0
            print(
                f"{self.label} {self.units_done}/{self.units_total} ({share:.0%}): "
                f"{self.describe()}",
                file=sys.stderr,
                flush=True,
            )

    def notice(self, message: str) -> None:
        """A line the user must see now (a stalled replica), whatever the progress mode."""
        if self.bar is not None:
            self.bar.console.print(f"[yellow]warning:[/] {message}", highlight=False)
        else:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
