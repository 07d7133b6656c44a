"""A job whose engine is a real `vllm serve` (the CPU build's OpenAI-compatible server, the
embedded model) reached through a fault-injecting proxy, from `synth-ray run`.

    python -m pytest tests/test_remote_job.py

The proxy answers chosen requests with a 429 and a Retry-After, a 500, a dropped connection,
and, for a while, nothing at all (a stuck server): the job must end with every row exactly
once, the retries counted by reason, the stuck replica found by stall detection and its
requests re-sent, and the API key (the server demands one) nowhere in the output or the logs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO
from fault_proxy import Fault, FaultProxy

from synth_ray.engine.dtype import choose_dtype, read_cpu_flags

SECRET = "sk-synth-ray-test-0f3c9a7e5d"  # the server's key: it must not leak anywhere
pytestmark = pytest.mark.engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(embedded_model, tmp_path_factory):
    """`vllm serve` of the embedded model as `smol`, on one core, demanding SECRET."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    dtype = choose_dtype("auto", True, read_cpu_flags()).dtype
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", embedded_model,
        "--served-model-name", "smol", "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "1024", "--enforce-eager", "--dtype", dtype, "--api-key", SECRET,
    ]  # fmt: skip
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("vllm serve did not come up: " + log.read_text()[-3000:])
    yield url
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


def job_config(tmp_path: Path, base_url: str, **openai) -> Path:
    config = {
        "method": "generate",
        "input": {"path": str(REPO / "examples" / "prompts.jsonl"), "text_column": "prompt"},
        "output": {"path": str(tmp_path / "out"), "rows_per_shard": 2},
        "engine": {
            "kind": "openai",
            "model": "smol",
            "max_model_len": 1024,
            "openai": {
                "base_url": f"{base_url}/v1",
                "api_key_env": "SYNTH_RAY_TEST_KEY",
                "tokenizer": "embedded:smollm2-135m-instruct",
                "max_attempts": 4,
                "requests_per_minute": 6000,  # the pool's limiter actor, on every request
                "tokens_per_minute": 10_000_000,
                "input_price_per_million": 0.5,
                "output_price_per_million": 2.0,
                **openai,
            },
        },
        "sampling": {"max_tokens": 24, "temperature": 0.0},
        "resources": {"replicas": 1, "cpus_per_replica": 1},
        "ray": {"num_cpus": 2},
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(config))
    return path


def run(config: Path, key: str | None = SECRET, *more: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SYNTH_RAY_TEST_KEY", None)
    if key is not None:
        env["SYNTH_RAY_TEST_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "synth_ray", "run", str(config), "--no-progress", *more],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_a_remote_job_through_faults_keeps_every_row_once_and_no_secret(tmp_path, served):
    """8 prompts, one replica, 4 units. The first attempts of the first three prompts the
    server sees meet a 429 (Retry-After 1), a 500 and a dropped connection, each retried by
    the replica. Those of the 6th to 8th find the server stuck: the replica's progress
    stops, stall detection (5 s) replaces it and the scheduler re-sends their requests,
    which the server, no longer stuck for them, answers. Every other attempt goes through."""
    stuck = threading.Event()
    first = [
        Fault(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "1"}),
        Fault(500, b'{"error": {"message": "boom"}}'),
        Fault(drop=True),
        None,
        None,
        Fault(hang=stuck),
        Fault(hang=stuck),
        Fault(hang=stuck),
    ]
    seen: list[tuple[int, ...]] = []

    def decide(method: str, path: str, n: int) -> Fault | None:
        if method != "POST":
            return None
        prompt = tuple(json.loads(proxy.body)["prompt"])
        if prompt in seen:
            return None  # a retry or a re-send
        seen.append(prompt)
        return first[len(seen) - 1]

    with FaultProxy(served, decide) as proxy:
        config = job_config(tmp_path, proxy.url)
        path = json.loads(config.read_text())
        path["scheduler"] = {"stall_timeout_s": 5, "batch_size": 1}
        config.write_text(json.dumps(path))
        try:
            done = run(config)
        finally:
            stuck.set()
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-3000:]
    out = tmp_path / "out"
    rows = pq.read_table(out / "data").to_pylist()
    ids = [r["source_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 8  # every prompt once
    assert all(r["text"] and r["n_output_tokens"] > 0 for r in rows)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accounted"] and stats["rows_errored"] == 0
    retried = stats["remote"]["stages"]["main"]["retries_by_reason"]
    # each fault retried once by the replica, and counted with the row it ends in; not
    # counted: a dropped kept-alive connection, which the HTTP client re-sends itself (the
    # server never saw it), and a retry whose replica the stall replaced before it ended (the
    # scheduler re-sent that request: its new result has no retry)
    faults = {"HTTP 429", "HTTP 500", "connection (RemoteProtocolError)"}
    assert set(retried) <= faults and all(n == 1 for n in retried.values()), retried
    assert retried and stats["requests_resent"] >= 3 - len(retried)
    assert stats["replicas_stalled"] >= 1 and stats["requests_resent"] >= 1
    usage = stats["remote"]["stages"]["main"]
    assert usage["input_tokens"] == stats["input_tokens"] > 0
    cost = (usage["input_tokens"] * 0.5 + usage["output_tokens"] * 2.0) / 1e6
    assert stats["remote"]["cost_usd"] == pytest.approx(cost)
    assert "remote engines: cost $" in done.stdout
    assert "estimated cost $" in (out / "README.md").read_text()
    # the key: sent to the server (which demands it), written nowhere
    for file in out.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file
    assert SECRET not in said


def test_the_real_server_refuses_a_wrong_key_at_a_replicas_start(served):
    """What fails a job at once (a replica that cannot start, before any became ready):
    the real server's 401 to a wrong key, as one line naming the key's setting."""
    from synth_ray.engine.openai_engine import OpenAIEngine, RemoteAuthError, RemoteSettings

    with pytest.raises(RemoteAuthError, match=r"api_key_env: .* refused the key \(HTTP 401"):
        OpenAIEngine("smol", RemoteSettings(base_url=f"{served}/v1", api_key="sk-wrong"))
    OpenAIEngine("smol", RemoteSettings(base_url=f"{served}/v1", api_key=SECRET))
