"""Append-only JSON-lines files that survive a torn tail: the manifest and the run log.

    python -m pytest tests/test_jsonl_log.py

A kill or a full disk in the middle of an append leaves a partial last line. Reading skips it
(that append never completed: for the manifest, its unit was never committed), and skips a
complete line that is not a JSON object, with one warning on stderr naming the file; the next
append first cuts the partial line, so a tear never glues itself to a complete record and
hides it. Appends are flushed and fsync'd before they return, and a file's first line is made
durable in its folder too (the folder is fsync'd), so a committed record survives a power loss.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from synth_ray.io.storage_errors import naming


def read_lines(path: Path) -> list[str]:
    """The complete lines of `path` (without their newline); a torn last line is left out
    with a warning. An absent file has none."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    complete, newline, torn = data.rpartition(b"\n")
    if torn:
        _warn(path, "its last line is torn (an append that never finished): skipped")
    if not newline:
        return []
    return [line.decode("utf-8", errors="replace") for line in complete.split(b"\n")]


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete line of `path` that is a JSON object, in order; others are skipped
    with a warning."""
    records: list[dict[str, Any]] = []
    bad = 0
    for line in read_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    if bad:
        _warn(path, f"{bad} line(s) are not JSON records: skipped")
    return records


def append_line(path: Path, line: str) -> None:
    """Append one line (a newline is added), durably: a torn tail left by an earlier append
    is cut first; the data is fsync'd, and so is the folder when this created the file."""
    if "\n" in line:
        raise ValueError("a log line must not contain a newline")
    with naming(path):
        new_folder = not path.parent.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        cut_torn_tail(path)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if created:
            fsync_folder(path.parent)
        if new_folder:
            fsync_folder(path.parent.parent)


def cut_torn_tail(path: Path) -> None:
    """Cut a partial last line so the next append starts on a line of its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_folder(folder: Path) -> None:
    """Make the names in `folder` durable (a new file, a rename); a no-op where the platform
    cannot open a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_warned: set[tuple[str, str]] = set()


def _warn(path: Path, what: str) -> None:
    key = (str(path), what)
    if key not in _warned:  # once per file and kind: a status loop must not flood
        _warned.add(key)
        print(f"warning: {path}: {what}", file=sys.stderr, flush=True)
