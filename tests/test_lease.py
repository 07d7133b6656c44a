"""One writer per output: a second run is refused, a dead holder is taken over, a run taken
over commits nothing more.

    python -m pytest tests/test_lease.py

Whole runs use the simulated engine (the lease is the driver's, before any engine starts);
the holders are real processes, killed for real; another host's holder is its record, with
a virtual clock for its heartbeat.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO, job_config, make_docs, use_local_s3, write_jsonl
from fake_backend import FakeBackend, VirtualClock

from synth_ray.io.filesystem import open_location
from synth_ray.io.lease import HOLDER_FILE, LeaseLost, OutputBusyError, OutputLease
from synth_ray.io.manifest import UnitRecord
from synth_ray.io.output_store import OutputStore
from synth_ray.runtime.job import run_job

HOLD = """
import sys, time
from synth_ray.io.filesystem import open_location
from synth_ray.io.lease import OutputLease
lease = OutputLease(open_location(sys.argv[1]))
lease.acquire()
print(lease.run_id, flush=True)
time.sleep(600)
"""


@pytest.fixture()
def docs(tmp_path):
    return write_jsonl(tmp_path / "docs.jsonl", make_docs(12))


def listing(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def test_a_second_run_or_overwrite_on_a_held_output_is_refused(tmp_path, docs, embedded_model):
    config = job_config(tmp_path, docs)
    out = tmp_path / "out"
    run_job(config, show_progress=False, backend=FakeBackend())
    holder = OutputLease(open_location(str(out)))
    holder.acquire()
    try:
        before = listing(out)
        with pytest.raises(OutputBusyError, match=f"being written by run {holder.run_id} on "):
            run_job(config, show_progress=False, backend=FakeBackend(), overwrite=True)
        # the command line: exit 2, one line naming the holder, nothing deleted or written
        path = tmp_path / "job.yaml"
        path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        cli = subprocess.run(
            [sys.executable, "-m", "synth_ray", "run", str(path), "--overwrite", "--no-progress"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert cli.returncode == 2, cli.stderr
        lines = [line for line in cli.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: output.path "), cli.stderr
        assert f"run {holder.run_id}" in lines[0] and f"pid {os.getpid()}" in lines[0]
        assert listing(out) == before
        from synth_ray.status import collect_status

        held = collect_status(str(out))["held_by"]
        assert held["run_id"] == holder.run_id and held["pid"] == os.getpid()
    finally:
        holder.release()
    assert not (out / HOLDER_FILE).exists()


def test_a_killed_holder_is_taken_over_at_once_on_its_host(tmp_path, docs, embedded_model):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        dead_run = proc.stdout.readline().strip()
        assert json.loads((out / HOLDER_FILE).read_text())["run_id"] == dead_run
        with pytest.raises(OutputBusyError):  # alive: refused
            run_job(job_config(tmp_path, docs), show_progress=False, backend=FakeBackend())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    # its record is still there, its lock went with it: taken over without waiting
    assert json.loads((out / HOLDER_FILE).read_text())["run_id"] == dead_run
    started = time.monotonic()
    summary = run_job(job_config(tmp_path, docs), show_progress=False, backend=FakeBackend())
    assert summary.stats["accounted"] and time.monotonic() - started < 60
    assert not (out / HOLDER_FILE).exists()


def other_host_record(folder, clock: VirtualClock, age_s: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"run_id": "elsewhere1", "host": "node-7", "pid": 4242, "started": 0.0}
    (folder / HOLDER_FILE).write_text(json.dumps({**record, "heartbeat": clock() - age_s}))


def test_another_hosts_dead_holder_is_taken_over_once_its_heartbeat_is_stale(tmp_path):
    clock = VirtualClock()
    clock.advance(1_000)
    other_host_record(tmp_path, clock, age_s=15)
    lease = OutputLease(open_location(str(tmp_path)), clock=clock, sleep=clock.advance)
    lease.acquire()
    try:
        assert 44 <= clock() - 1_000 <= 47  # waited until the heartbeat was 60 s old
        assert json.loads((tmp_path / HOLDER_FILE).read_text())["run_id"] == lease.run_id
    finally:
        lease.release()


def test_another_hosts_live_holder_is_refused_as_soon_as_its_heartbeat_moves(tmp_path):
    clock = VirtualClock()
    clock.advance(1_000)
    other_host_record(tmp_path, clock, age_s=3)

    def sleep(seconds: float) -> None:  # the other run beats meanwhile
        clock.advance(seconds)
        if clock() - 1_000 >= 8:
            other_host_record(tmp_path, clock, age_s=0)

    lease = OutputLease(open_location(str(tmp_path)), clock=clock, sleep=sleep)
    with pytest.raises(OutputBusyError, match="being written by run elsewhere1 on node-7"):
        lease.acquire()
    assert clock() - 1_000 < 12
    assert json.loads((tmp_path / HOLDER_FILE).read_text())["run_id"] == "elsewhere1"


def beating_holder(folder, clock: VirtualClock, skew_s: float, host: str = "node-7", **extra):
    """A live holder on a host whose clock is `skew_s` off ours: a sleep that lets it beat
    every 10 s of our time while the lease under test watches."""
    record = {"run_id": "elsewhere2", "host": host, "pid": 77, "started": 0.0, **extra}

    def beat() -> None:
        (folder / HOLDER_FILE).write_text(json.dumps({**record, "heartbeat": clock() + skew_s}))

    folder.mkdir(parents=True, exist_ok=True)
    beat()
    last = [clock()]

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if clock() - last[0] >= 10:
            last[0] = clock()
            beat()

    return sleep


@pytest.mark.parametrize("skew_s", [-300.0, 300.0])
def test_a_live_holder_whose_clock_differs_is_refused_a_dead_one_taken_over(tmp_path, skew_s):
    """Another host's clock 5 minutes behind or ahead of ours: its heartbeat's timestamp says
    nothing; whether the record moves does."""
    clock = VirtualClock()
    clock.advance(1_000)
    sleep = beating_holder(tmp_path, clock, skew_s)
    lease = OutputLease(open_location(str(tmp_path)), clock=clock, sleep=sleep)
    with pytest.raises(OutputBusyError, match="being written by run elsewhere2"):
        lease.acquire()
    # the same holder, dead: its record stops moving, and is taken over within the window
    start = clock()
    lease = OutputLease(open_location(str(tmp_path)), clock=clock, sleep=clock.advance)
    lease.acquire()
    try:
        assert clock() - start <= 61
        assert json.loads((tmp_path / HOLDER_FILE).read_text())["run_id"] == lease.run_id
    finally:
        lease.release()


def test_a_holder_under_another_kernel_with_this_host_name_is_not_taken_for_dead(tmp_path):
    """Two containers may share a host name and a filesystem, not a kernel: the lock this run
    got proves nothing about a process under another kernel."""
    import socket

    clock = VirtualClock()
    clock.advance(1_000)
    sleep = beating_holder(tmp_path, clock, 0.0, host=socket.gethostname(), kernel="other-boot")
    lease = OutputLease(open_location(str(tmp_path)), clock=clock, sleep=sleep)
    with pytest.raises(OutputBusyError, match="being written by run elsewhere2"):
        lease.acquire()


def test_a_run_taken_over_commits_nothing_more(tmp_path):
    store = OutputStore(tmp_path)
    lease = OutputLease(store.location, heartbeat_s=0.02)
    lease.acquire()
    store.lease = lease
    try:
        taker = {"run_id": "taker00001", "host": "node-9", "pid": 1, "started": 0.0}
        (tmp_path / HOLDER_FILE).write_text(json.dumps({**taker, "heartbeat": time.time()}))
        deadline = time.monotonic() + 30
        while lease.lost is None and time.monotonic() < deadline:
            time.sleep(0.01)
        record = UnitRecord(0, "u0", "data/part-000000.parquet", None, 0, {"rows_in": 0})
        with pytest.raises(LeaseLost, match="taken over by run taker00001 on node-9"):
            store.child("stages").commit(record)
        assert store.committed() == {}
    finally:
        lease.release()
    assert json.loads((tmp_path / HOLDER_FILE).read_text())["run_id"] == "taker00001"


def test_a_run_paused_past_its_lease_rereads_it_before_committing(tmp_path):
    """A driver suspended past the stale window (its heartbeat thread with it) must not
    commit on resuming before its next beat: the commit itself reads the record."""
    clock = VirtualClock()
    clock.advance(1_000)
    store = OutputStore(tmp_path)
    lease = OutputLease(store.location, heartbeat_s=3_600, clock=clock)
    lease.acquire()
    store.lease = lease
    try:
        record = UnitRecord(0, "u0", "data/part-000000.parquet", None, 0, {"rows_in": 0})
        clock.advance(120)  # paused; meanwhile another host took the output over
        taker = {"run_id": "taker00002", "host": "node-3", "pid": 9, "started": 0.0}
        (tmp_path / HOLDER_FILE).write_text(json.dumps({**taker, "heartbeat": clock()}))
        with pytest.raises(LeaseLost, match="taken over by run taker00002"):
            store.commit(record)
        with pytest.raises(LeaseLost):
            store.sweep_unreferenced("")
        assert store.committed() == {}
    finally:
        lease.release()


def test_a_damaged_holder_record_is_read_as_a_dead_holder(
    tmp_path, docs, embedded_model, monkeypatch
):
    """A record with a heartbeat that is not a number (a disk that damaged it): `status`
    still answers, and a run takes the output over instead of failing on it."""
    import synth_ray.io.lease as lease_mod
    from synth_ray.status import collect_status

    config = job_config(tmp_path, docs)
    run_job(config, show_progress=False, backend=FakeBackend())
    # the window's length is tested on a virtual clock above: here a short one, so the run
    # watches the damaged record for 1 s instead of the default 20
    defaults = lease_mod.OutputLease.__init__.__defaults__
    monkeypatch.setattr(
        lease_mod.OutputLease.__init__, "__defaults__", (None, 0.5, 1.0, *defaults[3:])
    )
    damaged = {"run_id": "x", "host": "node-1", "pid": 3, "started": "?", "heartbeat": "soon"}
    (tmp_path / "out" / HOLDER_FILE).write_text(json.dumps(damaged))
    assert collect_status(str(tmp_path / "out"))["held_by"]["run_id"] == "x"
    summary = run_job(config, show_progress=False, backend=FakeBackend())
    assert summary.units_skipped == summary.units_total


@pytest.mark.parametrize("where", ["folder", "uri"])
def test_a_fenced_runs_late_commit_never_replaces_a_units_record(tmp_path, where):
    """A run taken over that still commits (paused between its lease check and its append)
    names a unit the new holder committed already, maybe with shards it swept: the unit's
    first record keeps counting, and each record names the run that wrote it."""
    path = tmp_path / "out"
    store = OutputStore(path if where == "folder" else path.as_uri())
    store.location.make_dir()
    lease = OutputLease(store.location, heartbeat_s=3_600)
    lease.acquire()
    store.lease = lease
    try:
        first = UnitRecord(0, "u0", "data/part-000000-holder.parquet", None, 0, {"rows_in": 0})
        store.commit(first)
    finally:
        lease.release()
    fenced = UnitRecord(0, "u0", "data/part-000000-fenced.parquet", None, 0, {"rows_in": 0})
    OutputStore(store.location).commits.append(fenced)  # the fenced run: no lease check left
    for reader in (store, OutputStore(store.location)):
        [record] = reader.committed().values()
        assert record.data_shard == first.data_shard and record.run_id == lease.run_id


@pytest.fixture(params=["file", "s3"])
def uri_output(request, tmp_path, monkeypatch):
    """An output URI with conditional writes: `file://`, or S3 as moto's server speaks it
    (real HTTP, If-None-Match and If-Match included)."""
    if request.param == "file":
        yield (tmp_path / "out").as_uri()
        return
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    use_local_s3(monkeypatch, f"http://{host}:{port}")
    boto3.client("s3").create_bucket(Bucket="lease-bucket")
    try:
        yield "s3://lease-bucket/out"
    finally:
        server.stop()


def test_runs_racing_for_an_object_store_output_leave_exactly_one_holder(uri_output):
    """Six runs released at once on an output nobody holds: record-then-write would let
    several take it; a create-only write lets exactly one."""
    import threading

    leases = [
        OutputLease(open_location(uri_output), heartbeat_s=0.3, stale_after_s=5) for _ in range(6)
    ]
    start = threading.Barrier(len(leases))
    outcome: dict[int, str] = {}

    def take(i: int) -> None:
        start.wait()
        try:
            leases[i].acquire()
            outcome[i] = "held"
        except OutputBusyError:
            outcome[i] = "busy"

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(leases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert sorted(outcome.values()) == ["busy"] * 5 + ["held"], outcome
        [winner] = [leases[i] for i, what in outcome.items() if what == "held"]
        record = json.loads(open_location(uri_output).read_bytes(HOLDER_FILE))
        assert record["run_id"] == winner.run_id
    finally:
        for lease in leases:
            lease.release()
    assert open_location(uri_output).read_bytes(HOLDER_FILE) is None


def test_an_object_store_holder_that_stopped_is_taken_over_and_learns_it_lost(uri_output):
    """A holder whose heartbeat stopped (a killed driver, or one paused) is taken over once
    its record stood still for the window; if it comes back, its next heartbeat write is
    refused by the store and it commits nothing more."""
    paused = OutputLease(open_location(uri_output), heartbeat_s=3_600, stale_after_s=2)
    paused.acquire()
    taker = OutputLease(open_location(uri_output), heartbeat_s=0.3, stale_after_s=2)
    started = time.monotonic()
    taker.acquire()
    try:
        assert 1.5 <= time.monotonic() - started < 30
        paused._write_record()  # back from its pause: the heartbeat it was due
        with pytest.raises(LeaseLost, match=f"taken over by run {taker.run_id}"):
            paused.check()
        record = json.loads(open_location(uri_output).read_bytes(HOLDER_FILE))
        assert record["run_id"] == taker.run_id
    finally:
        paused.release()
        taker.release()


def test_a_job_on_s3_takes_the_lease_and_gives_it_back(uri_output, tmp_path, embedded_model):
    docs = write_jsonl(tmp_path / "docs.jsonl", make_docs(6))
    config = job_config(tmp_path, docs, output={"path": uri_output})
    summary = run_job(config, show_progress=False, backend=FakeBackend())
    assert summary.stats["accounted"] and summary.units_committed == summary.units_total
    store = OutputStore(uri_output)
    assert {r.run_id for r in store.committed().values()} != {""}
    assert store.location.read_bytes(HOLDER_FILE) is None


def test_an_unreadable_holder_record_is_refused_after_the_window_never_taken(tmp_path):
    """A record the store cannot read (here a folder where the file should be) is neither a
    released lease nor a dead holder's: the run watches it, then stops with one line."""
    out = tmp_path / "out"
    (out / HOLDER_FILE).mkdir(parents=True)
    clock = VirtualClock()
    lease = OutputLease(open_location(out.as_uri()), clock=clock, sleep=clock.advance)
    with pytest.raises(OutputBusyError, match="its lease record cannot be read"):
        lease.acquire()
    assert 60 <= clock() <= 65


@pytest.mark.parametrize("alive", [True, False])
def test_a_holder_of_this_process_space_is_taken_at_once_only_when_its_pid_is_gone(tmp_path, alive):
    """Same kernel and pid namespace, lock won: a gone pid is a dead holder (taken at once);
    a live one (another mount's emulated lock, a reused pid) is watched like any other."""
    from synth_ray.io.lease import kernel_id

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    if not alive:
        proc.kill()
        proc.wait(timeout=30)
    try:
        record = {"run_id": "samebox01", "host": "h", "pid": proc.pid, "started": 0.0}
        clock = VirtualClock()
        clock.advance(1_000)
        tmp_path.mkdir(exist_ok=True)
        record.update(kernel=kernel_id(), heartbeat=clock())
        (tmp_path / HOLDER_FILE).write_text(json.dumps(record))
        lease = OutputLease(open_location(str(tmp_path)), clock=clock, sleep=clock.advance)
        lease.acquire()
        lease.release()
        waited = clock() - 1_000
        assert (waited >= 59) if alive else (waited == 0), waited
    finally:
        proc.kill()
        proc.wait(timeout=30)
