"""End to end on the real vLLM CPU engine and a real local Ray, Parquet read back by pyarrow and
pandas. One engine serves every test here (the `shared_engine` fixture)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import REPO, job_config, make_docs, model_alias, write_jsonl

from synth_ray.io.output_store import OutputStore
from synth_ray.runtime.job import run_job

pytestmark = pytest.mark.engine

REPHRASE_COLUMNS = {
    "id",
    "source_id",
    "chunk_index",
    "style",
    "text",
    "source_text",
    "model",
    "n_input_tokens",
    "n_output_tokens",
    "finish_reason",
}


def read_output(path) -> pd.DataFrame:
    files = OutputStore(path).data_files()
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def test_rephrase_job_writes_readable_parquet(tmp_path, shared_engine):
    config = job_config(tmp_path, REPO / "examples" / "web_docs.jsonl")
    summary = run_job(config, show_progress=False, backend=shared_engine)
    frame = read_output(tmp_path / "out")
    assert set(frame.columns) == REPHRASE_COLUMNS
    assert frame["id"].is_unique
    assert set(frame["style"]) == {"easy", "qa"}
    assert (frame["model"] == "SmolLM2-135M-Instruct").all()
    assert (frame["text"].str.len() > 0).all()
    assert (frame["n_output_tokens"] > 0).all() and (frame["n_output_tokens"] <= 16).all()
    assert set(frame["finish_reason"]) <= {"stop", "length"}
    # the shipped input has one empty document: accounted for as an error row
    stats = summary.stats
    assert stats["errored_by_stage"] == {"input": 1}
    assert stats["rows_in"] == stats["rows_out"] + stats["rows_dropped"] + stats["rows_errored"]
    # dropped rows were generated too, so their tokens count; kept rows account for the rest
    assert stats["output_tokens"] >= int(frame["n_output_tokens"].sum())
    if stats["rows_dropped"] == 0:
        assert stats["output_tokens"] == int(frame["n_output_tokens"].sum())
    # pyarrow reads the folder as one dataset too
    table = pq.read_table(tmp_path / "out" / "data")
    assert table.num_rows == len(frame) == stats["rows_out"]


def test_generate_job_with_ignore_eos_generates_exact_tokens(tmp_path, shared_engine):
    prompts = REPO / "examples" / "prompts.jsonl"
    config = job_config(
        tmp_path,
        prompts,
        method="generate",
        input={"path": str(prompts), "text_column": "prompt", "id_column": None},
        sampling={"max_tokens": 12, "ignore_eos": True},
    )
    summary = run_job(config, show_progress=False, backend=shared_engine)
    frame = read_output(tmp_path / "out")
    assert len(frame) == 8 and (frame["n_output_tokens"] == 12).all()
    assert (frame["finish_reason"] == "length").all()
    assert summary.stats["output_tokens"] == 8 * 12
    assert list(frame["prompt"]) == [
        json.loads(line)["prompt"] for line in prompts.read_text().splitlines()
    ]


def test_structured_generate_on_real_engine(tmp_path, shared_engine):
    """The engine decodes under the JSON Schema: every row kept holds the schema's typed
    columns (read by datasets and DuckDB), and the only rows lost are ones max_tokens cut,
    as row errors. (A regex constraint on the real engine: the constrained judge test.)"""
    import duckdb
    from datasets import Dataset

    prompts = REPO / "examples" / "prompts.jsonl"
    schema = {
        "type": "object",
        "properties": {
            "topic": {"type": "string", "enum": ["poetry", "science", "language", "other"]},
            "difficulty": {"type": "integer", "minimum": 1, "maximum": 5},
            "keywords": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[a-z]{1,12}$"},
                "maxItems": 2,
            },
            "verdict": {
                "type": "object",
                "properties": {"safe": {"type": "boolean"}},
                "required": ["safe"],
            },
        },
        "required": ["topic", "difficulty", "keywords", "verdict"],
        "additionalProperties": False,
    }
    config = job_config(
        tmp_path,
        prompts,
        method="generate",
        input={"path": str(prompts), "text_column": "prompt", "id_column": None, "limit": 4},
        sampling={"max_tokens": 120, "temperature": 0.7},
        generate={"output_schema": schema},
    )
    summary = run_job(config, show_progress=False, backend=shared_engine)
    data = tmp_path / "out" / "data"
    frame = read_output(tmp_path / "out")
    assert summary.stats["rows_out"] == len(frame) >= 2 and summary.stats["accounted"]
    for _, row in frame.iterrows():
        parsed = json.loads(row["text"])
        assert parsed["difficulty"] == row["difficulty"] and 1 <= row["difficulty"] <= 5
        assert row["topic"] in schema["properties"]["topic"]["enum"] and len(row["keywords"]) <= 2
    stats = summary.stats
    assert stats["rows_out"] + stats["rows_errored"] == 4 and stats["rows_dropped"] == 0
    if stats["rows_errored"]:  # only a completion max_tokens cut can fail to parse
        errors = pq.read_table(tmp_path / "out" / "errors").to_pylist()
        assert {e["stage"] for e in errors} == {"structured_output"}
        assert all("cut by max_tokens" in e["error"] for e in errors), errors
    dataset = Dataset.from_parquet(str(data / "*.parquet"))
    assert dataset.features["difficulty"].dtype == "int64"
    assert dataset.features["verdict"]["safe"].dtype == "bool"
    types = duckdb.sql(
        f"SELECT typeof(difficulty), typeof(keywords), typeof(verdict) FROM '{data}/*.parquet'"
    ).fetchall()
    assert set(types) == {("BIGINT", "VARCHAR[]", "STRUCT(safe BOOLEAN)")}


def test_too_long_document_and_prompt_on_real_engine(tmp_path, shared_engine):
    long_text = " ".join(f"token{i}" for i in range(1500))
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": "long", "text": long_text}, {"id": "short", "text": "A short note."}],
    )
    # rephrase: the long document is chunked and every chunk fits
    run_job(job_config(tmp_path, path), show_progress=False, backend=shared_engine)
    frame = read_output(tmp_path / "out")
    assert frame[frame.source_id == "long"]["chunk_index"].nunique() > 5
    # generate: the whole document as one prompt cannot fit 512 tokens: one error row, others fine
    gen = job_config(tmp_path / "g", path, method="generate")
    summary = run_job(gen, show_progress=False, backend=shared_engine)
    assert summary.stats["rows_out"] == 1 and summary.stats["errored_by_stage"] == {"prompt": 1}
    errors = pq.read_table(tmp_path / "g" / "out" / "errors").to_pylist()
    assert errors[0]["source_id"] == "long" and "max_model_len is 512" in errors[0]["error"]


def _kill_config(tmp_path, docs_path, out):
    body = f"""
