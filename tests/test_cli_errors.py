"""The command line on bad input: exit status 2, one line naming what is wrong, no traceback,
and nothing already done is lost."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, write_jsonl


def synth_ray(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "synth_ray", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=300,
    )


def config_file(tmp_path, body):
    path = tmp_path / "job.yaml"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize(
    ("body", "extra", "message"),
    [
        (
            "method: rephrase\ninput: {path: IN, text_colum: t}\noutput: {path: OUT}\n",
            [],
            "config key input.text_colum: unknown key",
        ),
        (
            "method: rephrase\ninput: {path: IN}\noutput: {path: OUT}\n",
            ["--set", "sampling.max_tokens=lots"],
            "config key sampling.max_tokens",
        ),
        (
            "method: rephrase\ninput: {path: MISSING}\noutput: {path: OUT}\n",
            [],
            "no such file or folder",
        ),
        (
            "method: rephrase\ninput: {path: IN, text_column: body}\noutput: {path: OUT}\n",
            [],
            "input.text_column 'body'",
        ),
        (
            "method: rephrase\ninput: {path: IN}\noutput: {path: OUT}\nengine: {model: /no/such/model}\n",
            [],
            "engine.model /no/such/model: no such model folder",
        ),
    ],
)
def test_bad_config_or_input_exits_2_with_one_line(tmp_path, body, extra, message):
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello"}])
    body = (
        body.replace("IN", str(data))
        .replace("MISSING", str(tmp_path / "nope.jsonl"))
        .replace("OUT", str(tmp_path / "out"))
    )
    proc = synth_ray("run", config_file(tmp_path, body), *extra)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists(), "a bad run must not start work"


def test_gpus_asked_on_cpu_only_machine_fail_fast(tmp_path, embedded_model):
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello"}])
    body = f"method: generate\ninput: {{path: {data}}}\noutput: {{path: {tmp_path / 'out'}}}\nresources: {{gpus_per_replica: 1}}\nray: {{num_cpus: 1}}\n"
    proc = synth_ray("run", config_file(tmp_path, body))
    assert proc.returncode == 2, proc.stderr
    assert "resources.gpus_per_replica=1: the Ray cluster has 0 GPUs" in proc.stderr


def test_more_replicas_than_cpus_fail_fast(tmp_path, embedded_model):
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello"}])
    body = f"method: generate\ninput: {{path: {data}}}\noutput: {{path: {tmp_path / 'out'}}}\nresources: {{replicas: 3, gpus_per_replica: 0}}\nray: {{num_cpus: 2}}\n"
    proc = synth_ray("run", config_file(tmp_path, body))
    assert proc.returncode == 2, proc.stderr
    assert (
        "resources.replicas=3 x cpus_per_replica=1 needs 3 CPUs; the Ray cluster has 2"
        in proc.stderr
    )


def test_conflicting_rerun_refused_and_keeps_output(tmp_path, embedded_model):
    from fake_backend import FakeBackend

    from synth_ray.config import load_config
    from synth_ray.runtime.job import run_job

    data = write_jsonl(tmp_path / "in.jsonl", [{"text": f"hello {i}"} for i in range(4)])
    path = config_file(
        tmp_path,
        f"method: generate\ninput: {{path: {data}}}\noutput: {{path: {tmp_path / 'out'}}}\n",
    )
    run_job(load_config(path), show_progress=False, backend=FakeBackend())
    before = sorted(p.name for p in (tmp_path / "out" / "data").iterdir())
    proc = synth_ray("run", path, "--set", "sampling.max_tokens=3")
    assert proc.returncode == 2 and "holds output of a different config" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "data").iterdir()) == before


def test_status_reports_counts(tmp_path, embedded_model):
    from fake_backend import FakeBackend

    from synth_ray.config import load_config
    from synth_ray.runtime.job import run_job

    data = write_jsonl(
        tmp_path / "in.jsonl", [{"text": f"hello {i}"} for i in range(4)] + [{"text": ""}]
    )
    path = config_file(
        tmp_path,
        f"method: generate\ninput: {{path: {data}}}\noutput: {{path: {tmp_path / 'out'}, rows_per_shard: 2}}\n",
    )
    run_job(load_config(path), show_progress=False, backend=FakeBackend())
    import json

    proc = synth_ray("status", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["units_committed"] == 3 and report["units_pending"] == 0
    assert report["rows_in"] == 5 and report["rows_out"] == 4 and report["rows_errored"] == 1
    assert report["accounted"] is True
    missing = synth_ray("status", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no synth-ray job here" in missing.stderr
