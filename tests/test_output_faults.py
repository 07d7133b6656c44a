"""The output filesystem fails mid-run: one line naming the path and the cause, committed units
intact and readable, and the rerun after the cause is fixed resumes exactly.

    python -m pytest tests/test_output_faults.py

A full disk is a real tmpfs that fills up (mounting one needs root: skipped otherwise, with
the reason); a read-only remount is injected where the writes happen, since a tmpfs with
files open for writing refuses to turn read-only under a running job.
"""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import job_config, make_docs, write_jsonl
from fake_backend import FakeBackend

import synth_ray.io.shards as shards_mod
from synth_ray.io.output_store import OutputStore
from synth_ray.io.shards import TEMP_PREFIX
from synth_ray.io.storage_errors import find_storage_error
from synth_ray.runtime.job import run_job
from synth_ray.runtime.scheduler import JobFailed


def _ids(out: Path) -> list[str]:
    store = OutputStore(out)
    return [
        i for f in store.data_files() for i in pq.read_table(f, columns=["id"])["id"].to_pylist()
    ]


def _assert_committed_units_intact(out: Path) -> int:
    store = OutputStore(out)
    committed = store.committed()
    for record in committed.values():
        for shard in [*record.data_shards(), *record.error_shards()]:
            pq.read_table(out / shard)  # complete and readable
    assert not list(out.rglob(f"{TEMP_PREFIX}*")), "a failed write left its temp file"
    return len(committed)


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")


@pytest.fixture()
def docs(tmp_path):
    return write_jsonl(tmp_path / "in" / "docs.jsonl", make_docs(160, words=120))


