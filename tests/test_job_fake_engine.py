"""The whole job path (plan, units, commit, resume, accounting) with a simulated engine.

The simulated engine lets a crash be injected at every step of every commit; the same
promises are checked end to end on the real engine in test_end_to_end.py."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import job_config, make_docs, one_shard, write_jsonl
from fake_backend import FakeBackend

import synth_ray.io.manifest as manifest_mod
import synth_ray.io.output_store as store_mod
from synth_ray.errors import InputError, OutputConflictError
from synth_ray.io.inputs import InputChangedError, InputSpec, identify_inputs, iter_documents
from synth_ray.io.output_store import OutputStore
from synth_ray.runtime.job import run_job


def json_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def output_ids(path) -> list[str]:
    ids: list[str] = []
    for file in OutputStore(path).data_files():
        ids.extend(pq.read_table(file, columns=["id"]).column("id").to_pylist())
    return ids


def error_ids(path) -> list[str]:
    store = OutputStore(path)
    ids: list[str] = []
    for record in store.committed().values():
        if record.error_shard:
            ids.extend(pq.read_table(store.root / record.error_shard).column("id").to_pylist())
    return ids


@pytest.fixture()
def docs_file(tmp_path):
    docs = make_docs(30)
    docs[4]["text"] = ""  # an empty document: an error row, never a failed batch
    return write_jsonl(tmp_path / "in" / "docs.jsonl", docs)


def test_clean_run_accounts_for_every_row(tmp_path, docs_file, embedded_model):
    config = job_config(tmp_path, docs_file)
    summary = run_job(config, show_progress=False, backend=FakeBackend())
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["rows_in"] == stats["rows_out"] + stats["rows_dropped"] + stats["rows_errored"]
    assert stats["accounted"] is True
    assert stats["errored_by_stage"] == {"input": 1}
    assert stats["input_documents"] == 30
    ids = output_ids(tmp_path / "out")
    assert len(ids) == len(set(ids)) == stats["rows_out"]
    assert summary.units_total == stats["units_committed"] > 3
    # one shard per unit, named by the unit and the attempt (run id, nonce) that wrote it
    names = sorted(p.name for p in (tmp_path / "out" / "data").iterdir())
    [run] = {r.run_id for r in OutputStore(tmp_path / "out").committed().values()}
    assert [n.split(f"-{run}-")[0] for n in names] == [
        f"part-{i:06d}" for i in range(summary.units_total)
    ]


def test_rerun_skips_committed_units(tmp_path, docs_file, embedded_model):
    config = job_config(tmp_path, docs_file)
    run_job(config, show_progress=False, backend=FakeBackend())
    backend = FakeBackend()
    summary = run_job(config, show_progress=False, backend=backend)
    assert summary.units_committed == 0 and summary.units_skipped == summary.units_total
    assert backend.submitted == []


class Crash(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no cleanup."""


def crash_points():
    """(name, patcher) for every step of a unit's commit."""

    def before_rename(monkeypatch, at):
        """The real shard writer runs (temp file written and fsynced) and the process dies
        at the rename of the `at`-th data shard, leaving its temp file as a kill would."""
        import os
        import shutil
        from pathlib import Path

        import synth_ray.io.shards as shards_mod

        calls = {"n": 0}

        class DyingAtRename:
            def __getattr__(self, name):
                return getattr(os, name)

            def replace(self, src, dst):
                if Path(dst).parent.name == "data":
                    calls["n"] += 1
                    if calls["n"] == at:
                        src = Path(src)
                        prefix = shards_mod.TEMP_PREFIX
                        left = src.with_name(src.name.replace(prefix, f"{prefix}killed-", 1))
                        shutil.copyfile(src, left)  # the writer's cleanup would remove src
                        raise Crash()
                return os.replace(src, dst)

        monkeypatch.setattr(shards_mod, "os", DyingAtRename())

    def after_rename_before_manifest(monkeypatch, at):
        real = manifest_mod.Manifest.append
        calls = {"n": 0}

        def patched(self, record):
            calls["n"] += 1
            if calls["n"] == at:
                raise Crash()
            return real(self, record)

        monkeypatch.setattr(manifest_mod.Manifest, "append", patched)

    def torn_manifest_line(monkeypatch, at):
        real = manifest_mod.Manifest.append
        calls = {"n": 0}

        def patched(self, record):
            calls["n"] += 1
            if calls["n"] == at:
                with open(self.path, "a") as fh:
                    fh.write('{"unit_index": 99, "unit_id": "trunc')
                raise Crash()
            return real(self, record)

        monkeypatch.setattr(manifest_mod.Manifest, "append", patched)

    return [before_rename, after_rename_before_manifest, torn_manifest_line]


