"""Live progress: the ETA and failures in the progress line, `_progress.json` and `_timeline/`
sampled as a stage runs, and `synth-ray status` reading them.

    pytest tests/test_progress.py
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import job_config, write_jsonl
from fake_backend import FakeBackend
from typer.testing import CliRunner

from synth_ray.cli import app
from synth_ray.io.filesystem import open_location
from synth_ray.io.output_store import PROGRESS_FILE
from synth_ray.runtime.job import run_job
from synth_ray.runtime.progress import JobProgress, format_duration
from synth_ray.runtime.timeline import MAX_SAMPLES, Timeline, engine_tokens
from synth_ray.stats import UnitStats


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45.9, "45s"), (725, "12m05s"), (11220, "3h07m"), (187200, "2d04h")],
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert format_duration(seconds) == text


def test_the_progress_line_has_share_eta_and_failures(capsys, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("synth_ray.runtime.progress.time.monotonic", lambda: now[0])
    progress = JobProgress(units_total=10, units_done=2, enabled=True, log_every_s=0)
    assert progress.eta_s() is None  # nothing committed by this run yet
    now[0] += 30
    progress.failures = 1
    progress.unit_committed(UnitStats(rows_in=4, rows_out=3, errored={"prompt": 1}))
    line = capsys.readouterr().err
    # one unit in 30 s (engine start included), 7 left: 210 s
    assert progress.eta_s() == 210.0
    assert "units 3/10 (30%)" in line and "1 errored, 1 replica failures" in line
    assert "ETA 3m30s" in line
    now[0] += 10  # then one unit in 10 s: the rate since the first commit, 6 left
    progress.unit_committed(UnitStats(rows_in=4, rows_out=4))
    assert progress.eta_s() == 60.0


def _scheduler(replicas: dict, failures: int = 0, resent: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        replicas={
            rid: SimpleNamespace(
                ready=ready, in_flight={0: []} if held else {}, outstanding=held, mark=mark
            )
            for rid, (ready, held, mark) in replicas.items()
        },
        failures=["x"] * failures,
        requests_resent=resent,
    )


def test_the_timeline_samples_on_its_own_clock_and_sums_engine_tokens(tmp_path):
    clock = [100.0]
    location = open_location(tmp_path)
    progress = JobProgress(units_total=4, units_done=0, enabled=False)
    timeline = Timeline(location, "units", progress, every_s=5, clock=lambda: clock[0])
    timeline.tick(_scheduler({0: (True, 8, (50, 1)), 1: (False, 0, None)}))
    clock[0] += 2
    timeline.tick(_scheduler({0: (True, 8, (90, 1))}))  # too soon: no sample
    clock[0] += 4
    # replica 0 advanced to 120; replica 2 replaced a failed one (a warm actor of an earlier
    # stage, at 3000 in its lifetime: its first answer is its baseline)
    timeline.tick(_scheduler({0: (True, 0, (120, 2)), 2: (True, 4, (3000, 0))}, failures=1))
    clock[0] += 5
    timeline.tick(_scheduler({0: (True, 0, (120, 2)), 2: (True, 4, (3030, 0))}, failures=1))
    timeline.writer.flush()
    samples = [json.loads(x) for x in location.read_bytes(timeline.name).decode().splitlines()]
    assert [s["engine_tokens"] for s in samples] == [0, 70, 100]
    assert samples[0]["replicas_starting"] == 1 and samples[0]["replicas_busy"] == 1
    assert samples[1]["replicas_idle"] == 1 and samples[1]["requests_in_flight"] == 4
    live = json.loads(location.read_bytes(PROGRESS_FILE))
    assert live["state"] == "running" and live["replica_failures"] == 1
    assert live["timeline"] == timeline.name and progress.failures == 1
    assert engine_tokens(7) is None and engine_tokens((3, 1)) == 3


def test_a_long_run_keeps_a_bounded_timeline(tmp_path):
    clock = [0.0]
    timeline = Timeline(
        open_location(tmp_path),
        "units",
        JobProgress(1, 0, enabled=False),
        every_s=1,
        clock=lambda: clock[0],
    )
    for _ in range(MAX_SAMPLES + 10):
        clock[0] += 1
        timeline.tick(_scheduler({}))
    assert len(timeline.samples) <= MAX_SAMPLES
    assert timeline.samples[0]["t"] == 1 and timeline.samples[-1]["t"] == MAX_SAMPLES + 10


def test_a_job_leaves_progress_and_timeline_that_status_reads(tmp_path, embedded_model):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"question {i}"} for i in range(6)])
    config = job_config(
        tmp_path,
        path,
        method="generate",
        input={"path": str(path), "text_column": "prompt", "id_column": None},
        output={"rows_per_shard": 2},
    )
    run_job(config, show_progress=False, backend=FakeBackend())
    out = tmp_path / "out"
    live = json.loads((out / PROGRESS_FILE).read_text())
    assert live["state"] == "done" and live["units_done"] == live["units_total"] == 3
    assert live["rows_out"] == 6 and live["eta_s"] is None
    samples = (out / live["timeline"]).read_text().splitlines()
    assert len(samples) >= 2 and json.loads(samples[-1])["units_done"] == 3
    shown = CliRunner().invoke(app, ["status", str(out), "--json"])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    assert report["live"]["state"] == "done" and report["live"]["units_done"] == 3


class _RecordingMetrics:
    def __init__(self) -> None:
        self.updates: list[tuple[dict, dict]] = []

    def update(self, sample: dict, replicas: dict) -> None:
        self.updates.append((sample, replicas))


def test_each_sample_feeds_the_metrics_per_replica(tmp_path):
    clock = [0.0]
    metrics = _RecordingMetrics()
    timeline = Timeline(
        open_location(tmp_path),
        "units",
        JobProgress(5, 1, enabled=False),
        every_s=1,
        clock=lambda: clock[0],
        metrics=metrics,  # type: ignore[arg-type]
    )
    timeline.tick(_scheduler({0: (True, 3, (40, 0)), 1: (True, 0, 7)}))
    clock[0] += 1
    timeline.tick(_scheduler({0: (True, 2, (65, 1)), 1: (True, 0, 8)}))
    (first, r1), (second, r2) = metrics.updates
    assert r1 == {"0": {"new_tokens": 0, "in_flight": 3}, "1": {"new_tokens": 0, "in_flight": 0}}
    assert r2["0"] == {"new_tokens": 25, "in_flight": 2}
    assert first["units_pending"] == second["units_pending"] == 4


METRICS_SCRIPT = """
import json, sys, time, urllib.request
import ray
# Ray picks the metrics port itself: a port chosen free beforehand was once taken by one of
# the node's own services before its metrics agent bound it ("Address already in use")
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
port = ray.nodes()[0]["MetricsExportPort"]
from synth_ray.runtime.metrics import JobMetrics
m = JobMetrics("quick", "units")
sample = dict(units_pending=3, rows_in=10, rows_out=6, rows_errored=1, output_tokens=120,
              replica_failures=1, requests_resent=4)