method: rephrase
input: {{path: {docs_path}, id_column: id}}
output: {{path: {out}, rows_per_shard: 2}}
engine: {{max_model_len: 512, enforce_eager: true}}
sampling: {{max_tokens: 16}}
rephrase: {{styles: [easy, qa], max_chunk_tokens: 64}}
scheduler: {{batch_size: 2, max_in_flight_per_replica: 4}}
ray: {{num_cpus: 2}}
"""
    path = tmp_path / "kill.yaml"
    path.write_text(body)
    return path


def _descendant_cmdlines(pid: int) -> list[str]:
    import psutil

    lines = []
    try:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                lines.append(" ".join(child.cmdline()))
            except psutil.Error:
                continue  # ended meanwhile
    except psutil.Error:
        pass
    return lines


def test_sigkill_whole_process_group_then_resume_matches_clean_run(tmp_path, shared_engine):
    docs_path = write_jsonl(tmp_path / "docs.jsonl", make_docs(14, words=20))
    out = tmp_path / "killed"
    config_path = _kill_config(tmp_path, docs_path, out)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "synth_ray", "run", str(config_path), "--no-progress"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # first kill: while the engine is starting (its replica's actor exists, nothing is
    # committed yet)
    proc = start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if any("GeneratorActor" in n for n in _descendant_cmdlines(proc.pid)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run ended before it could be killed while starting"
    assert not (out / "_manifest.jsonl").exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not OutputStore(out).committed()
    # second kill: mid-generation, after two units committed
    proc = start()
    manifest = out / "_manifest.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished or died before it could be killed mid-way"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed_before = len(OutputStore(out).committed())

    from synth_ray.config import load_config

    clean_config = load_config(config_path, [f"output.path={tmp_path / 'clean'}"])
    clean = run_job(clean_config, show_progress=False, backend=shared_engine)
    assert 2 <= committed_before < clean.units_total

    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{committed_before} already committed" in resumed.stdout

    killed_ids = read_output(out)["id"]
    clean_ids = read_output(tmp_path / "clean")["id"]
    assert killed_ids.is_unique
    assert sorted(killed_ids) == sorted(clean_ids)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == clean.stats["rows_in"] and stats["accounted"]


@pytest.mark.parametrize("mode", ["star", "rejection", "self_consistency"])
def test_self_improve_modes_on_real_engine(tmp_path, shared_engine, mode):
    questions = REPO / "examples" / "arith_questions.jsonl"
    config = job_config(
        tmp_path,
        questions,
        method="self_improve",
        input={"path": str(questions), "id_column": "id", "limit": 3},
        sampling={"max_tokens": 48, "temperature": 0.8},
        # self-consistency constrained (`constrain`): every sample ends in its answer line
        self_improve={
            "mode": mode,
            "n": 3,
            "k": 2,
            "min_agreement": 0.3,
            "constrain": mode == "self_consistency",
        },
    )
    summary = run_job(config, show_progress=False, backend=shared_engine)
    stats = summary.stats
    width = 1 if mode == "star" else 3
    assert stats["input_documents"] == 3 and stats["accounted"]
    # star: each question once, plus once more for each one rationalized
    assert stats["rows_in"] >= 3 * width and stats["rows_errored"] == 0
    if mode != "star":
        assert stats["rows_in"] == 9
        # n samples came back from one engine request each: tokens of all samples counted
        assert stats["output_tokens"] > 3 * 48 * 0.5
    frame = read_output(tmp_path / "out") if stats["rows_out"] else None
    if frame is not None:
        assert {
            "question",
            "rationale",
            "answer",
            "reference_answer",
            "correct",
            "source",
            "iteration",
        } <= set(frame.columns)
        assert frame["id"].is_unique
    if mode == "self_consistency":
        # every sample has an answer, so a plurality of 1 in 3 always reaches min_agreement:
        # each question keeps a row, only the minority is dropped, and each kept rationale is
        # reasoning and the answer line, ended before max_tokens
        from synth_ray.methods.self_improve import answer_line_regex

        assert set(stats["dropped_by_filter"]) <= {"disagrees_with_majority"}, stats
        assert frame is not None and frame["source_id"].nunique() == 3
        language = re.compile(answer_line_regex(48))
        assert all(language.fullmatch(r) for r in frame["rationale"]), list(frame["rationale"])
        assert (frame["finish_reason"] == "stop").all()


def test_program_of_thought_recipe_on_real_engine(tmp_path, shared_engine):
    """The recipe's programs, written by the real model under its constraint, run in the real
    sandbox: every kept row's program computes the reference answer; every other sample is a
    counted drop; and some programs run to an answer (unaided, all of the 135M model's
    programs failed)."""
    from synth_ray.config import load_config

    config = load_config(
        REPO / "configs" / "program_of_thought.yaml",
        [
            f"output.path={tmp_path / 'out'}",
            f"input.path={REPO / 'examples' / 'arith_questions.jsonl'}",
            "input.limit=3",
            "sampling.max_tokens=128",  # 2 givens and the answer line (constrain: on)
            "self_improve.n=3",
            "ray.num_cpus=2",
        ],
    )
    summary = run_job(config, show_progress=False, backend=shared_engine)
    stats = summary.stats
    assert stats["accounted"] and stats["rows_in"] == 9 and stats["rows_errored"] == 0
    allowed = {"incorrect", "over_k", "program_fail", "program_timeout", "program_crash"}
    drops = stats["dropped_by_filter"]
    assert set(drops) <= allowed
    failed = sum(drops.get(f"program_{why}", 0) for why in ("fail", "timeout", "crash"))
    assert failed < 9, drops  # constrained programs are Python that runs to an answer
    if stats["rows_out"]:
        frame = read_output(tmp_path / "out")
        assert (frame["answer"] == frame["reference_answer"]).all()
        assert "ans" in " ".join(frame["rationale"])


def test_self_instruct_on_real_engine(tmp_path, shared_engine):
    from synth_ray.config import validate_config

    config = validate_config(
        {
            "method": "self_instruct",
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 100},
            "engine": {"max_model_len": 1024, "enforce_eager": True},
            "sampling": {"max_tokens": 64, "temperature": 0.9},
            "self_instruct": {
                "seed_path": str(REPO / "examples" / "seed_tasks.jsonl"),
                "target": 3,
                "requests_per_round": 3,
                "max_rounds": 2,
                "constrain": True,  # the 135M model writes no parsable instance unaided
            },
            "filters": {"diversity": {"enabled": True, "threshold": 0.9}},
        }
    )
    summary = run_job(config, show_progress=False, backend=shared_engine)
    stats = summary.stats
    si = stats["self_instruct"]
    # every instruction that passed the heuristics and ROUGE-L met the diversity filter
    met_filter = si["instructions_accepted"] + stats["dropped_by_filter"].get("diversity", 0)
    assert sum(stats.get("nn_similarity_histogram", [])) == met_filter
    assert si["rounds"] >= 1 and si["generation_stats"]["rows_in"] == 3 * si["rounds"]
    # the pool's decisions, then 1 to 5 instance rows per accepted instruction
    instance_rows = stats["rows_in"] - (si["instructions_considered"] - si["instructions_accepted"])
    accepted = si["instructions_accepted"]
    assert stats["accounted"] and accepted <= instance_rows <= 5 * accepted
    assert (tmp_path / "out" / "stages" / "pool.json").exists()
    # constrained: every accepted instruction's completion is in its parser's format
    assert accepted and stats["rows_out"] >= 1
    frame = read_output(tmp_path / "out")
    assert {"instruction", "input", "output", "is_classification", "max_rouge", "round"} <= set(
        frame.columns
    )
    assert (frame["max_rouge"] <= 0.7).all()
    assert (frame["nn_similarity"] < 0.9).all()  # seeds were in the index: never None
    assert not frame["output"].str.contains("\n|:").any()  # one line, no marker in it


def test_evol_instruct_on_real_engine(tmp_path, shared_engine):
    prompts = REPO / "examples" / "prompts.jsonl"
    config = job_config(
        tmp_path,
        prompts,
        method="evol_instruct",
        input={"path": str(prompts), "text_column": "prompt", "id_column": None, "limit": 3},
        sampling={"max_tokens": 48},
        evol_instruct={"rounds": 1},
        filters={"diversity": {"enabled": True}},
    )
    summary = run_job(config, show_progress=False, backend=shared_engine)
    stats = summary.stats
    assert stats["input_documents"] == 3 and stats["rows_in"] == 3 and stats["accounted"]
    if stats["rows_out"]:
        frame = read_output(tmp_path / "out")
        assert {"instruction", "response", "round", "operation", "parent_id"} <= set(frame.columns)
        assert (frame["round"] == 0).all()
        assert "nn_similarity" in frame.columns


def test_rephrase_with_diversity_filter_drops_duplicate_rephrasings(tmp_path, shared_engine):
    """The same documents twice under other ids, greedy decoding: the second copy's rephrasings
    repeat the first's and are dropped; kept rows carry nn_similarity below the threshold."""
    docs = make_docs(6, words=30)
    copies = [{"id": f"copy-{d['id']}", "text": d["text"]} for d in docs]
    path = write_jsonl(tmp_path / "docs.jsonl", docs + copies)
    config = job_config(
        tmp_path,
        path,
        sampling={"max_tokens": 16, "temperature": 0.0},
        rephrase={"styles": ["qa"], "max_chunk_tokens": 64},
        filters={"diversity": {"enabled": True, "threshold": 0.95}},
    )
    summary = run_job(config, show_progress=False, backend=shared_engine)
    stats = summary.stats
    frame = read_output(tmp_path / "out")
    assert stats["accounted"] and stats["dropped_by_filter"].get("diversity", 0) >= 4
    assert (frame["nn_similarity"].dropna() < 0.95).all()
    assert (
        sum(stats["nn_similarity_histogram"])
        == stats["rows_out"] + stats["dropped_by_filter"]["diversity"] - 1
    )  # the first row had nothing before it: no similarity to count
    store = OutputStore(tmp_path / "out")
    kept_vectors = sum(len(v) for v in store.committed_vectors())
    assert kept_vectors == len(frame)  # the accepted set persisted with the committed shards