@pytest.mark.parametrize("crash", crash_points(), ids=lambda f: f.__name__)
@pytest.mark.parametrize("at", [1, 2, 5])
def test_crash_at_any_commit_step_then_resume_equals_clean_run(
    tmp_path, docs_file, embedded_model, monkeypatch, crash, at
):
    clean = job_config(tmp_path / "clean", docs_file)
    run_job(clean, show_progress=False, backend=FakeBackend())

    config = job_config(tmp_path, docs_file)
    with monkeypatch.context() as patch:
        crash(patch, at)
        with pytest.raises(Crash):
            run_job(config, show_progress=False, backend=FakeBackend())
    committed = len(OutputStore(tmp_path / "out").committed())
    if crash.__name__ == "before_rename":
        assert list((tmp_path / "out").rglob(".tmp-killed-*")), "the kill left no temp file"
    summary = run_job(config, show_progress=False, backend=FakeBackend())
    # exactly the units committed before the crash are skipped, the rest generated again
    assert summary.units_skipped == committed
    assert summary.units_committed == summary.units_total - committed

    resumed_ids = output_ids(tmp_path / "out")
    clean_ids = output_ids(tmp_path / "clean" / "out")
    assert len(resumed_ids) == len(set(resumed_ids)), "duplicated rows"
    assert sorted(resumed_ids) == sorted(clean_ids)
    assert sorted(error_ids(tmp_path / "out")) == sorted(error_ids(tmp_path / "clean" / "out"))
    assert not list((tmp_path / "out").rglob(".tmp-*")), "temp files left behind"
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    clean_stats = json.loads((tmp_path / "clean" / "out" / "stats.json").read_text())
    for key in ("rows_in", "rows_out", "rows_errored", "input_documents", "units_committed"):
        assert stats[key] == clean_stats[key], key


def test_different_config_on_same_output_is_refused_then_overwrite(
    tmp_path, docs_file, embedded_model
):
    run_job(job_config(tmp_path, docs_file), show_progress=False, backend=FakeBackend())
    other = job_config(tmp_path, docs_file, sampling={"max_tokens": 17})
    with pytest.raises(OutputConflictError, match="--overwrite"):
        run_job(other, show_progress=False, backend=FakeBackend())
    summary = run_job(other, overwrite=True, show_progress=False, backend=FakeBackend())
    assert summary.units_skipped == 0 and summary.units_committed == summary.units_total


