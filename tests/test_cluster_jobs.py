"""Cluster jobs on a real multi-node Ray cluster on loopback: `synth-ray submit` through the Jobs
API, then the failures a long job meets (driver killed, worker node lost, engine and actor
killed, an engine that cannot start).

    pytest tests/test_cluster_jobs.py

The cluster: a head with no CPUs for work (the driver runs there) and two worker nodes with one
CPU each, tagged with a custom resource (node_a, node_b) so a test can find and kill exactly one
node's raylet. Two replicas therefore run one per worker node. Every Ray process of the cluster
uses token authentication (README: clusters), and teardown kills only this cluster's processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO, write_jsonl
from test_cluster_address import free_port

pytestmark = pytest.mark.engine
RAY = str(Path(sys.executable).parent / "ray")
SYNTH_RAY = str(Path(sys.executable).parent / "synth-ray")


class LoopbackCluster:
    def __init__(self) -> None:
        # the job's entrypoint (`synth-ray run`) is found on the PATH the cluster started with
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "HF_HUB_OFFLINE": "1", "PATH": path}
        self.port = free_port()
        self.dashboard = f"http://127.0.0.1:{free_port()}"
        self.temp = tempfile.mkdtemp(prefix="synth-ray-jobs-")
        self._ray(
            "start",
            "--head",
            f"--port={self.port}",
            "--num-cpus=0",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard.rsplit(':', 1)[1]}",
            f"--temp-dir={self.temp}",
            *self._node_ports(),
        )
        for name in ("node_a", "node_b"):
            self.add_worker(name)

    def _ray(self, *args: str) -> None:
        subprocess.run(
            [RAY, *args, "--disable-usage-stats"],
            check=True,
            env=self.env,
            capture_output=True,
            timeout=180,
        )

    def add_worker(self, name: str) -> None:
        self._ray(
            "start",
            f"--address=127.0.0.1:{self.port}",
            "--num-cpus=1",
            f"--resources={json.dumps({name: 1})}",
            *self._node_ports(),
        )

    @staticmethod
    def _node_ports() -> list[str]:
        """Every node of one machine needs its own agent ports: with Ray's defaults the second
        node's dashboard agent cannot bind 52365, and job submission finds no agent."""
        return [
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]

    def raylet_pid(self, name: str) -> int | None:
        found = subprocess.run(
            ["pgrep", "-f", f"raylet.*static_resource_list=.*{name},1"],
            capture_output=True,
            text=True,
        )
        pids = [int(p) for p in found.stdout.split()]
        return pids[0] if pids else None

    def kill_node(self, name: str) -> None:
        """SIGKILL the node's raylet and every process under it (its workers, their engines)."""
        pid = self.raylet_pid(name)
        assert pid is not None, f"no raylet for {name}"
        tree = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        for child in [pid, *(int(p) for p in tree.stdout.split())]:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def ensure_workers(self) -> None:
        for name in ("node_a", "node_b"):
            if self.raylet_pid(name) is None:
                self.add_worker(name)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [SYNTH_RAY, *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def submit(self, config: Path) -> str:
        proc = self.cli("submit", str(config), "--address", self.dashboard)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        match = re.search(r"submitted job (\S+)", proc.stdout)
        assert match, proc.stdout
        return match.group(1)

    def status(self, job_id: str) -> str:
        """Through the CLI: the token-auth mode is read once per process, so a client in this
        (test) process could not switch to the cluster's."""
        proc = self.cli("status", job_id, "--address", self.dashboard, "--json", timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)["status"]

    def wait_terminal(self, job_id: str, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(job_id)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return status
            time.sleep(2)
        raise AssertionError(f"job {job_id} not finished after {timeout}s")

    def close(self) -> None:
        # this cluster's processes only: `ray stop` would kill every Ray on the machine
        subprocess.run(["pkill", "-9", "-f", self.temp], capture_output=True, timeout=60)
        for name in ("node_a", "node_b"):
            if self.raylet_pid(name):
                try:
                    self.kill_node(name)
                except AssertionError:
                    pass  # it died meanwhile, from the pkill above
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(embedded_model):
    c = LoopbackCluster()
    yield c
    c.close()


def committed_units(out: Path) -> int:
    manifest = out / "_manifest.jsonl"
    if not manifest.exists():
        return 0
    return sum(1 for line in manifest.read_text().splitlines() if line.strip())


def wait_for_units(
    out: Path, at_least: int, cluster: LoopbackCluster, job: str, timeout: float = 600
) -> int:
    """Until `at_least` units are committed; fails at once, with the log, if the job ended."""
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    while time.monotonic() < deadline:
        n = committed_units(out)
        if n >= at_least:
            return n
        if time.monotonic() - checked > 10:
            checked = time.monotonic()
            status = cluster.status(job)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                log = cluster.cli("logs", job, "--address", cluster.dashboard).stdout
                raise AssertionError(
                    f"job {job} ended {status} before {at_least} units:\n{log[-3000:]}"
                )
        time.sleep(0.5)
    raise AssertionError(f"fewer than {at_least} units committed in {out} after {timeout}s")


def job_file(
    tmp_path: Path, n_prompts: int, max_tokens: int = 12, **engine
) -> tuple[Path, Path, list[str]]:
    rows = [
        {"id": f"q{i:03d}", "text": f"Write one sentence about the number {i}."}
        for i in range(n_prompts)
    ]
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "out"
    config = tmp_path / "job.yaml"
    engine_yaml = ", ".join(
        f"{k}: {v}"
        for k, v in {
            "max_model_len": 512,
            "enforce_eager": "true",
            "cpu_kv_cache_gib": 1,
            **engine,
        }.items()
    )
    config.write_text(
        "method: generate\n"
        f"input: {{path: {data}, id_column: id}}\n"
        f"output: {{path: {out}, rows_per_shard: 4}}\n"
        f"engine: {{{engine_yaml}}}\n"
        f"sampling: {{max_tokens: {max_tokens}, temperature: 0.7, ignore_eos: true}}\n"
        "resources: {replicas: 2}\n"
        "scheduler: {batch_size: 2, max_in_flight_per_replica: 4, start_timeout_s: 600}\n"
    )
    return config, out, [r["id"] for r in rows]


def assert_exactly_once(out: Path, ids: list[str]) -> None:
    table = pq.read_table(out / "data")
    assert sorted(table.column("source_id").to_pylist()) == sorted(ids)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accounted"] and stats["rows_out"] == len(ids) and stats["rows_errored"] == 0


def test_submit_survives_driver_kill_and_node_loss(cluster, tmp_path):
    # 20 units: long enough that the driver is killed mid-run on a fast engine too (with
    # vLLM's offline batch defaults 10 units once finished between two polls)
    config, out, ids = job_file(tmp_path, 80)
    job = cluster.submit(config)

    # the driver dies mid-job: what it committed stays, the job is reported failed
    wait_for_units(out, 1, cluster, job)
    driver = subprocess.run(
        ["pgrep", "-f", "synth-ray run job.yaml"], capture_output=True, text=True
    ).stdout.split()
    assert driver, "no driver process"
    for pid in driver:
        os.kill(int(pid), signal.SIGKILL)
    assert cluster.wait_terminal(job, timeout=120) == "FAILED"
    before = committed_units(out)
    assert 1 <= before < 20

    # the same submit again resumes; a worker node is lost while it runs
    again = cluster.submit(config)
    wait_for_units(out, before + 1, cluster, again)
    cluster.kill_node("node_b")
    assert cluster.wait_terminal(again, timeout=900) == "SUCCEEDED"
    assert_exactly_once(out, ids)
    runs = [json.loads(x) for x in (out / "_runs.jsonl").read_text().splitlines()]
    assert runs[-1]["units_committed"] == 20 - before  # committed units were not redone

    logs = cluster.cli("logs", again, "--address", cluster.dashboard)
    assert logs.returncode == 0 and "already committed" in logs.stdout
    status = cluster.cli("status", again, "--address", cluster.dashboard)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    # an ordinary Ray job: Ray's own CLI sees it too
    ray_status = subprocess.run(
        [RAY, "job", "status", again, "--address", cluster.dashboard],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    plain = re.sub(r"\x1b\[[0-9;]*m", "", ray_status.stdout + ray_status.stderr)
    assert f"Job '{again}' succeeded" in plain, plain[-2000:]
    cluster.ensure_workers()


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def test_engine_that_cannot_start_fails_the_job_fast(cluster, tmp_path, embedded_model):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    for f in Path(embedded_model).iterdir():  # tokenizer and config, but no weights
        if f.is_file() and not f.name.endswith((".safetensors", ".bin")):
            shutil.copy2(f, broken / f.name)
    config, out, _ = job_file(tmp_path, 4, model=str(broken))
    config.write_text(config.read_text().replace("replicas: 2", "replicas: 1"))
    started = time.monotonic()
    job = cluster.submit(config)
    assert cluster.wait_terminal(job, timeout=300) == "FAILED"
    assert time.monotonic() - started < 300
    logs = cluster.cli("logs", job, "--address", cluster.dashboard)
    assert "generator replica failed to start" in logs.stdout, logs.stdout[-2000:]
    assert committed_units(out) == 0


def _kill_every_replica() -> None:
    """SIGKILL every replica's actor mid-job: on a CPU its engine runs inside it and dies with
    it (an engine that fails while its actor lives is tests/test_inprocess_engine.py's)."""
    actors = _pids("ray::GeneratorActor")
    assert actors, "no replica to kill"
    for pid in actors:
        os.kill(pid, signal.SIGKILL)


def test_stop_commits_in_flight_then_resubmit_survives_killed_replicas(cluster, tmp_path):
    """`synth-ray stop` is Ray's SIGTERM to the driver: the run drains within its grace
    (Ray's SIGKILL is held off by RAY_JOB_STOP_WAIT_TIME_S) and says how to resume. The same
    submit again resumes; while it runs, both replicas are killed: both are replaced, their
    work re-sent, and the job ends with every row exactly once. (One job for both, to start its engines once: CI's time is engine starts.)"""
    cluster.ensure_workers()
    # 24 units, at most 2 in flight: the stop (a CLI's start, then the drain) must leave work
    # undone even on a fast machine, where 12 units once all committed before it arrived
    config, out, ids = job_file(tmp_path, 96, max_tokens=24)
    config.write_text(config.read_text().replace("batch_size: 2", "batch_size: 1"))
    job = cluster.submit(config)
    wait_for_units(out, 1, cluster, job)
    stopped = cluster.cli("stop", job, "--address", cluster.dashboard, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert cluster.wait_terminal(job, timeout=120) == "STOPPED"
    log = cluster.cli("logs", job, "--address", cluster.dashboard).stdout
    assert "SIGTERM: stopping; no new work is sent" in log, log[-3000:]
    assert "stopped: stopped by SIGTERM" in log and "Rerun the same command" in log, log[-3000:]
    runs = [json.loads(x) for x in (out / "_runs.jsonl").read_text().splitlines()]
    assert runs[-1]["stopped_by"] == "SIGTERM"
    before = committed_units(out)
    print(f"units committed before the stop took effect: {before} of 24")
    assert before < 23, "the stop left too little to resume (and to kill replicas during)"

    again = cluster.submit(config)
    wait_for_units(out, before + 1, cluster, again)
    _kill_every_replica()
    assert cluster.wait_terminal(again, timeout=900) == "SUCCEEDED"
    assert_exactly_once(out, ids)
    runs = [json.loads(x) for x in (out / "_runs.jsonl").read_text().splitlines()]
    assert runs[-1]["units_committed"] == 24 - before
    assert runs[-1]["requests_resent"] > 0


@pytest.mark.skipif(os.geteuid() != 0, reason="a node with its own mounts needs root here")
def test_a_node_that_cannot_see_a_local_path_is_named(cluster, tmp_path):
    """The check that a local input or output is on every node, run for real: a third node
    starts in its own mount namespace, where a tmpfs hides one folder. The check must name
    that node (and only it) in one line, and pass for a path every node sees."""
    hidden = tmp_path / "only-on-this-node"
    hidden.mkdir()
    (hidden / "_job.json").write_text("{}")
    ports = " ".join(cluster._node_ports())
    start = (
        f"mount -t tmpfs tmpfs {hidden} && exec {RAY} start --address=127.0.0.1:{cluster.port} "
        f"--num-cpus=0 --resources='{json.dumps({'node_blind': 1})}' {ports} "
        "--disable-usage-stats"
    )
    subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", start],
        check=True, env=cluster.env, capture_output=True, timeout=180,
    )  # fmt: skip
    check = (
        "import ray, sys\n"
        "from synth_ray.runtime.cluster import check_visible_from_every_node\n"
        f"ray.init(address='127.0.0.1:{cluster.port}', log_to_driver=False)\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        check_visible_from_every_node('output.path', path, 'use shared storage')\n"
        "        print('visible')\n"
        "    except Exception as err:\n"
        "        print(type(err).__name__, err)\n"
    )
    try:
        seen = subprocess.run(
            [sys.executable, "-c", check, str(hidden / "_job.json"), str(REPO / "README.md")],
            env=cluster.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        cluster.kill_node("node_blind")
    blind, visible = seen.stdout.strip().splitlines()[-2:]
    assert blind.startswith(
        f"ResourceError output.path {hidden}/_job.json: not visible from Ray"
    ), seen.stdout + seen.stderr
    assert re.search(r"node\(s\) [\d.]+ \([0-9a-f]{8}\); use shared storage$", blind), blind
    assert visible == "visible"