def test_engine_runs_this_machines_dtype_at_normal_priority(tmp_path, shared_engine):
    """auto is float32 on a CPU without native bf16 (10x faster than emulated bf16), the run
    says so in _runs.jsonl and stats.json, the replica runs at nice 0 rather than the nice 15
    Ray gives its workers, and the model computes in the replica's own process on the
    replica's CPUs (the shared engine's Ray has 2, its one replica takes both), with no engine
    core process importing vLLM and loading the model a second time."""
    import psutil
    import ray

    from synth_ray.engine.dtype import choose_dtype, read_cpu_flags

    prompts = REPO / "examples" / "prompts.jsonl"
    config = job_config(
        tmp_path,
        prompts,
        method="generate",
        input={"path": str(prompts), "text_column": "prompt", "id_column": None, "limit": 2},
        sampling={"max_tokens": 4},
    )
    summary = run_job(config, show_progress=False, backend=shared_engine)
    expected = choose_dtype("auto", on_cpu=True, flags=read_cpu_flags())
    assert summary.engine["dtype"] == expected.dtype
    assert summary.engine["dtype_reason"] == expected.reason
    assert OutputStore(tmp_path / "out").runs()[-1]["engine_dtype"] == expected.dtype
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert (stats["engine_dtype"], stats["engine_dtype_reason"]) == (
        expected.dtype,
        expected.reason,
    )

    actor = psutil.Process(ray.get(shared_engine.idle[0].pid.remote()))
    engine_processes = [p for p in actor.children(recursive=True) if p.name().startswith("VLLM")]
    assert engine_processes == [], (
        "the CPU engine runs inside the actor, with no process of its own"
    )
    assert actor.environ()["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert actor.environ()["OMP_NUM_THREADS"] == "2"
    assert shared_engine.resources.num_cpus == 2
    assert summary.engine["niceness"] == 0
    niceness = {t.id: os.getpriority(os.PRIO_PROCESS, t.id) for t in actor.threads()}
    assert set(niceness.values()) == {0}, f"the replica's threads run at nice {niceness}"


def test_driver_does_no_per_row_work(tmp_path, shared_engine, monkeypatch):
    """Rendering, tokenizing, parsing and shard writing happen in the generator actor: in this
    (the driver's) process they are made to fail, and the job still completes."""
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.methods.rephrase import RephraseMethod

    def refuse(*args, **kwargs):
        raise AssertionError("the driver did per-row work")

    # class attributes: the actor imports the real classes (chunking is inside `expand`)
    monkeypatch.setattr(RephraseMethod, "expand", refuse)
    monkeypatch.setattr(RephraseMethod, "finish", refuse)
    monkeypatch.setattr(PromptRenderer, "render_text", refuse)
    monkeypatch.setattr(OutputStore, "write_data_shard", refuse)
    config = job_config(tmp_path, REPO / "examples" / "web_docs.jsonl")
    summary = run_job(config, show_progress=False, backend=shared_engine)
    assert summary.stats["accounted"] and summary.stats["rows_out"] > 0
    assert len(read_output(tmp_path / "out")) == summary.stats["rows_out"]


def test_stopped_engine_is_detected_killed_and_replaced(tmp_path, shared_engine):
    """The engine hangs mid-run (its step never returns, as in a stuck kernel) while its
    actor stays alive and answers every probe: the scheduler sees no progress, kills the
    replica with its engine, starts another, re-sends the work, and the job ends with every
    row exactly once. Runs last: it replaces the shared engine."""
    import threading

    import psutil
    import ray

    def hang_engine(actor) -> None:  # runs in the actor: its engine's next step never ends
        never = threading.Event()
        actor.engine._engine.step = never.wait

    if not shared_engine.idle:  # run alone: start the shared engine with a tiny job
        warm = job_config(tmp_path / "warm", REPO / "examples" / "web_docs.jsonl")
        run_job(
            warm.model_copy(update={"input": warm.input.model_copy(update={"limit": 1})}),
            show_progress=False,
            backend=shared_engine,
        )
    actor = shared_engine.idle[0]
    actor_pid = ray.get(actor.pid.remote())
    docs = write_jsonl(tmp_path / "docs.jsonl", make_docs(48, words=20))
    # a few units at a time, so some commit before the freeze and most after
    scheduler = {"stall_timeout_s": 10, "max_in_flight_per_replica": 8, "batch_size": 1}
    config = job_config(tmp_path, docs, scheduler=scheduler)
    manifest = tmp_path / "out" / "_manifest.jsonl"
    frozen_after: list[int] = []

    def freeze_after_first_commit() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if manifest.exists() and manifest.read_text().strip():
                frozen_after.append(len(manifest.read_text().splitlines()))
                ray.get(actor.__ray_call__.remote(hang_engine))
                return
            time.sleep(0.02)

    freezer = threading.Thread(target=freeze_after_first_commit, daemon=True)
    freezer.start()
    summary = run_job(config, show_progress=False, backend=shared_engine)
    freezer.join()
    assert frozen_after and frozen_after[0] < summary.units_total, "froze too late to matter"
    assert len(summary.stalls) == 1, summary.replica_failures
    assert "stalled: no progress for" in summary.stalls[0]
    assert not psutil.pid_exists(actor_pid) or psutil.Process(actor_pid).status() == "zombie"
    out = read_output(tmp_path / "out")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert out["id"].is_unique and len(out) == stats["rows_out"]
    assert stats["accounted"] and stats["errored_by_stage"] == {}
    assert stats["replicas_stalled"] == 1 and stats["rows_in"] == 48 * 2


@pytest.mark.parametrize(
    ("rubric", "constrain"),
    [("alpagasus", False), ("fineweb_edu", False), ("alpagasus", True), ("fineweb_edu", True)],
)
def test_judge_rubrics_on_real_engine(tmp_path, shared_engine, rubric, constrain):
    """Both published rubrics on the real engine: every row judged once, kept with its
    parse status (a 135M judge rarely follows the format: that is what the status is for).
    Constrained (`judge.constrain`), the same small judge writes the format: every answer
    parses."""
    from synth_ray.config import validate_config

    data = "alpaca_pairs.jsonl" if rubric == "alpagasus" else "web_docs.jsonl"
    config = validate_config(
        {
            "method": "judge",
            "input": {"path": str(REPO / "examples" / data), "id_column": "id", "limit": 3},
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 2},
            "engine": {"max_model_len": 2048, "enforce_eager": True},
            "sampling": {"max_tokens": 128 if constrain else 48},
            "judge": {"rubric": rubric, "on_unparsable": "keep", "constrain": constrain},
        }
    )
    summary = run_job(config, show_progress=False, backend=shared_engine)
    stats = summary.stats
    assert stats["accounted"] and stats["rows_in"] == stats["rows_out"] == 3, json.dumps(stats)
    frame = read_output(tmp_path / "out")
    assert sorted(frame["source_id"]) == sorted(frame["source_id"].unique())
    assert set(frame["parse_status"]) <= {"ok", "unparsable", "out_of_range"}
    assert frame["rationale"].str.len().min() > 0
    ok = frame[frame["parse_status"] == "ok"]
    assert ok["score"].between(0, 5).all() and frame.loc[frame.score.isna()].shape[0] == len(
        frame
    ) - len(ok)
    assert sum(stats["judge"]["parse_status"].values()) == 3
    if constrain:
        assert set(frame["parse_status"]) == {"ok"}, list(frame["rationale"])