def test_changed_input_under_same_config_is_refused(tmp_path, docs_file, embedded_model):
    """Between runs: a file of another size, or of the same size with other bytes, is named
    by the recorded snapshot (sizes and sampled bytes); one the samples miss is caught by the
    committed units' ids. `replan` generates the changed units again: the output is then a
    clean run's of the new input."""
    config = job_config(tmp_path, docs_file)
    run_job(config, show_progress=False, backend=FakeBackend())
    docs = json_lines(docs_file)
    write_jsonl(docs_file, [*docs, {"id": "new", "text": "one more document"}])
    with pytest.raises(InputChangedError, match=r"docs\.jsonl changed after the output's last"):
        run_job(config, show_progress=False, backend=FakeBackend())
    docs[0]["id"] = docs[0]["id"].replace("d", "x")  # same size, other rows
    write_jsonl(docs_file, docs)
    with pytest.raises(InputChangedError, match=r"docs\.jsonl changed .*same size, other bytes"):
        run_job(config, show_progress=False, backend=FakeBackend())
    store = OutputStore(tmp_path / "out")  # a change no sample saw: the units' ids tell
    job = store.read_job()
    job["inputs"][0][2] = identify_inputs(InputSpec(str(docs_file)))[0][2]
    store.location.write_bytes_atomic("_job.json", json.dumps(job).encode())
    with pytest.raises(OutputConflictError, match="input changed.*--replan"):
        run_job(config, show_progress=False, backend=FakeBackend())
    summary = run_job(config, show_progress=False, backend=FakeBackend(), replan=True)
    assert 0 < summary.units_committed < summary.units_total  # only the changed unit
    clean = tmp_path / "clean"
    clean.mkdir()
    run_job(job_config(clean, docs_file), show_progress=False, backend=FakeBackend())
    assert sorted(output_ids(tmp_path / "out")) == sorted(output_ids(clean / "out"))
    assert OutputStore(tmp_path / "out").totals() == OutputStore(clean / "out").totals()


@pytest.mark.parametrize("where", ["folder", "uri"])
def test_dropped_units_leave_the_log_and_their_shards_go(tmp_path, where):
    """What --replan does to a unit whose rows changed, on either kind of commit log."""
    from synth_ray.io.manifest import UnitRecord

    store = OutputStore(tmp_path if where == "folder" else tmp_path.as_uri())
    store.location.make_dir()
    records = []
    for i in range(3):
        shard = f"data/part-{i:06d}-x.parquet"
        store.write_table(shard, pa.table({"id": [str(i)]}))
        records.append(UnitRecord(i, f"u{i}", shard, None, 1, {"rows_in": 1, "rows_out": 1}))
        store.commit(records[-1])
    store.drop_units([records[1]])
    for reader in (store, OutputStore(store.location)):
        assert set(reader.committed()) == {"u0", "u2"}
    assert store.location.listdir("data") == ["part-000000-x.parquet", "part-000002-x.parquet"]
    store.commit(dataclasses.replace(records[1], unit_id="u1-new"))
    assert set(OutputStore(store.location).committed()) == {"u0", "u1-new", "u2"}


def test_an_input_grown_between_runs_is_refused_unless_replanned(
    tmp_path, docs_file, embedded_model
):
    """A file added to the input folder between a run and its resume: refused with one line
    naming it, nothing written; `replan` keeps the committed units and generates the new
    rows, exactly as a clean run of the grown input; later resumes compare with the new
    snapshot."""
    config = job_config(tmp_path, docs_file.parent)
    run_job(config, show_progress=False, backend=FakeBackend())
    out = tmp_path / "out"
    before = (out / "_manifest.jsonl").read_bytes()
    more = [{**doc, "id": f"more-{doc['id']}"} for doc in make_docs(12, words=30)]
    write_jsonl(docs_file.parent / "more.jsonl", more)
    with pytest.raises(InputChangedError, match=r"more\.jsonl appeared after .* --replan"):
        run_job(config, show_progress=False, backend=FakeBackend())
    assert (out / "_manifest.jsonl").read_bytes() == before
    summary = run_job(config, show_progress=False, backend=FakeBackend(), replan=True)
    assert summary.units_skipped > 0 and summary.units_committed > 0
    clean = tmp_path / "clean"
    clean.mkdir()
    run_job(job_config(clean, docs_file.parent), show_progress=False, backend=FakeBackend())
    assert sorted(output_ids(out)) == sorted(output_ids(clean / "out"))
    again = run_job(config, show_progress=False, backend=FakeBackend())
    assert again.units_committed == 0 and again.units_skipped == again.units_total


