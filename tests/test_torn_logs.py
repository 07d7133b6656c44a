"""Append-only logs that a kill or a full disk tore mid-append: read past, cut, never fatal.

    python -m pytest tests/test_torn_logs.py

The unit tests tear each file as a crashed append does (a partial last line); the job test
tears a finished output's manifest and run log at once, as an operator met it, then reruns
and asks `synth-ray status` (a real subprocess), on the whole job path with the simulated
engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
from conftest import REPO, job_config, make_docs, write_jsonl
from fake_backend import FakeBackend

from synth_ray.io.jsonl_log import append_line, read_lines, read_records
from synth_ray.io.manifest import Manifest, UnitRecord
from synth_ray.io.output_store import RUNS_FILE, OutputStore
from synth_ray.runtime.job import run_job


def record(i: int) -> UnitRecord:
    return UnitRecord(i, f"u{i}", f"data/part-{i:06d}.parquet", None, 3)


def test_a_torn_manifest_line_is_no_commit_and_the_next_append_cuts_it(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.append(record(0))
    with open(manifest.path, "a") as fh:
        fh.write('{"unit_index": 1, "unit_id": "u1", "data_sh')  # killed mid-append
    assert list(manifest.read()) == ["u0"]
    manifest.append(record(2))
    assert list(manifest.read()) == ["u0", "u2"]
    assert manifest.path.read_text().count("\n") == 2  # the tear is gone, nothing glued to it


def test_a_torn_run_log_is_read_past_and_appended_after(tmp_path, capsys):
    store = OutputStore(tmp_path)
    store.record_run({"started": 1.0, "units_committed": 2})
    with open(tmp_path / RUNS_FILE, "a") as fh:
        fh.write('{"started": 2.0, "units_comm')
    assert store.runs() == [{"started": 1.0, "units_committed": 2}]
    assert "last line is torn" in capsys.readouterr().err
    store.record_run({"started": 3.0, "units_committed": 0})
    assert [run["started"] for run in store.runs()] == [1.0, 3.0]


def test_lines_that_are_not_records_are_skipped_with_one_warning(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    append_line(path, json.dumps({"a": 1}))
    with open(path, "a") as fh:
        fh.write("\x00\x00garbage\n[1, 2]\n")
    append_line(path, json.dumps({"a": 2}))
    assert read_records(path) == [{"a": 1}, {"a": 2}]
    assert read_records(path) == [{"a": 1}, {"a": 2}]
    assert capsys.readouterr().err.count("not JSON records") == 1
    assert read_lines(tmp_path / "absent.jsonl") == []


def test_a_finished_output_with_torn_logs_reruns_and_reports(tmp_path, embedded_model):
    """The operator's case: after a tear in both logs, the rerun does the units whose lines
    were lost and exits cleanly, `synth-ray status` exits 0, and no row is lost or doubled."""
    docs = write_jsonl(tmp_path / "docs.jsonl", make_docs(30))
    config = job_config(tmp_path, docs)
    out = tmp_path / "out"
    run_job(config, show_progress=False, backend=FakeBackend())
    before = sorted(_ids(out))
    manifest = out / "_manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    assert len(lines) > 3
    # the last two commits' lines lost, a third torn: as if killed mid-append of it
    manifest.write_text("".join(lines[:-3]) + lines[-3][: len(lines[-3]) // 2])
    with open(out / RUNS_FILE, "a") as fh:
        fh.write('{"finished": 17')

    summary = run_job(config, show_progress=False, backend=FakeBackend())
    assert summary.units_committed == 3
    assert sorted(_ids(out)) == before
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accounted"] and stats["rows_out"] == len(before)
    status = subprocess.run(
        [sys.executable, "-m", "synth_ray", "status", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr


def _ids(out) -> list[str]:
    ids: list[str] = []
    for file in OutputStore(out).data_files():
        ids.extend(pq.read_table(file, columns=["id"]).column("id").to_pylist())
    return ids


def test_new_files_and_folders_are_fsynced_into_their_parents(tmp_path, monkeypatch):
    """A commit line or a shard that survives a power loss needs its name to survive too:
    the folder it was created in is fsync'd, and so is that folder's parent when the folder
    itself is new."""
    import pyarrow as pa

    import synth_ray.io.jsonl_log as jsonl_log
    import synth_ray.io.shards as shards

    synced: list[str] = []
    monkeypatch.setattr(jsonl_log, "fsync_folder", lambda folder: synced.append(str(folder)))
    monkeypatch.setattr(shards, "fsync_dir", lambda folder: synced.append(str(folder)))
    append_line(tmp_path / "new" / "_manifest.jsonl", "{}")
    assert synced == [str(tmp_path / "new"), str(tmp_path)]
    synced.clear()
    append_line(tmp_path / "new" / "_manifest.jsonl", "{}")
    assert synced == []  # an existing file in an existing folder: its data fsync is enough
    shards.write_shard_atomic(pa.table({"a": [1]}), tmp_path / "out" / "data" / "part.parquet")
    assert synced == [str(tmp_path / "out" / "data"), str(tmp_path / "out")]