def test_preference_pairs_on_real_engine(tmp_path, shared_engine, monkeypatch):
    """Both stages on the real engine at once, through its one scheduler: n sampled
    responses per prompt (vLLM's n), one rating request per prompt, a prompt's rating sent
    as soon as its responses commit (before the last responses are sent: one prompt per
    unit, at most 3 in flight); every prompt ends as a pair or a counted drop."""
    from synth_ray.config import validate_config

    config = validate_config(
        {
            "method": "preference",
            "input": {
                "path": str(REPO / "examples" / "prompts.jsonl"),
                "text_column": "prompt",
                "limit": 4,
            },
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 1},
            "engine": {"max_model_len": 2048, "enforce_eager": True},
            "sampling": {"max_tokens": 24, "temperature": 0.8},
            "preference": {"n": 2, "judge_max_tokens": 64},
            "scheduler": {"batch_size": 1, "max_in_flight_per_replica": 1},
        }
    )
    sent: list[str] = []
    submit = shared_engine.submit

    def recording(replica_id, batch_id, payloads):
        sent.extend(p.stage_key.split(":")[0] for p in payloads)
        return submit(replica_id, batch_id, payloads)

    monkeypatch.setattr(shared_engine, "submit", recording)
    summary = run_job(config, show_progress=False, backend=shared_engine)
    stats = summary.stats
    assert sent.index("pairs") < len(sent) - 1 - sent[::-1].index("responses"), sent
    assert stats["accounted"] and stats["rows_in"] == 4
    assert stats["preference"]["responses_stage"]["rows_out"] == 8
    assert set(stats["dropped_by_filter"]) <= {"tie", "too_few_rated", "identical_responses"}
    if stats["rows_out"]:
        frame = read_output(tmp_path / "out")
        assert (frame["chosen_rating"] > frame["rejected_rating"]).all()