def test_input_appended_while_the_run_goes_fails_it_without_a_shifted_row(
    tmp_path, docs_file, embedded_model, monkeypatch
):
    """A JSONL still being written: after the first commit the input grows. The next slice
    read fails the job with one line naming the file; every committed unit holds exactly the
    rows a clean run gives it."""
    from synth_ray.runtime.scheduler import JobFailed

    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    run_job(job_config(clean_dir, docs_file), show_progress=False, backend=FakeBackend())
    clean = {r.unit_id: r for r in OutputStore(clean_dir / "out").committed().values()}
    real_commit = store_mod.OutputStore.commit

    def commit_then_append(self, record):
        real_commit(self, record)
        with open(docs_file, "a") as fh:
            fh.write(json.dumps({"id": f"late{record.unit_index}", "text": "late row"}) + "\n")

    monkeypatch.setattr(store_mod.OutputStore, "commit", commit_then_append)
    config = job_config(tmp_path, docs_file, scheduler={"batch_size": 1})
    with pytest.raises(JobFailed, match=r"docs\.jsonl changed after the job planned") as failed:
        run_job(config, show_progress=False, backend=FakeBackend(latency_polls=2))
    assert "\n" not in str(failed.value)
    committed = OutputStore(tmp_path / "out").committed()
    assert committed and len(committed) < len(clean)
    for unit_id, record in committed.items():
        assert unit_id in clean and record.rows_out == clean[unit_id].rows_out
        mine = pq.read_table(tmp_path / "out" / record.data_shard).column("id").to_pylist()
        theirs = pq.read_table(clean_dir / "out" / clean[unit_id].data_shard)
        assert mine == theirs.column("id").to_pylist()


@pytest.mark.parametrize("replicas", [1, 2])
def test_input_rewritten_in_place_while_the_run_goes_fails_it(
    tmp_path, docs_file, embedded_model, monkeypatch, replicas
):
    """A file rewritten at the same size after the first commit (other ids, same bytes
    count): the snapshot's sizes cannot tell, the slice's own check of its unit's source ids
    does, before it writes. With 2 replicas the last units go out in slices, each of which
    checks its whole unit."""
    from synth_ray.runtime.scheduler import JobFailed

    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    run_job(job_config(clean_dir, docs_file), show_progress=False, backend=FakeBackend())
    clean = {r.unit_id: r for r in OutputStore(clean_dir / "out").committed().values()}
    original = docs_file.read_text()
    real_commit = store_mod.OutputStore.commit

    def commit_then_rewrite(self, record):
        real_commit(self, record)
        docs_file.write_text(original.replace('"id": "d00', '"id": "x00'))

    monkeypatch.setattr(store_mod.OutputStore, "commit", commit_then_rewrite)
    config = job_config(
        tmp_path,
        docs_file,
        resources={"replicas": replicas},
        scheduler={"batch_size": 1, "min_slice_rows": 2},
    )
    with pytest.raises(JobFailed, match=r"are not the rows the job planned") as failed:
        run_job(config, show_progress=False, backend=FakeBackend(latency_polls=2))
    assert "\n" not in str(failed.value)
    committed = OutputStore(tmp_path / "out").committed()
    assert committed and all(unit_id in clean for unit_id in committed)


@pytest.mark.parametrize("repeat", [None, (3, 1), (39_999, 17)])
def test_repeated_ids_are_found_in_bounded_memory(tmp_path, monkeypatch, repeat):
    """Past SPILL_AT the id hashes go to temporary files by their top byte, each checked
    alone: a repeat in two spills, or none, is told exactly as in memory."""
    import tempfile

    import synth_ray.plan as plan

    monkeypatch.setattr(plan, "SPILL_AT", 1000)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spills = []
    real_spill = plan.IdHashes._spill
    monkeypatch.setattr(
        plan.IdHashes, "_spill", lambda self: (spills.append(1), real_spill(self))[-1]
    )
    docs = [{"id": f"id-{i}", "text": "x"} for i in range(40_000)]
    if repeat is not None:
        docs[repeat[0]]["id"] = docs[repeat[1]]["id"]
    path = write_jsonl(tmp_path / "ids.jsonl", docs)
    spec = InputSpec(str(path), id_column="id")

    class One:
        def estimate_rows(self, doc):
            return 1

    source = lambda: iter_documents(spec)  # noqa: E731
    if repeat is None:
        assert len(plan.plan_units(source, One(), "k", 5000, "id")) == 8
    else:
        with pytest.raises(InputError, match=f"id 'id-{repeat[1]}' appears more than once"):
            plan.plan_units(source, One(), "k", 5000, "id")
    assert len(spills) >= 40 and not list(tmp_path.glob("synth-ray-ids-*"))


