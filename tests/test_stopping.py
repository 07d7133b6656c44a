"""Graceful stop of a real `synth-ray run` (real vLLM CPU engine, real local Ray).

    python -m pytest tests/test_stopping.py

SIGINT to the whole foreground process group (Ctrl-C) drains: the work in flight commits and
the run exits 75 with one line on how to resume, its committed units intact. A second signal
exits at once. Nothing of the local Ray cluster the run started may outlive it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from conftest import REPO, make_docs, write_jsonl

from synth_ray.io.output_store import OutputStore
from synth_ray.runtime.stopping import EXIT_STOPPED

pytestmark = pytest.mark.engine


def _config(tmp_path: Path, out: Path, docs: int = 24) -> Path:
    docs_path = write_jsonl(tmp_path / "docs.jsonl", make_docs(docs, words=20))
    body = f"""
method: rephrase
input: {{path: {docs_path}, id_column: id}}
output: {{path: {out}, rows_per_shard: 2}}
engine: {{max_model_len: 512, enforce_eager: true}}
sampling: {{max_tokens: 16}}
rephrase: {{styles: [easy, qa], max_chunk_tokens: 64}}
scheduler: {{batch_size: 1, max_in_flight_per_replica: 2}}
ray: {{num_cpus: 2}}
"""
    path = tmp_path / "job.yaml"
    path.write_text(body)
    return path


def _start(config: Path, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "synth_ray", "run", str(config), "--no-progress", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_commits(proc: subprocess.Popen[str], out: Path, n: int) -> None:
    manifest = out / "_manifest.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {n} commits before the run ended: {proc.communicate()[1][-2000:]}")


def _read_until(proc: subprocess.Popen[str], text: str, timeout: float = 120) -> str:
    """stderr read line by line until a line holds `text` (or the run ends); what was read."""
    import threading

    lines: list[str] = []
    found = threading.Event()

    def reader() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if text in line:
                found.set()
                return
        found.set()

    threading.Thread(target=reader, daemon=True).start()
    assert found.wait(timeout), f"no line with {text!r} after {timeout}s: {''.join(lines)[-2000:]}"
    return "".join(lines)


def _ray_and_engine_pids() -> set[int]:
    """Ray's daemons and workers and vLLM's engine processes now alive (not zombies)."""
    found = set()
    for proc in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        text = f"{proc.info['name']} {' '.join(proc.info['cmdline'] or [])}"
        if any(k in text for k in ("raylet", "gcs_server", "ray::", "VLLM", "ray/_private")):
            found.add(proc.info["pid"])
    return found


def _leftovers(before: set[int], grace_s: float = 15) -> list[str]:
    """Processes of that kind started since `before` and still alive after `grace_s`."""
    deadline = time.monotonic() + grace_s
    while True:
        left = _ray_and_engine_pids() - before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    names = []
    for pid in left:
        try:
            names.append(" ".join(psutil.Process(pid).cmdline())[:120])
        except psutil.NoSuchProcess:
            continue
    return names


def _ids(out: Path) -> list[str]:
    return [
        i
        for f in OutputStore(out).data_files()
        for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()
    ]


def test_ctrl_c_drains_commits_and_exits_75(tmp_path):
    """Ctrl-C: SIGINT to the whole foreground process group, Ray's processes included.
    (SIGTERM to the driver alone, as `synth-ray stop` sends it, is tested on a cluster in
    test_cluster_jobs.py.)"""
    out = tmp_path / "out"
    config = _config(tmp_path, out)
    before = _ray_and_engine_pids()
    proc = _start(config)
    _wait_for_commits(proc, out, 1)
    signalled_at = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    took = time.monotonic() - signalled_at
    assert proc.returncode == EXIT_STOPPED, stderr[-3000:]
    # the grace (25 s) plus a generous ceiling for Ray's shutdown on a loaded machine: what
    # matters is that it does not wait for the whole job (minutes here)
    assert took < 25 + 60, f"stopping took {took:.0f}s"
    name = "SIGINT"
    assert f"{name}: stopping; no new work is sent" in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"stopped: stopped by {name}") and "Rerun the same command" in last
    assert "Traceback" not in stderr
    # what committed is intact and readable, stats.json says so, the run is on record
    store = OutputStore(out)
    committed = len(store.committed())
    assert 1 <= committed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["units_committed"] == committed and stats["accounted"]
    assert store.runs()[-1]["stopped_by"] == name
    assert len(_ids(out)) == stats["rows_out"]
    assert _leftovers(before) == [], "processes of the stopped run outlived it"

    # The rerun resumes from these units exactly once: tested after `synth-ray stop` on a
    # cluster (test_cluster_jobs.py) and after every kill in test_kill_anywhere.py.


def test_second_signal_exits_at_once(tmp_path):
    out = tmp_path / "out"
    config = _config(tmp_path, out, docs=60)
    before = _ray_and_engine_pids()
    proc = _start(config, "--grace", "300")
    _wait_for_commits(proc, out, 1)
    os.killpg(proc.pid, signal.SIGINT)
    seen = _read_until(proc, "stopping; no new work is sent")  # the first one was handled
    second_at = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    stderr = seen + rest
    # at once, against a grace of 300 s (a generous ceiling for a loaded machine)
    assert time.monotonic() - second_at < 60, "the second signal did not exit at once"
    assert proc.returncode == EXIT_STOPPED, stderr[-2000:]
    assert "SIGINT again: exiting now" in stderr
    store = OutputStore(out)
    for record in store.committed().values():  # whatever committed stays readable
        for shard in record.data_shards():
            pq.read_table(out / shard)
    assert _leftovers(before) == [], "processes of the killed run outlived it"


def test_the_first_signal_only_sets_a_flag_and_the_loop_announces_it(monkeypatch):
    """The handler runs between any two bytecodes of the main thread, the commit path
    included: it must not write (a stream it interrupts mid-write raises), so the loop that
    notices the flag announces the stop, once."""
    from synth_ray.runtime.stopping import StopRequest

    class NoWrites:
        def write(self, *_):
            raise AssertionError("the signal handler wrote to stderr")

        def flush(self):
            raise AssertionError("the signal handler flushed stderr")

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    lines: list[str] = []
    stop = StopRequest(grace_s=5)
    try:
        stop.install_signal_handlers(lines.append)
        monkeypatch.setattr(sys, "stderr", NoWrites())
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs at the next bytecode boundary of this thread
        monkeypatch.undo()
        assert stop.requested and stop.signal_name == "SIGTERM" and lines == []
        stop.acknowledge()
        stop.acknowledge()
        assert len(lines) == 1 and lines[0].startswith("SIGTERM: stopping")
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