def test_magpie_on_real_engine(tmp_path, shared_engine):
    """The pre-query prefix sent raw to the real engine: the model writes user turns, each
    request ends as an answered instruction or a counted drop."""
    from synth_ray.config import validate_config

    config = validate_config(
        {
            "method": "magpie",
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 2},
            "engine": {"max_model_len": 1024, "enforce_eager": True},
            "sampling": {"max_tokens": 24},
            "magpie": {"num_instructions": 4, "instruction_max_tokens": 32},
        }
    )
    summary = run_job(config, show_progress=False, backend=shared_engine)
    stats = summary.stats
    assert stats["accounted"] and stats["rows_in"] == 4
    assert stats["magpie"]["pre_query_prefix"].endswith("<|im_start|>user\n")
    if stats["rows_out"]:
        frame = read_output(tmp_path / "out")
        assert frame["instruction"].str.len().min() > 0
        assert "<|im_start|>" not in " ".join(frame["instruction"])


@pytest.mark.parametrize("method", ["textbook", "tinystories"])
def test_textbook_and_tinystories_on_real_engine(tmp_path, shared_engine, method):
    from synth_ray.config import validate_config

    data = {
        "method": method,
        "output": {"path": str(tmp_path / "out"), "rows_per_shard": 2},
        "engine": {"max_model_len": 2048, "enforce_eager": True},
        "sampling": {"max_tokens": 48, "temperature": 0.8},
    }
    if method == "textbook":
        data["input"] = {
            "path": str(REPO / "examples" / "web_docs.jsonl"),
            "id_column": "id",
            "limit": 2,
        }
        data["textbook"] = {"formats": ["textbook_academic", "blogpost"]}
    else:
        data["tinystories"] = {"num_stories": 3}
    summary = run_job(validate_config(data), show_progress=False, backend=shared_engine)
    stats = summary.stats
    assert stats["accounted"] and stats["rows_in"] == (4 if method == "textbook" else 3)
    frame = read_output(tmp_path / "out")
    assert len(frame) == stats["rows_out"] and frame["id"].is_unique
    if method == "tinystories":
        assert {"noun", "verb", "adjective", "features", "words_used"} <= set(frame.columns)
        for _, row in frame.iterrows():
            assert set(row["words_used"]) <= {row["noun"], row["verb"], row["adjective"]}