def test_duplicate_ids_stop_the_run_before_work(tmp_path, embedded_model):
    docs = make_docs(5)
    docs[3]["id"] = docs[1]["id"]
    path = write_jsonl(tmp_path / "dup.jsonl", docs)
    with pytest.raises(InputError, match="id 'd0001' appears more than once"):
        run_job(job_config(tmp_path, path), show_progress=False, backend=FakeBackend())
    assert not (tmp_path / "out").exists()


def test_too_long_document_chunks_and_too_long_prompt_errors(tmp_path, embedded_model):
    long_text = " ".join(f"word{i}" for i in range(3000))  # one very long paragraph
    path = write_jsonl(tmp_path / "long.jsonl", [{"id": "long", "text": long_text}])
    config = job_config(tmp_path, path)
    run_job(config, show_progress=False, backend=FakeBackend())
    table = pq.read_table(OutputStore(tmp_path / "out").data_files()[0])
    assert table.num_rows > 20  # chunked, every chunk rephrased
    # a prompt that cannot fit the context becomes an error row, not a failed job
    tiny = job_config(tmp_path / "tiny", path, engine={"max_model_len": 60})
    run_job(tiny, show_progress=False, backend=FakeBackend())
    stats = json.loads((tmp_path / "tiny" / "out" / "stats.json").read_text())
    assert stats["rows_out"] == 0 and stats["errored_by_stage"]["prompt"] == stats["rows_in"]
    errors = pq.read_table(one_shard(tmp_path / "tiny" / "out" / "errors")).to_pylist()
    assert "engine.max_model_len is 60" in errors[0]["error"]


def test_generate_method_rows(tmp_path, embedded_model):
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": f"question {i}"} for i in range(5)] + [{"prompt": None}]
    )
    config = job_config(
        tmp_path,
        path,
        method="generate",
        input={"path": str(path), "text_column": "prompt", "id_column": None},
    )
    run_job(config, show_progress=False, backend=FakeBackend())
    rows = pq.read_table(OutputStore(tmp_path / "out").data_files()[0]).to_pylist()
    assert [r["prompt"] for r in rows] == [f"question {i}" for i in range(5)]
    assert {r["source_id"] for r in rows} == {f"p.jsonl:{i}" for i in range(5)}
    assert set(rows[0]) == {
        "id",
        "source_id",
        "prompt",
        "text",
        "model",
        "n_input_tokens",
        "n_output_tokens",
        "finish_reason",
    }
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["errored_by_stage"] == {"input": 1}