m.update(sample, {"0": {"new_tokens": 70, "in_flight": 5}})
m.update({**sample, "rows_out": 8, "rows_in": 13}, {"0": {"new_tokens": 30, "in_flight": 2}})
deadline = time.time() + 90
while time.time() < deadline:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    lines = [x for x in body.splitlines() if x.startswith("ray_synth_ray_")]
    if len({x.split("{")[0] for x in lines}) >= 7:
        print(json.dumps(lines))
        break
    time.sleep(1)
"""


def test_metrics_reach_rays_prometheus_endpoint(tmp_path):
    """A real Ray node's metrics agent exports them, with their tags, within seconds."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", METRICS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-3000:]
    lines = json.loads(done.stdout.strip().splitlines()[-1])

    def value(name: str, **tags: str) -> float:
        for line in lines:
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in tags.items()):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} {tags} not exported: {lines}")

    tags = {"job": "quick", "stage": "units"}
    assert value("ray_synth_ray_engine_output_tokens_total", replica="0", **tags) == 100
    assert value("ray_synth_ray_requests_in_flight", replica="0", **tags) == 2
    assert value("ray_synth_ray_units_pending", **tags) == 3
    assert value("ray_synth_ray_rows_total", outcome="kept", **tags) == 8
    assert value("ray_synth_ray_rows_total", outcome="dropped", **tags) == 4
    assert value("ray_synth_ray_replica_failures_total", **tags) == 1
    assert value("ray_synth_ray_requests_resent_total", **tags) == 4
