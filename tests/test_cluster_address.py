"""`ray.address`: a job joins an existing Ray cluster (started with `ray start` on loopback)
instead of starting its own, and an unreachable address fails in bounded time with one line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO, write_jsonl

pytestmark = pytest.mark.engine
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def ray_cluster():
    # Token auth turns itself on for `ray start` once ~/.ray/auth_token exists; every process
    # of this cluster, the job's driver included, uses the same mode (README: clusters).
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    port = free_port()
    temp = tempfile.mkdtemp(prefix="synth-ray-cluster-")
    subprocess.run(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={free_port()}",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        # Only this cluster: `ray stop` would kill every Ray on the machine, a user's job too.
        # Its GCS, raylet and helpers all carry the unique temp dir in their command lines;
        # its workers exit when their raylet does.
        subprocess.run(["pkill", "-9", "-f", temp], capture_output=True, timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def test_job_runs_on_an_existing_cluster(tmp_path, ray_cluster, embedded_model):
    address, env = ray_cluster
    data = write_jsonl(tmp_path / "p.jsonl", [{"text": "Say hi."}, {"text": "Count to three."}])
    config = tmp_path / "job.yaml"
    config.write_text(
        f"method: generate\ninput: {{path: {data}}}\noutput: {{path: {tmp_path / 'out'}}}\n"
        f"engine: {{max_model_len: 512, enforce_eager: true}}\nsampling: {{max_tokens: 8}}\n"
        f"ray: {{address: '{address}'}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "synth_ray", "run", str(config), "--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pq.read_table(tmp_path / "out" / "data").num_rows == 2
    # the job joined that cluster rather than starting its own: its session logs show the driver
    status = subprocess.run(
        [RAY, "list", "jobs", "--address", address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "synth_ray" in status.stdout or "SUCCEEDED" in status.stdout, status.stdout[-1000:]


def test_unreachable_address_fails_with_one_line(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"text": "hi"}])
    config = tmp_path / "job.yaml"
    config.write_text(
        f"method: generate\ninput: {{path: {data}}}\noutput: {{path: {tmp_path / 'out'}}}\n"
        f"ray: {{address: '127.0.0.1:{free_port()}'}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    proc = subprocess.run(
        [sys.executable, "-m", "synth_ray", "run", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ray.address 127.0.0.1:") and "cannot connect" in last