def test_rephrase_formats_whole_documents_on_real_engine(tmp_path, shared_engine, embedded_model):
    """FinePhrase's and Nemotron-CC's formats, each document rephrased whole. Diverse QA
    drops a rephrasing cut by max_tokens; with `output.keep_dropped` its completion is kept."""
    docs = REPO / "examples" / "web_docs.jsonl"
    config = job_config(
        tmp_path,
        docs,
        input={"path": str(docs), "id_column": "id", "limit": 2},
        output={"keep_dropped": True},
        engine={"max_model_len": 2048},
        sampling={"max_tokens": 32},
        rephrase={"styles": ["faq", "diverse_qa"], "whole_document": True},
    )
    summary = run_job(config, show_progress=False, backend=shared_engine)
    stats = summary.stats
    assert stats["accounted"] and stats["rows_in"] == 4
    frame = read_output(tmp_path / "out")
    assert set(frame["chunk_index"]) == {0} and set(frame["style"]) <= {"faq", "diverse_qa"}
    dropped = pq.read_table(tmp_path / "out" / "dropped").to_pylist()
    assert len(dropped) == stats["rows_dropped"] and stats["dropped_by_filter"]["truncated"] > 0
    from synth_ray.engine.prompts import PromptRenderer

    tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
    for row in dropped:
        assert row["filter"] in stats["dropped_by_filter"] and row["stage"] == "rephrase"
        if row["filter"] == "truncated":  # the model's own text, 32 tokens of it (words or
            # not: a sampled run may be emoji), give or take re-tokenization
            tokens = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
            assert 24 <= len(tokens) <= 40, row