def test_generate_raw_prompts_with_their_own_output_caps(tmp_path, embedded_model):
    from synth_ray.engine.models import resolve_model
    from synth_ray.engine.prompts import PromptRenderer

    rows_in = [{"prompt": f"Once upon a time {i}", "cap": i % 3 + 1} for i in range(6)]
    rows_in += [{"prompt": "no cap here", "cap": None}, {"prompt": "bad cap", "cap": 0}]
    path = write_jsonl(tmp_path / "p.jsonl", rows_in)
    config = job_config(
        tmp_path,
        path,
        method="generate",
        input={"path": str(path), "text_column": "prompt", "id_column": None},
        generate={"raw_prompt": True, "max_tokens_column": "cap"},
    )
    run_job(config, show_progress=False, backend=FakeBackend())
    rows = pq.read_table(OutputStore(tmp_path / "out").data_files()[0]).to_pylist()
    tokenizer = PromptRenderer.from_model(resolve_model(embedded_model)).tokenizer
    by_prompt = {r["prompt"]: r for r in rows}
    for row in rows_in[:6]:
        out = by_prompt[row["prompt"]]
        assert out["n_output_tokens"] == row["cap"]  # the row's own cap, not sampling.max_tokens
        # sent as it is: no chat template around it
        raw_ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        assert out["n_input_tokens"] == len(raw_ids)
    assert (
        by_prompt["no cap here"]["n_output_tokens"] == 5
    )  # sampling.max_tokens, capped by the fake
    errors = error_ids(tmp_path / "out")
    assert len(errors) == 1
    error_rows = pq.read_table(
        one_shard(tmp_path / "out" / "errors"), columns=["error"]
    ).to_pylist()
    assert error_rows[0]["error"] == "cap is 0; expected a positive integer"


def test_raw_prompt_refuses_a_system_prompt(tmp_path):
    from synth_ray.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="raw prompt gets no chat template"):
        job_config(
            tmp_path,
            tmp_path / "x.jsonl",
            method="generate",
            generate={"raw_prompt": True, "system_prompt": "be brief"},
        )


def test_manifest_lines_with_unknown_fields_still_count(tmp_path):
    from synth_ray.io.manifest import Manifest, UnitRecord

    manifest = Manifest(tmp_path)
    manifest.append(UnitRecord(0, "u0", "data/part-000000.parquet", None, 3))
    with open(manifest.path, "a") as fh:  # a line from a newer synth-ray with an extra field
        fh.write(
            json.dumps(
                {
                    "unit_index": 1,
                    "unit_id": "u1",
                    "data_shard": "d",
                    "error_shard": None,
                    "rows_out": 1,
                    "future": 1,
                }
            )
            + "\n"
        )
        fh.write('{"unit_index": 2, "unit_id": "u2"')  # torn: never committed
    assert set(manifest.read()) == {"u0", "u1"}
    manifest.append(UnitRecord(3, "u3", "data/part-000003.parquet", None, 0))
    assert set(manifest.read()) == {"u0", "u1", "u3"}


def stalling_job(tmp_path):
    """A 2-replica job over 60 documents whose replica 0 stops answering after 2 batches
    (detected after 1 s): its config and its simulated backend."""
    docs = write_jsonl(tmp_path / "in" / "docs.jsonl", make_docs(60))
    config = job_config(
        tmp_path,
        docs,
        resources={"replicas": 2},
        scheduler={"stall_timeout_s": 1.0, "min_slice_rows": 4},
    )
    return config, FakeBackend(hang_after_batches={0: 2})


def test_engine_that_stops_answering_is_replaced_and_counted(tmp_path, embedded_model):
    config, backend = stalling_job(tmp_path)
    clean = tmp_path / "clean"
    clean.mkdir()
    run_job(job_config(clean, config.input.path), show_progress=False, backend=FakeBackend())
    summary = run_job(config, show_progress=False, backend=backend)
    ids = output_ids(tmp_path / "out")
    assert sorted(ids) == sorted(output_ids(clean / "out")) and len(ids) == len(set(ids))
    assert len(summary.stalls) == 1 and "replica 0 stalled" in summary.stalls[0]
    assert 0 in backend.stopped and backend.started == [0, 1, 2]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["replicas_stalled"] == 1 and stats["requests_resent"] > 0
    assert "replica 0 stalled: no progress" in stats["last_stall"]
    assert stats["accounted"] is True


