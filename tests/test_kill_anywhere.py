"""Kill-anywhere: SIGKILL a running job's whole process group at seeded random moments,
resume each time, and the final output equals a clean run's, exactly once.

    python -m pytest tests/test_kill_anywhere.py

The job runs in a process of its own (tests/kill_anywhere_job.py: the whole job path on the
simulated engine, slowed so kills land while planning, generating, writing shards and
committing). 4 kills of a single-stage method and 3 of a two-stage one (STaR), at moments
drawn from a seeded RNG over a clean run's duration, each mapped onto the work the resumed run
still has (before the clean run's first commit: that long after the start; later: once the
commits made by then are made, plus up to one unit's time), so a kill lands in startup,
generation, a shard write or a commit rather than after a resumed run already finished. The
draws are printed on failure to replay them, with the phase each kill hit (read back from the
output folder). Then kills aimed at every phase of a
commit, on real generator actors (their slice workers write the shards in their own
processes): before the output is claimed, before anything is written, a replica's shard
written before the first commit and between commits, and after the last commit. The real
engine is killed the same way in test_end_to_end.py (during engine start, then mid-run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from conftest import REPO, make_docs, write_jsonl

from synth_ray.io.output_store import OutputStore
from synth_ray.io.shards import TEMP_PREFIX

JOB = Path(__file__).resolve().parent / "kill_anywhere_job.py"
SEED = 20261122


def _write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _run(config: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(JOB), str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _committed(out: Path) -> int:
    return len(OutputStore(out).committed()) if (out / "_job.json").exists() else 0


def _kill_after(config: Path, out: Path, commits: int, delay: float) -> bool:
    """Start the job in its own process group; once `commits` units are committed in `out`
    (counted from the start), wait `delay` more seconds and SIGKILL the group. True if the
    kill landed (the job had not finished by itself)."""
    proc = subprocess.Popen(
        [sys.executable, str(JOB), str(config)],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while _committed(out) < commits:  # polled: the condition, not a guessed time
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"the job never committed {commits} units"
        time.sleep(0.01)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def _ids(out: Path) -> list[str]:
    return [
        i
        for f in OutputStore(out).data_files()
        for i in pq.read_table(f, columns=["id"])["id"].to_pylist()
    ]


def _kill_resume_check(tmp_path: Path, data: dict, kills: int, seed: int) -> None:
    clean_out = tmp_path / "clean"
    clean_cfg = _write_config(
        tmp_path / "clean.yaml", {**data, "output": {**data["output"], "path": str(clean_out)}}
    )
    started = time.monotonic()
    log = tmp_path / "clean.log"
    with log.open("w") as stderr:  # a file: a pipe left unread while polling could fill
        clean = subprocess.Popen(
            [sys.executable, str(JOB), str(clean_cfg)], cwd=REPO, stderr=stderr
        )
        while _committed(clean_out) == 0 and clean.poll() is None:
            time.sleep(0.01)
        first_commit = time.monotonic() - started  # startup and planning, then the first unit
        assert clean.wait(300) == 0, log.read_text()[-3000:]
    duration = time.monotonic() - started
    clean_ids = _ids(clean_out)

    out = tmp_path / "killed"
    cfg = _write_config(
        tmp_path / "killed.yaml", {**data, "output": {**data["output"], "path": str(out)}}
    )
    rng = random.Random(seed)
    units_total = len(OutputStore(clean_out).committed())
    unit_time = (duration - first_commit) / units_total
    # moments over the clean run, in order; each becomes a point in the work the resumed run
    # still has: before the first commit, the delay from the start (startup, planning, the
    # first units); after it, the commits made by then, then up to one unit's time more
    moments = sorted(rng.uniform(0.3, duration) for _ in range(kills))
    draws, landed, phases = [], [], []
    for moment in moments:
        before = _committed(out)
        if moment < first_commit:
            commits, delay = before, round(moment, 2)
        else:
            done_by_then = 1 + int((moment - first_commit) / unit_time)
            commits = min(max(before + 1, done_by_then), units_total)  # one new commit at least
            delay = round(rng.uniform(0.05, unit_time), 2)
        draws.append((commits, delay))
        stale = _shards(out) if out.exists() else set()
        landed.append(_kill_after(cfg, out, commits, delay))
        phases.append(_phase(out, units_total, stale) if landed[-1] else "finished")
    replay = (
        f"seed {seed}, clean run {duration:.1f}s of {units_total} units (first commit at "
        f"{first_commit:.1f}s), "
        f"kills at (commits, then seconds) {draws}, phases {phases}"
    )
    assert sum(landed) >= kills * 2 // 3, replay  # most kills hit a running job

    final = _run(cfg)
    assert final.returncode == 0, f"{replay}\n{final.stderr[-3000:]}"
    ids = _ids(out)
    assert len(ids) == len(set(ids)), f"duplicates after resume: {replay}"
    assert sorted(ids) == sorted(clean_ids), f"rows lost or added: {replay}"
    assert not list(out.rglob(f"{TEMP_PREFIX}*")), f"temp files left: {replay}"
    staging = out / "_staging"
    assert not staging.exists() or not any(staging.rglob("*.parquet")), replay
    store = OutputStore(out)
    for record in store.committed().values():
        for shard in [*record.data_shards(), *record.error_shards()]:
            pq.read_table(out / shard)
    stats = json.loads((out / "stats.json").read_text())
    clean_stats = json.loads((clean_out / "stats.json").read_text())
    assert stats["accounted"], replay
    for key in ("rows_in", "rows_out", "rows_dropped", "rows_errored", "input_documents"):
        assert stats[key] == clean_stats[key], f"{key}: {replay}"


def test_single_stage_job_killed_anywhere_resumes_exactly(tmp_path, embedded_model):
    docs = make_docs(90, words=60)
    docs[7]["text"] = ""  # an error row must survive the kills too
    path = write_jsonl(tmp_path / "in" / "docs.jsonl", docs)
    data = {
        "method": "rephrase",
        "input": {"path": str(path), "id_column": "id"},
        "output": {"rows_per_shard": 6},
        "engine": {"model": embedded_model, "max_model_len": 512},
        "sampling": {"max_tokens": 16},
        "rephrase": {"styles": ["easy", "qa"], "max_chunk_tokens": 48},
        "resources": {"replicas": 2},
        "scheduler": {"batch_size": 2, "max_in_flight_per_replica": 6, "min_slice_rows": 2},
    }
    _kill_resume_check(tmp_path, data, kills=4, seed=SEED)


def test_two_stage_star_job_killed_anywhere_resumes_exactly(tmp_path, embedded_model):
    questions = REPO / "examples" / "arith_questions.jsonl"
    data = {
        "method": "self_improve",
        "input": {"path": str(questions), "id_column": "id"},
        "output": {"rows_per_shard": 2},
        "engine": {"model": embedded_model, "max_model_len": 1024},
        "sampling": {"max_tokens": 16},
        "self_improve": {"mode": "star", "checker": "numeric"},
        "scheduler": {"batch_size": 1, "max_in_flight_per_replica": 2, "min_slice_rows": 1},
    }
    _kill_resume_check(tmp_path, data, kills=3, seed=SEED + 1)


PHASES = (
    "before the output was claimed",
    "claimed, nothing written or committed",
    "a replica's shard written, before the first commit",
    "a replica's shard written, between commits",
    "every unit committed, finishing",
)
QUIET = "between commits, no shard waiting"


def _shards(out: Path) -> set[str]:
    return {f"data/{p.name}" for p in (out / "data").glob("*.parquet")}


def _phase(out: Path, units_total: int, stale: set[str] = frozenset()) -> str:
    """Where a job killed now stopped, read from its output folder (`stale`: shards earlier
    killed runs left, which this run has not written)."""
    if not (out / "_job.json").exists():
        return PHASES[0]
    committed = OutputStore(out).committed()
    if len(committed) == units_total:
        return PHASES[4]
    referenced = {shard for r in committed.values() for shard in r.data_shards()}
    waiting = bool(_shards(out) - referenced - stale)  # written by a replica, not committed
    if not committed:
        return PHASES[2] if waiting else PHASES[1]
    return PHASES[3] if waiting else QUIET


def test_killed_in_every_commit_phase_on_real_replicas_resumes_exactly(tmp_path, embedded_model):
    """Real generator actors on a local Ray (their slice workers write the shards in their own
    processes; only the engine answers at once), the driver slowed before each commit. The
    job's whole process group is SIGKILLed once in each phase of a commit, found by watching
    the output folder, including between a replica's shard write and the driver's commit;
    each kill's phase is read back from the folder. The last run's output equals a clean
    run's, exactly once."""
    rows = [{"id": f"q{i:03d}", "prompt": f"Question number {i}?"} for i in range(40)]
    path = write_jsonl(tmp_path / "in" / "prompts.jsonl", rows)

    def config(name: str) -> Path:
        data = {
            "method": "generate",
            "input": {"path": str(path), "text_column": "prompt"},
            "output": {"path": str(tmp_path / name), "rows_per_shard": 4},
            "engine": {"model": embedded_model, "max_model_len": 512},
            "sampling": {"max_tokens": 8},
            "resources": {"replicas": 2, "cpus_per_replica": 1, "gpus_per_replica": 0},
            "scheduler": {"batch_size": 2, "max_in_flight_per_replica": 4},
        }
        return _write_config(tmp_path / f"{name}.yaml", data)

    def start(cfg: Path, ray: bool = True) -> subprocess.Popen:
        how = ["--ray", "0.2"] if ray else ["0"]
        return subprocess.Popen(
            [sys.executable, str(JOB), str(cfg), *how],
            cwd=REPO,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    # the clean run's rows and counts do not depend on where the engine ran: in-process, it
    # costs no Ray start (CI's time is process and engine starts)
    clean = start(config("clean"), ray=False)
    assert clean.wait(300) == 0, clean.stderr.read()[-3000:]
    units_total = len(OutputStore(tmp_path / "clean").committed())
    assert units_total == 10

    out, cfg = tmp_path / "killed", config("killed")
    targets = list(PHASES)
    hit = []
    for target in targets:
        stale = _shards(out) if out.exists() else set()
        proc = start(cfg)
        deadline = time.monotonic() + 120
        while _phase(out, units_total, stale) != target:  # polled until the condition holds
            assert proc.poll() is None, (
                f"ended before {target!r}; hit so far {hit}: {proc.stderr.read()[-2000:]}"
            )
            assert time.monotonic() < deadline, f"never reached {target!r}; hit so far {hit}"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        hit.append(_phase(out, units_total, stale))  # where it really stopped
    assert set(PHASES) <= set(hit), hit

    final = start(cfg)
    assert final.wait(300) == 0, final.stderr.read()[-3000:]
    ids = _ids(out)
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(_ids(tmp_path / "clean")), hit
    assert not list(out.rglob(f"{TEMP_PREFIX}*")), hit
    committed = OutputStore(out).committed().values()
    assert _shards(out) == {shard for r in committed for shard in r.data_shards()}, hit
    stats = json.loads((out / "stats.json").read_text())
    clean_stats = json.loads((tmp_path / "clean" / "stats.json").read_text())
    for key in ("rows_in", "rows_out", "rows_dropped", "rows_errored", "input_documents"):
        assert stats[key] == clean_stats[key], (key, hit)