def _commits(folder: Path, stage: str) -> int:
    manifest = folder / "_manifest.jsonl"
    if not manifest.exists():
        return 0
    lines = manifest.read_text().splitlines()
    return sum(1 for line in lines if line.endswith("}") and json.loads(line)["stage"] == stage)


def test_two_model_pools_stream_on_real_engines_from_the_command_line(tmp_path, embedded_model):
    """configs/preference_pools.yaml's shape on real engines from `synth-ray run`: the job's
    engine writes responses while the judge pool (another model folder) rates each unit as
    it commits; the first rating unit commits while responses are still to come (watched in
    the output folder). The judge decodes its ratings under `preference.constrain` with
    n-gram speculative decoding (vllm 15554: the two broke together): every answer rates
    every text. A kill mid-pipeline and its resume are test_pools.py's (the same stage path
    on the simulated engine): here a second run would only pay two engine starts again."""

    judge = tmp_path / "judge-135m"
    model_alias(embedded_model, judge)
    out = tmp_path / "out"
    # 16 prompts, one per unit: the generator's last units are still to come when the judge
    # has rated its first (the example prompts, twice, each time its own ids)
    examples = (REPO / "examples" / "prompts.jsonl").read_text().splitlines()
    prompts = [
        {"id": f"q{k}-{i}", "prompt": json.loads(line)["prompt"]}
        for k in range(2)
        for i, line in enumerate(examples)
    ]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    config = tmp_path / "job.yaml"
    config.write_text(
        json.dumps(
            {
                "method": "preference",
                "input": {"path": str(tmp_path / "prompts.jsonl"), "text_column": "prompt"},
                "output": {"path": str(out), "rows_per_shard": 1},
                "engine": {"max_model_len": 1024, "enforce_eager": True},
                "sampling": {"max_tokens": 32, "temperature": 0.8},
                "preference": {
                    "n": 2, "judge_max_tokens": 96, "constrain": True, "judge_pool": "judge",
                },
                "pools": {
                    "judge": {
                        "engine": {
                            "model": str(judge),
                            "max_model_len": 2048,
                            "enforce_eager": True,
                            "speculative_config": {
                                "method": "ngram",
                                "num_speculative_tokens": 4,
                                "prompt_lookup_max": 4,
                                "prompt_lookup_min": 2,
                            },
                        },
                    },
                },
                # at most 3 one-prompt slices in flight: the generator takes a while
                "scheduler": {"batch_size": 1, "max_in_flight_per_replica": 1},
                "ray": {"num_cpus": 2},
            }
        )
    )  # fmt: skip
    cmd = [sys.executable, "-m", "synth_ray", "run", str(config), "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "run.log"
    with log.open("w") as output:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # a run past its deadline is killed with its Ray and engines
        )  # fmt: skip
        work = out / "stages"
        responses_at_first_pair = None
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if responses_at_first_pair is None and _commits(out, "pairs") >= 1:
                responses_at_first_pair = _commits(work, "responses")
            time.sleep(0.05)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        said = log.read_text()
        assert proc.wait() == 0, said[-4000:]
    print(f"the first rating unit committed with {responses_at_first_pair} of 16 responses")
    assert responses_at_first_pair is not None and responses_at_first_pair < 16, said[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accounted"] and stats["rows_in"] == 16
    assert stats["preference"]["responses_stage"]["rows_out"] == 32
    assert stats["rows_errored"] == 0 and "too_few_rated" not in stats["dropped_by_filter"]
    assert _commits(work, "responses") == 16 and _commits(out, "pairs") == 16  # once each
    frame = read_output(out)
    assert len(frame) == len(set(frame["source_id"])) == stats["rows_out"] >= 1
    assert set(frame["judge_model"]) == {"judge-135m"}
    assert set(frame["response_model"]) == {"SmolLM2-135M-Instruct"}
    assert all(None not in ratings for ratings in frame["ratings"])
    block = r"#+ Output for Text 1\nRating: [1-5]\nRationale: [^\n#]+\n\n#+ Output for Text 2"
    assert all(re.match(block, answer) for answer in frame["rationale"])
    # a completed run ends with its dataset card (citing both models) and its report
    card = (out / "README.md").read_text()
    assert "pool judge model: `judge-135m`" in card and "@misc{cui2024ultrafeedback" in card
    assert f"report: {out / 'report' / 'index.html'}" in said


def test_the_progress_probe_counts_tokens_while_a_long_batch_decodes(tmp_path, shared_engine):
    """Stall detection reads `output_tokens()` from the real engine (vLLM's output processor,
    not a stable interface). On one long batch it must rise while the batch decodes, not only
    when it finishes: a replica decoding a batch longer than the stall timeout would
    otherwise be taken for stalled."""
    import threading

    import ray

    def sample_while_decoding(actor) -> list[int]:  # runs in the actor
        import asyncio

        from synth_ray.engine.requests import EngineRequest, SamplingSpec

        engine = actor.engine
        sampling = SamplingSpec(0.8, 1.0, 384, ignore_eos=True)
        batch = [EngineRequest(f"long-{i}", [1, 2, 3, 4], sampling, i, 384) for i in range(2)]
        done = threading.Event()
        worker = threading.Thread(
            target=lambda: (asyncio.run(engine.generate_many(batch)), done.set()), daemon=True
        )
        start = engine.output_tokens()
        worker.start()
        seen = []
        while not done.wait(0.05):  # sampling the probe as the scheduler would, until done
            seen.append(engine.output_tokens() - start)
        worker.join(60)
        return [*seen, engine.output_tokens() - start]

    if not shared_engine.idle:  # run alone: start the shared engine with a tiny job
        warm = job_config(tmp_path / "warm", REPO / "examples" / "web_docs.jsonl")
        run_job(
            warm.model_copy(update={"input": warm.input.model_copy(update={"limit": 1})}),
            show_progress=False,
            backend=shared_engine,
        )
    actor = shared_engine.idle[0]
    seen = ray.get(actor.__ray_call__.remote(sample_while_decoding), timeout=300)
    assert seen[-1] == 2 * 384
    during = [n for n in seen[:-1] if 0 < n < 2 * 384]
    assert len(set(during)) >= 3, seen  # it rose step by step before the batch finished
    assert during == sorted(during)