def test_a_late_writer_never_replaces_a_committed_shard(tmp_path, embedded_model):
    """A replica declared stalled but only cut off (a partition) still finishes its slices
    after their re-sent attempts were committed: what it writes lands beside the committed
    shards, never over them, and the next run's sweep removes it."""
    from fake_backend import fake_completion

    config, backend = stalling_job(tmp_path)
    run_job(config, show_progress=False, backend=backend)
    out = tmp_path / "out"
    committed = OutputStore(out).rows()
    shards = {p: p.read_bytes() for p in (out / "data").iterdir()}

    def late(request):
        result = fake_completion(request)
        return dataclasses.replace(result, text="LATE " + result.text)

    backend.responder = late
    assert backend.finish_late() > 0, "the stalled replica held no slice"
    assert OutputStore(out).rows() == committed
    assert all(path.read_bytes() == data for path, data in shards.items())
    assert len(list((out / "data").iterdir())) > len(shards)  # the late attempts' strays
    run_job(config, show_progress=False, backend=FakeBackend())  # a resume sweeps them
    assert {p: p.read_bytes() for p in (out / "data").iterdir()} == shards


def test_a_first_run_starts_its_replicas_before_the_tokenizer_a_resume_does_not(
    tmp_path, docs_file, embedded_model, monkeypatch
):
    """Engines load while the driver loads the tokenizer and plans, on a run sure to generate
    (nothing committed yet, or --overwrite); a resume starts them only for a stage with work
    left, so a resume with nothing left never starts an engine."""
    import synth_ray.runtime.job as job_mod
    from synth_ray.runtime.stage import StageRunner

    calls: list[str] = []
    monkeypatch.setattr(StageRunner, "start_replicas_early", lambda self: calls.append("engines"))
    real_load = job_mod.load_renderer

    def load(config):
        calls.append("tokenizer")
        return real_load(config)

    monkeypatch.setattr(job_mod, "load_renderer", load)
    config = job_config(tmp_path, docs_file)
    run_job(config, show_progress=False, backend=FakeBackend())
    assert calls == ["engines", "tokenizer"]
    calls.clear()
    run_job(config, show_progress=False, backend=FakeBackend())  # resume: all committed
    assert calls == ["tokenizer"]
    calls.clear()
    run_job(config, overwrite=True, show_progress=False, backend=FakeBackend())
    assert calls == ["engines", "tokenizer"]


def test_a_resume_reads_no_input_row_on_the_driver(
    tmp_path, docs_file, monkeypatch, embedded_model
):
    """The first run caches its plan in the output; a resume (after a kill, or with nothing
    left) loads it: the driver reads no input row, only the generators read their slices."""
    import threading

    from conftest import Crash, crash_on_commit

    import synth_ray.io.inputs as inputs

    config = job_config(tmp_path, docs_file)
    crash_on_commit(monkeypatch, when=lambda record: record.unit_index == 2)
    with pytest.raises(Crash):
        run_job(config, show_progress=False, backend=FakeBackend())
    monkeypatch.undo()

    def driver_must_not_read(real):
        def read(*args, **kwargs):
            if threading.current_thread() is threading.main_thread():
                raise AssertionError("the driver read an input row")
            return real(*args, **kwargs)

        return read

    for reader in ("_rows_jsonl", "_rows_parquet", "_skip_jsonl"):
        monkeypatch.setattr(inputs, reader, driver_must_not_read(getattr(inputs, reader)))
    resumed = run_job(config, show_progress=False, backend=FakeBackend())
    assert 0 < resumed.units_committed < resumed.units_total
    again = run_job(config, show_progress=False, backend=FakeBackend())
    assert again.units_committed == 0 and again.units_skipped == again.units_total
    clean = tmp_path / "clean"
    clean.mkdir()
    monkeypatch.undo()
    run_job(job_config(clean, docs_file), show_progress=False, backend=FakeBackend())
    assert sorted(output_ids(tmp_path / "out")) == sorted(output_ids(clean / "out"))


