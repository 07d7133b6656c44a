"""Rows kept aside: every dropped row with its filter and completion (`output.keep_dropped`),
and rows a method keeps into a named split (`Kept(row, split=...)`), each folder named by the
unit's commit record, read back through the dataset card by `datasets` and DuckDB.

    pytest tests/test_keep_dropped.py

The jobs run a small method of this file (`Sorter`) on the simulated engine: it drops rows
before any request and after generation, samples two completions per prompt, and keeps some
rows into an `uncertain` split. The real engine's dropped completions are checked in
test_end_to_end.py (`test_rephrase_formats_whole_documents_on_real_engine`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import Crash, crash_on_commit, job_config, write_jsonl
from fake_backend import FakeBackend

import synth_ray.runtime.job as job_mod
from synth_ray.dataset.card import card_text, write_card
from synth_ray.dataset.report import write_report
from synth_ray.engine.requests import EngineRequest, EngineResult, SamplingSpec
from synth_ray.io.manifest import UnitRecord
from synth_ray.io.output_store import OutputStore, check_split_name
from synth_ray.methods import method_spec
from synth_ray.methods.base import Candidate, Dropped, Errored, Kept, Method, row_id
from synth_ray.methods.stages import run_single_stage
from synth_ray.runtime.job import run_job
from synth_ray.runtime.units import completion_of, completion_outcomes

PROMPTS = 12  # p0..p11; units of two prompts (rows_per_shard 4, two rows each)


class Sorter(Method):
    """Two samples per prompt. A prompt whose number is 3 mod 4 is dropped before any
    request (`unanswerable`, both rows); otherwise sample 0 is kept (into `uncertain` when
    the number is 1 mod 4) and sample 1 dropped (`second_sample`)."""

    name = "sorter"
    schema = pa.schema([("id", pa.string()), ("source_id", pa.string()), ("text", pa.string())])
    splits = ("uncertain",)

    def sampling_overrides(self) -> dict[str, Any]:
        return {"n": 2}

    def estimate_rows(self, doc):
        return 2

    def expand(self, doc):
        rid = row_id(doc.source_id, "sorter")
        if number(doc.source_id) % 4 == 3:
            return [Candidate(rid, doc.source_id, dropped="unanswerable", width=2)]
        messages = [{"role": "user", "content": doc.text}]
        return [Candidate(rid, doc.source_id, messages=messages, width=2)]

    def finish(self, candidate, result):
        (first, _, _), _ = result.all_samples()
        split = "uncertain" if number(candidate.source_id) % 4 == 1 else None
        row = {"id": candidate.sample_id(0), "source_id": candidate.source_id, "text": first}
        return [Kept(row, split=split), Dropped("second_sample")]


def number(source_id: str) -> int:
    return int(source_id.rsplit(":", 1)[1])


def two_samples(request: EngineRequest) -> EngineResult:
    """n completions, each naming its sample, with markup the report must escape."""
    samples = tuple(
        (f"<b>sample {k}</b> of {request.request_id} " + "y" * 400, 5, "stop")
        for k in range(request.sampling.n)
    )
    return EngineResult(
        request.request_id, samples[0][0], 7, 5 * len(samples), "stop", None, samples
    )


@pytest.fixture()
def sorter_job(tmp_path, monkeypatch):
    """`config(out, keep_dropped)` for a `generate` job that runs `Sorter` instead."""
    real = method_spec("generate")
    sorter = dataclasses.replace(real, run=lambda ctx: run_single_stage(ctx, Sorter()))
    monkeypatch.setattr(job_mod, "method_spec", lambda name: sorter)
    prompts = [{"prompt": f"question number {i}"} for i in range(PROMPTS)]
    path = write_jsonl(tmp_path / "p.jsonl", prompts)

    def config(out: str, keep_dropped: bool = True):
        made = job_config(
            tmp_path,
            path,
            method="generate",
            input={"path": str(path), "text_column": "prompt", "id_column": None},
            output={"rows_per_shard": 4, "keep_dropped": keep_dropped},
        )
        return made.model_copy(update={"output": made.output.model_copy(update={"path": out})})

    return config


def expected_dropped() -> dict[str, tuple[str, bool]]:
    """Dropped row id -> (filter, whether it has a completion)."""
    out = {}
    for i in range(PROMPTS):
        rid = row_id(f"p.jsonl:{i}", "sorter")
        if i % 4 == 3:
            out[row_id(rid, "sample", 0)] = ("unanswerable", False)
            out[row_id(rid, "sample", 1)] = ("unanswerable", False)
        else:
            out[row_id(rid, "sample", 1)] = ("second_sample", True)
    return out


def kept_aside(output: str) -> tuple[list[dict], list[dict]]:
    """The committed dropped rows and `uncertain` rows, through the commit records."""
    store = OutputStore(output)
    records = sorted(store.committed().values(), key=lambda r: r.unit_index)
    read = store.location.read_table
    dropped = [row for r in records for s in r.dropped_shards for row in read(s).to_pylist()]
    split = [
        row for r in records for s in r.split_shards["uncertain"] for row in read(s).to_pylist()
    ]
    return dropped, split


@pytest.mark.parametrize("where", ["folder", "uri"])
def test_dropped_rows_and_split_rows_are_written_beside_the_data(
    tmp_path, sorter_job, embedded_model, where
):
    out = tmp_path / "out"
    output = str(out) if where == "folder" else out.as_uri()
    summary = run_job(
        sorter_job(output), show_progress=False, backend=FakeBackend(responder=two_samples)
    )
    stats = summary.stats
    assert stats["accounted"] and stats["rows_in"] == 2 * PROMPTS
    assert stats["dropped_by_filter"] == {"second_sample": 9, "unanswerable": 6}
    assert stats["rows_out"] == 9 and stats["rows_by_split"] == {"uncertain": 3}
    dropped, split = kept_aside(output)
    assert {r["id"]: (r["filter"], r["completion"] is not None) for r in dropped} == (
        expected_dropped()
    )
    assert len(dropped) == stats["rows_dropped"]
    for row in dropped:  # the completion of its own sample, not the first one's
        if row["completion"] is not None:
            assert row["completion"].startswith("<b>sample 1</b> of ")
        assert row["stage"] == "sorter" and row["source_id"].startswith("p.jsonl:")
    assert sorted(number(r["source_id"]) for r in split) == [1, 5, 9]
    data = pq.read_table(out / "data").to_pylist()
    assert sorted(number(r["source_id"]) for r in data) == [0, 2, 4, 6, 8, 10]
    # one shard per unit in each folder, named by the unit's record; the split's every unit
    records = OutputStore(output).committed().values()
    for folder, named in (
        ("dropped", [s for r in records for s in r.dropped_shards]),
        ("uncertain", [s for r in records for s in r.split_shards["uncertain"]]),
    ):
        assert sorted(f"{folder}/{p.name}" for p in (out / folder).iterdir()) == sorted(named)
        assert len(named) == len(records) == summary.units_total


def test_inspect_shows_the_dropped_rows_and_a_split(tmp_path, sorter_job, embedded_model):
    from typer.testing import CliRunner

    from synth_ray.cli import app

    out = tmp_path / "out"
    run_job(sorter_job(str(out)), show_progress=False, backend=FakeBackend(responder=two_samples))
    runner = CliRunner()
    shown = runner.invoke(app, ["inspect", str(out), "--dropped", "--n", "20", "--json"])
    assert shown.exit_code == 0, shown.output
    rows = [json.loads(line) for line in shown.output.splitlines()]
    assert {r["id"]: (r["filter"], r["completion"] is not None) for r in rows} == (
        expected_dropped()
    )
    where = "filter = 'unanswerable'"
    shown = runner.invoke(app, ["inspect", str(out), "--dropped", "--where", where, "--n", "20"])
    assert shown.exit_code == 0 and "6 dropped rows where filter = 'unanswerable'" in shown.output
    shown = runner.invoke(app, ["inspect", str(out), "--split", "uncertain", "--json"])
    assert sorted(number(json.loads(x)["source_id"]) for x in shown.output.splitlines()) == [
        1,
        5,
        9,
    ]
    shown = runner.invoke(app, ["inspect", str(out), "--split", "unsure"])
    assert shown.exit_code != 0 and "no split 'unsure' (splits: uncertain)" in shown.output


def test_the_card_and_the_report_show_the_dropped_rows_and_the_split(
    tmp_path, sorter_job, embedded_model
):
    import duckdb
    from datasets import load_dataset

    out = tmp_path / "out"
    run_job(sorter_job(str(out)), show_progress=False, backend=FakeBackend(responder=two_samples))
    write_card(out)
    cache = str(tmp_path / "hf")  # `datasets` caches a folder's config by its name: "out"
    header = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in header["configs"]}
    assert configs == {
        "default": "data/*.parquet",
        "dropped": "dropped/*.parquet",
        "uncertain": "uncertain/*.parquet",
    }
    assert len(load_dataset(str(out), split="train", cache_dir=cache)) == 6
    dropped = load_dataset(str(out), "dropped", split="train", cache_dir=cache)
    assert sorted(dropped["id"]) == sorted(expected_dropped())
    assert set(dropped.column_names) == {
        "id",
        "source_id",
        "stage",
        "filter",
        "completion",
        "unit_index",
    }
    uncertain = load_dataset(str(out), "uncertain", split="train", cache_dir=cache)
    assert sorted(uncertain["source_id"]) == ["p.jsonl:1", "p.jsonl:5", "p.jsonl:9"]
    glob = out / "dropped" / "*.parquet"
    counts = duckdb.sql(f"SELECT filter, count(*) FROM '{glob}' GROUP BY 1 ORDER BY 1").fetchall()
    assert counts == [("second_sample", 9), ("unanswerable", 6)]
    split = duckdb.sql(f"SELECT count(*) FROM '{out / 'uncertain' / '*.parquet'}'").fetchall()
    assert split == [(3,)]

    page = Path(write_report(out)).read_text()
    shown = page.split("id='dropped'")[1]
    assert shown.count("<tr><td>second_sample</td>") == 3  # up to 3 per filter
    assert shown.count("<tr><td>unanswerable</td>") == 3
    assert "dropped before any request" in shown
    assert "&lt;b&gt;sample 1&lt;/b&gt;" in shown and "<b>sample" not in shown  # escaped
    assert "y" * 300 not in shown and "y" * 200 + " ..." in shown  # cut short


def test_a_split_with_no_row_is_named_by_the_card_and_has_its_schema(
    tmp_path, sorter_job, embedded_model
):
    """Every unit writes every declared split, an empty one too, so pyarrow and DuckDB read
    it with its columns; the card says it holds 0 rows and gives it no config (`datasets`
    refuses a config with no row)."""
    out = tmp_path / "out"
    config = sorter_job(str(out))
    path = write_jsonl(tmp_path / "one.jsonl", [{"prompt": "question 0"}])  # row 0: data/
    config = config.model_copy(
        update={"input": config.input.model_copy(update={"path": str(path)})}
    )
    run_job(config, show_progress=False, backend=FakeBackend(responder=two_samples))
    empty = pq.read_table(out / "uncertain")
    assert empty.num_rows == 0 and empty.column_names == ["id", "source_id", "text"]
    text = card_text(OutputStore(out))
    configs = yaml.safe_load(text.split("---")[1])["configs"]
    assert [c["config_name"] for c in configs] == ["default", "dropped"]
    assert "kept 0 rows into `uncertain/`, with the columns above" in text


def test_a_run_killed_mid_job_resumes_without_a_dropped_row_twice_or_lost(
    tmp_path, sorter_job, embedded_model, monkeypatch
):
    """Killed at a unit's commit (its shards written, no record): the resume writes that unit
    again, under a new attempt; the stage's sweep removes the killed attempt's dropped and
    split shards, and every kept-aside row is there once."""
    clean = tmp_path / "clean"
    run_job(sorter_job(str(clean)), show_progress=False, backend=FakeBackend(responder=two_samples))
    out = tmp_path / "out"
    commits = []

    def third(record):
        commits.append(record)
        return len(commits) == 3

    with monkeypatch.context() as patch:
        crash_on_commit(patch, third)
        with pytest.raises(Crash):
            run_job(
                sorter_job(str(out)),
                show_progress=False,
                backend=FakeBackend(responder=two_samples),
            )
    strays = {f"dropped/{p.name}" for p in (out / "dropped").iterdir()}
    assert set(commits[2].dropped_shards) <= strays and commits[2].split_shards["uncertain"]
    summary = run_job(
        sorter_job(str(out)), show_progress=False, backend=FakeBackend(responder=two_samples)
    )
    assert summary.units_skipped == 2 and summary.units_committed == summary.units_total - 2
    dropped, split = kept_aside(str(out))
    clean_dropped, clean_split = kept_aside(str(clean))
    ids = [r["id"] for r in dropped]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(r["id"] for r in clean_dropped)
    assert sorted(r["id"] for r in split) == sorted(r["id"] for r in clean_split)
    for folder in ("dropped", "uncertain"):  # the killed attempt's shards are gone
        left = {f"{folder}/{p.name}" for p in (out / folder).iterdir()}
        killed = (
            commits[2].dropped_shards if folder == "dropped" else commits[2].split_shards[folder]
        )
        assert not left & set(killed)
        assert len(pq.read_table(out / folder)) == len(dropped if folder == "dropped" else split)


def test_keep_dropped_is_not_in_the_fingerprint_and_a_resume_may_switch_it(
    tmp_path, sorter_job, embedded_model
):
    """Switched on for a resume: the job is the same job; the units committed while it was
    off keep no dropped rows (the card then has no dropped config)."""
    out = str(tmp_path / "out")
    assert sorter_job(out, True).fingerprint() == sorter_job(out, False).fingerprint()
    backend = FakeBackend(responder=two_samples)
    first = run_job(sorter_job(out, keep_dropped=False), show_progress=False, backend=backend)
    assert not (tmp_path / "out" / "dropped").exists()
    again = run_job(sorter_job(out, keep_dropped=True), show_progress=False, backend=backend)
    assert again.units_skipped == first.units_total and again.units_committed == 0
    assert kept_aside(out)[0] == []
    configs = yaml.safe_load(card_text(OutputStore(out)).split("---")[1])["configs"]
    assert [c["config_name"] for c in configs] == ["default", "uncertain"]


def test_the_completion_kept_is_the_rows_own():
    """A sample's own text where the candidate asked for n samples; the whole completion
    where its rows share one (`exact_width` False); none before any request or on an
    engine error."""
    samples = (("first", 3, "stop"), ("second", 4, "length"))
    result = EngineResult("r", "first", 5, 7, "stop", None, samples)
    many = Candidate("r", "s", width=2)
    assert [completion_of(many, result, i) for i in (0, 1)] == ["first", "second"]
    shared = Candidate("r", "s", width=5, exact_width=False)
    one = EngineResult("r", "one text, three rows", 5, 7, "stop")
    assert completion_of(shared, one, 2) == "one text, three rows"
    assert completion_of(Candidate("r", "s"), one, 0) == "one text, three rows"
    assert completion_of(many, None, 1) is None
    failed = EngineResult("r", "", 5, 0, None, error="rejected")
    assert completion_of(Candidate("r", "s"), failed, 0) is None


def test_split_names_are_checked():
    for good in ("uncertain", "needs_review", "v2"):
        check_split_name(good)
    for bad in ("data", "errors", "dropped", "embeddings", "stages", "report", "default"):
        with pytest.raises(ValueError, match="reserved"):
            check_split_name(bad)
    for bad in ("Uncertain", "_staging", "two words", "a/b", "", "2nd"):
        with pytest.raises(ValueError, match="lowercase identifier"):
            check_split_name(bad)

    class Undeclared(Sorter):
        splits = ()

    sampling = Sorter().stage_sampling(SamplingSpec(0.7, 0.9, 8))
    result = two_samples(EngineRequest("r", [1], sampling, None, 8))
    outcomes = completion_outcomes(Undeclared(), Candidate("r", "p.jsonl:1", width=2), result)
    assert outcomes == [Errored("parse", outcomes[0].error)] * 2
    assert "'uncertain', which the method does not declare" in outcomes[0].error


def test_a_method_declaring_a_reserved_split_fails_before_any_work(
    tmp_path, sorter_job, embedded_model, monkeypatch
):
    monkeypatch.setattr(Sorter, "splits", ("errors",))
    backend = FakeBackend(responder=two_samples)
    with pytest.raises(ValueError, match="split 'errors': reserved"):
        run_job(sorter_job(str(tmp_path / "out")), show_progress=False, backend=backend)
    assert backend.submitted == []


@pytest.mark.parametrize("where", ["folder", "uri"])
def test_dropped_and_split_shards_go_with_their_unit_and_strays_are_swept(tmp_path, where):
    """What --replan does to a unit (`drop_units`) and a stage's end (`sweep_unreferenced`)
    to its dropped and split shards, on either kind of commit log."""
    store = OutputStore(tmp_path if where == "folder" else tmp_path.as_uri())
    store.location.make_dir()
    records = []
    for i in range(2):
        name = f"part-{i:06d}-x.parquet"
        for folder in ("data", "dropped", "uncertain"):
            store.write_table(f"{folder}/{name}", pa.table({"id": [str(i)]}))
        stats = {"rows_in": 2, "rows_out": 1, "dropped_by_filter": {"f": 1}}
        record = UnitRecord(i, f"u{i}", f"data/{name}", None, 1, stats)
        record.dropped_shards = [f"dropped/{name}"]
        record.split_shards = {"uncertain": [f"uncertain/{name}"]}
        store.commit(record)
        records.append(record)
    for folder in ("dropped", "uncertain", "other"):  # a killed attempt's, and another split's
        store.write_table(f"{folder}/part-000001-killed.parquet", pa.table({"id": ["1"]}))
    assert store.sweep_unreferenced("", ("uncertain", "other")) == 3
    store.drop_units([records[1]])
    for folder in ("data", "dropped", "uncertain"):
        assert store.location.listdir(folder) == ["part-000000-x.parquet"]
    assert store.location.listdir("other") == []


class _KeepAll:
    """A diversity filter keeping every row (this test is about positions and records)."""

    dim = 2

    def decide_unit(self, vectors):
        from synth_ray.diversity.decide import BatchDecision

        return BatchDecision(np.ones(len(vectors), bool), np.full(len(vectors), 0.5, np.float32))

    def unit_committed(self, output, stage, unit_id):
        pass

    def snapshot_due(self):
        return False

    def take_snapshot(self, check=None):
        pass


def test_a_filtered_unit_decides_its_data_rows_and_names_every_slices_rows_aside(tmp_path):
    """With the diversity filter, a slice stages only its data/ rows: a row kept into a split
    is not among the positions decided, and the unit's record names each slice's split and
    dropped shards."""
    from synth_ray.plan import WorkUnit
    from synth_ray.runtime.slices import FilteredSliceTracker, SliceDone, cut_slices

    store = OutputStore(tmp_path / "out")
    tracker = FilteredSliceTracker(store, "", lambda stats: None, _KeepAll(), "k")
    units = {0: WorkUnit(0, "u0", 0, 4, 4)}
    slices = list(tracker.register(cut_slices(units.values(), "k", 4, 2, 2), units))
    assert len(slices) == 2  # two slices of one unit
    stats = {"rows_in": 3, "rows_out": 2, "rows_by_split": {"uncertain": 1}}
    stats |= {"dropped_by_filter": {"f": 1}}
    for n, item in enumerate(slices):
        done = SliceDone(
            item.key, 0, item.payload.start, f"_staging/s{n}", None, stats,
            vectors=np.ones((1, 2), np.float16), decided=np.zeros(1, np.int64),
            dropped_shard=f"dropped/s{n}", split_shards={"uncertain": f"uncertain/s{n}"},
        )  # fmt: skip
        tracker.add_result(item, done)
    [write] = tracker.to_write
    assert write.payload.decided.tolist() == [0, 1]  # one staged row per slice
    tracker.add_result(write, SliceDone(write.key, 0, -1, "data/u0", None, {}))
    [record] = store.committed().values()
    assert record.dropped_shards == ["dropped/s0", "dropped/s1"]
    assert record.split_shards == {"uncertain": ["uncertain/s0", "uncertain/s1"]}
    assert record.rows_out == 4 and record.stats["rows_by_split"] == {"uncertain": 2}