def test_full_disk_fails_with_one_line_then_resumes_exactly(tmp_path, docs, embedded_model):
    clean = tmp_path / "clean"
    clean.mkdir()
    run_job(job_config(clean, docs), show_progress=False, backend=FakeBackend())
    clean_ids = _ids(clean / "out")
    size = sum(f.stat().st_size for f in (clean / "out").rglob("*") if f.is_file())

    fs = tmp_path / "fs"
    _mount_tmpfs(fs, str(size // 3))
    try:
        config = job_config(fs, docs)
        with pytest.raises((JobFailed, OSError)) as failed:
            run_job(config, show_progress=False, backend=FakeBackend())
        line = find_storage_error(failed.value) or str(failed.value)
        assert "no space left on device (ENOSPC)" in line and str(fs / "out") in line, line
        assert "\n" not in str(failed.value)
        committed = _assert_committed_units_intact(fs / "out")
        assert committed >= 1

        # space freed: the same job resumes from the committed units and finishes
        subprocess.run(["mount", "-o", "remount,size=256m", str(fs)], check=True)
        summary = run_job(config, show_progress=False, backend=FakeBackend())
        assert summary.units_skipped == committed
        ids = _ids(fs / "out")
        assert sorted(ids) == sorted(clean_ids) and len(ids) == len(set(ids))
        stats = json.loads((fs / "out" / "stats.json").read_text())
        assert stats["accounted"] and stats["rows_out"] == len(clean_ids)
    finally:
        subprocess.run(["umount", "-l", str(fs)], capture_output=True)


@pytest.mark.parametrize("where", ["shard", "manifest"])
def test_read_only_output_fails_with_one_line_then_resumes(
    tmp_path, docs, embedded_model, monkeypatch, where
):
    """The output turns read-only after 3 writes, either of a replica's shard or of the
    driver's commit line (half of that line written: the resume must read past it)."""
    clean = tmp_path / "clean"
    clean.mkdir()
    run_job(job_config(clean, docs), show_progress=False, backend=FakeBackend())
    writes = {"n": 0}

    def read_only_after(real):
        def write(*args, **kwargs):
            writes["n"] += 1
            if writes["n"] > 3:
                raise OSError(errno.EROFS, "Read-only file system")
            return real(*args, **kwargs)

        return write

    import synth_ray.io.jsonl_log as jsonl_log

    if where == "shard":
        monkeypatch.setattr(
            shards_mod.pq, "write_table", read_only_after(shards_mod.pq.write_table)
        )
    else:  # a commit line (or the run log's) half written when the filesystem turns read-only

        def half_then_read_only(*args, **kwargs):
            fh = open(*args, **kwargs)
            if "a" not in str(args[1] if len(args) > 1 else kwargs.get("mode", "")):
                return fh
            writes["n"] += 1
            if writes["n"] <= 3:
                return fh
            real_write = fh.write

            def write(text):
                real_write(text[: len(text) // 2])  # the bytes that made it to the file
                fh.flush()
                raise OSError(errno.EROFS, "Read-only file system")

            fh.write = write
            return fh

        monkeypatch.setattr(jsonl_log, "open", half_then_read_only, raising=False)
    config = job_config(tmp_path, docs)
    with pytest.raises((JobFailed, OSError)) as failed:
        run_job(config, show_progress=False, backend=FakeBackend())
    line = find_storage_error(failed.value) or str(failed.value)
    assert "read-only file system (EROFS)" in line and str(tmp_path / "out") in line, line
    committed = _assert_committed_units_intact(tmp_path / "out")
    assert committed >= 1
    if where == "manifest":  # a torn line was left for the resume to read past
        logs = [f.read_bytes() for f in (tmp_path / "out").rglob("*.jsonl")]
        assert any(data and not data.endswith(b"\n") for data in logs)

    monkeypatch.undo()  # writable again
    summary = run_job(config, show_progress=False, backend=FakeBackend())
    assert summary.units_skipped == committed
    ids = _ids(tmp_path / "out")
    assert sorted(ids) == sorted(_ids(clean / "out")) and len(ids) == len(set(ids))


def test_cli_prints_one_line_for_a_storage_failure(tmp_path, docs, embedded_model, monkeypatch):
    """`synth-ray run` on a real full disk: the real job fails where the disk fills, and the
    command prints one line naming the output and the cause. Only the engine is simulated
    (the CLI is given the fake backend; nothing else is replaced)."""
    from typer.testing import CliRunner

    import synth_ray.runtime.job as job_mod
    from synth_ray.cli import app

    fs = tmp_path / "fs"
    _mount_tmpfs(fs, "96k")
    try:
        config = tmp_path / "job.yaml"
        config.write_text(
            f"method: rephrase\ninput: {{path: {docs}}}\noutput: {{path: {fs / 'out'}, "
            "rows_per_shard: 8}\nengine: {max_model_len: 512}\nsampling: {max_tokens: 16}\n"
            "rephrase: {styles: [easy, qa], max_chunk_tokens: 64}\n"
        )
        real_run_job = job_mod.run_job

        def on_the_fake_engine(*args, **kwargs):
            return real_run_job(*args, **{**kwargs, "backend": FakeBackend()})

        monkeypatch.setattr(job_mod, "run_job", on_the_fake_engine)
        result = CliRunner().invoke(app, ["run", str(config), "--no-progress"])
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.strip().splitlines() if line.strip()]
        # the replicas' warnings as writes failed, then the one line the run ends with
        lines = [line for line in lines if not line.startswith("warning: ")]
        assert len(lines) == 1, result.output
        assert f"output {fs / 'out'}" in lines[0], lines[0]
        assert "no space left on device (ENOSPC)" in lines[0], lines[0]
        assert "committed units are kept; rerun to resume" in lines[0], lines[0]
    finally:
        subprocess.run(["umount", "-l", str(fs)], capture_output=True)


def test_one_replicas_broken_storage_resends_its_slices_elsewhere(tmp_path, docs, embedded_model):
    """One replica's disk fails every write (EIO): its slices are re-sent to the other and
    the job ends exactly once; when every replica's storage fails, the job fails with the
    storage line after a few attempts, committing nothing half-written."""
    clean = tmp_path / "clean"
    clean.mkdir()
    run_job(job_config(clean, docs), show_progress=False, backend=FakeBackend())

    two = {"replicas": 2}
    config = job_config(tmp_path, docs, resources=two, scheduler={"batch_size": 1})
    backend = FakeBackend(broken_storage={0})
    summary = run_job(config, show_progress=False, backend=backend)
    ids = _ids(tmp_path / "out")
    assert sorted(ids) == sorted(_ids(clean / "out")) and len(ids) == len(set(ids))
    assert summary.stats["accounted"]
    assert {rid for rid, _, _ in backend.submitted} == {0, 1}  # replica 0 was tried, and failed

    broken = tmp_path / "broken"
    broken.mkdir()
    config = job_config(broken, docs, resources=two)
    with pytest.raises(JobFailed) as failed:
        run_job(config, show_progress=False, backend=FakeBackend(broken_storage={0, 1}))
    line = str(failed.value)
    assert "input/output error (EIO)" in line and "failed 3 times, on 2 replica(s)" in line, line
    assert "\n" not in line
    assert OutputStore(broken / "out").committed() == {}