def test_row_ids_default_to_an_id_column_when_every_file_has_one(tmp_path, embedded_model):
    """A recipe need not name `id`: a corpus with an `id` column keeps its ids (the same job,
    same fingerprint, as naming it), one without gets ids from file name and row number
    instead of an error, and the summary says which. A named column that is missing is still
    an error."""
    import pyarrow as pa

    from synth_ray.errors import InputError
    from synth_ray.methods import method_spec
    from synth_ray.runtime.job import with_default_id_column

    rows = [{"id": f"doc-{i}", "prompt": f"question {i}"} for i in range(3)]
    with_ids = tmp_path / "with"
    with_ids.mkdir()
    write_jsonl(with_ids / "a.jsonl", rows)
    more = [{"id": f"doc-{i}", "prompt": f"question {i}"} for i in range(3, 6)]
    pq.write_table(pa.Table.from_pylist(more), with_ids / "b.parquet")
    without = write_jsonl(tmp_path / "bare.jsonl", [{"prompt": f"question {i}"} for i in range(3)])

    def config(path, name, **given):
        return job_config(
            tmp_path,
            path,
            method="generate",
            input={"path": str(path), "text_column": "prompt", "id_column": None, **given},
            output={"path": str(tmp_path / name)},
        )

    found = run_job(config(with_ids, "found"), show_progress=False, backend=FakeBackend())
    out = OutputStore(tmp_path / "found").rows()
    assert sorted(r["source_id"] for r in out) == [f"doc-{i}" for i in range(6)]
    assert found.row_ids == "row ids: the input's 'id' column (found in every input file)"
    named = config(with_ids, "found", id_column="id")
    assert with_default_id_column(config(with_ids, "x"), method_spec("generate")).fingerprint() == (
        named.fingerprint()
    )
    derived = run_job(config(without, "derived"), show_progress=False, backend=FakeBackend())
    out = OutputStore(tmp_path / "derived").rows()
    assert sorted(r["source_id"] for r in out) == [f"bare.jsonl:{i}" for i in range(3)]
    assert derived.row_ids.startswith("row ids: derived from file name and row number")
    # one file without `id` among them: derived for all, not an error
    write_jsonl(with_ids / "c.jsonl", [{"prompt": "no id here"}])
    mixed = run_job(config(with_ids, "mixed"), show_progress=False, backend=FakeBackend())
    assert mixed.row_ids.startswith("row ids: derived")
    with pytest.raises(InputError, match="input.id_column 'id': no such field"):
        run_job(
            config(without, "named", id_column="id"), show_progress=False, backend=FakeBackend()
        )
    # ids that repeat: the error says how to derive them instead, and that works
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": "same", "prompt": p} for p in "ab"])
    with pytest.raises(InputError, match="appears more than once .input.id_column: ''"):
        run_job(config(dup, "dup"), show_progress=False, backend=FakeBackend())
    asked = run_job(config(dup, "dup", id_column=""), show_progress=False, backend=FakeBackend())
    assert asked.row_ids == "row ids: derived from file name and row number (input.id_column: '')"
    assert len(OutputStore(tmp_path / "dup").rows()) == 2


def test_an_output_made_with_derived_ids_before_the_default_keeps_them(
    tmp_path, embedded_model, monkeypatch
):
    """An output this job made (before ids defaulted to an `id` column) with derived ids from
    an input that has one resumes as it was, rather than being refused as another job."""
    import synth_ray.runtime.job as job_mod

    rows = [{"id": f"doc-{i}", "prompt": f"question {i}"} for i in range(6)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    config = job_config(
        tmp_path,
        path,
        method="generate",
        input={"path": str(path), "text_column": "prompt", "id_column": None},
    )
    with monkeypatch.context() as before_the_default:
        before_the_default.setattr(job_mod, "default_id_column", lambda spec: None)
        first = run_job(config, show_progress=False, backend=FakeBackend())
    again = run_job(config, show_progress=False, backend=FakeBackend())
    assert again.units_skipped == again.units_total == first.units_total
    assert again.row_ids.startswith("row ids: derived")
    fresh = run_job(config, overwrite=True, show_progress=False, backend=FakeBackend())
    assert fresh.row_ids.startswith("row ids: the input's 'id' column")
