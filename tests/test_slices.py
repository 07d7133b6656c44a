"""The slice data path: generators read, render, parse and write; the driver commits units.

Range reads against full reads, the tail-cutting policy, and whole jobs on the simulated engine
(the per-row code is the real SliceWorker): sliced units, a poison row, no orphan shards."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import job_config, make_docs, write_jsonl
from fake_backend import FakeBackend

from synth_ray.io.inputs import InputSpec, iter_document_range, iter_documents
from synth_ray.io.output_store import OutputStore
from synth_ray.plan import WorkUnit
from synth_ray.runtime.job import run_job
from synth_ray.runtime.scheduler import WorkItem
from synth_ray.runtime.slices import SliceTask, cut_slices, split_slice


def test_range_reads_equal_slices_of_the_full_read(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [{"text": f"t{i}", "id": f"a{i}"} for i in range(23)]
    # several row groups, so a range starts inside a file and skips whole groups
    pq.write_table(pa.Table.from_pylist(rows[:17]), folder / "a.parquet", row_group_size=5)
    pq.write_table(pa.Table.from_pylist(rows[17:]), folder / "b.parquet", row_group_size=2)
    lines = [json.dumps({"text": f"j{i}"}) for i in range(9)]
    lines.insert(3, "   ")  # a blank line is not a row
    lines.insert(6, "not json")  # a bad row is a row (an error document)
    lines.insert(8, json.dumps({"text": "é, not ASCII: offsets are bytes"}))
    (folder / "c.jsonl").write_text("\n".join(lines) + "\n")
    for limit in (None, 30):
        spec = InputSpec(str(folder), limit=limit)
        full = list(iter_documents(spec))
        assert len(full) == (34 if limit is None else 30)
        for start in range(0, len(full) + 1, 2):
            for stop in (start, start + 1, start + 4, start + 9, None):
                expected = full[start:stop]
                assert list(iter_document_range(spec, start, stop)) == expected, (start, stop)
                for at in {0, start // 2, start - 1, start} & set(range(len(full))):
                    seek = full[at].seek  # read from where an earlier document starts
                    got = list(iter_document_range(spec, start, stop, seek))
                    assert got == expected, (start, stop, at)


def units_of(sizes: list[int]) -> list[WorkUnit]:
    units, start = [], 0
    for index, size in enumerate(sizes):
        units.append(WorkUnit(index, f"u{index}", start, start + size, size))
        start += size
    return units


def test_one_replica_never_cuts_and_slices_partition_each_unit():
    units = units_of([100] * 40)
    whole = list(cut_slices(units, "k", 4000, replicas=1, min_slice_rows=1))
    assert [(i.payload.start, i.payload.stop) for i in whole] == [(u.start, u.stop) for u in units]
    cut = list(cut_slices(units, "k", 4000, replicas=8, min_slice_rows=4))
    for unit in units:
        mine = [i.payload for i in cut if i.unit_index == unit.index]
        assert mine[0].start == unit.start and mine[-1].stop == unit.stop
        assert all(a.stop == b.start for a, b in zip(mine, mine[1:], strict=False))
    largest = [
        max(i.payload.stop - i.payload.start for i in cut if i.unit_index == u.index) for u in units
    ]
    # early units go whole, the tail is cut ever finer, never under min_slice_rows
    assert largest[0] == 100 and largest[-1] < 100
    assert largest == sorted(largest, reverse=True)
    assert min(i.payload.stop - i.payload.start for i in cut) >= 4


def test_suspect_slices_are_bisected_down_to_one_row():
    task = SliceTask("k", 0, "u0", 0, 10, 0, 10)
    pieces = [WorkItem(task, 0, attempts=2, weight=10)]
    while any(p.payload.stop - p.payload.start > 1 for p in pieces):
        pieces = [half for p in pieces for half in split_slice(p)]
    assert [(p.payload.start, p.payload.stop) for p in pieces] == [(i, i + 1) for i in range(10)]
    assert split_slice(pieces[0]) == [pieces[0]]


@pytest.fixture()
def docs_file(tmp_path):
    docs = make_docs(40)
    docs[7]["text"] = ""
    return write_jsonl(tmp_path / "in" / "docs.jsonl", docs)


def rows_by_id(path) -> dict[str, dict]:
    store = OutputStore(path)
    return {row["id"]: row for row in store.rows()}


def sliced_config(tmp_path, docs_file, **scheduler):
    return job_config(
        tmp_path,
        docs_file,
        output={"rows_per_shard": 40},
        resources={"replicas": 4},
        scheduler={"min_slice_rows": 2, **scheduler},
    )


def test_sliced_units_commit_the_same_rows_as_whole_units(tmp_path, docs_file, embedded_model):
    whole = job_config(tmp_path / "whole", docs_file, output={"rows_per_shard": 40})
    run_job(whole, show_progress=False, backend=FakeBackend())
    config = sliced_config(tmp_path, docs_file)
    summary = run_job(config, show_progress=False, backend=FakeBackend())
    store = OutputStore(tmp_path / "out")
    records = list(store.committed().values())
    assert any(r.more_data_shards for r in records), "the tail was never cut into slices"
    assert summary.units_committed == len(records)
    # the same rows, ids and accounting as the run that wrote each unit whole
    sliced, reference = rows_by_id(tmp_path / "out"), rows_by_id(tmp_path / "whole" / "out")
    assert sliced.keys() == reference.keys()
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    ref_stats = json.loads((tmp_path / "whole" / "out" / "stats.json").read_text())
    for key in ("rows_in", "rows_out", "rows_errored", "input_documents", "input_tokens"):
        assert stats[key] == ref_stats[key], key
    # any Arrow reader of data/ sees exactly the committed rows
    listed = ds.dataset(tmp_path / "out" / "data", format="parquet").to_table()
    assert sorted(listed.column("id").to_pylist()) == sorted(sliced)


def test_poison_row_ends_as_its_own_error_rows_and_the_rest_commit(
    tmp_path, docs_file, embedded_model
):
    clean = sliced_config(tmp_path / "clean", docs_file)
    run_job(clean, show_progress=False, backend=FakeBackend())
    reference = rows_by_id(tmp_path / "clean" / "out")
    poison = sorted(reference)[5]
    poisoned_doc = reference[poison]["source_id"]
    backend = FakeBackend(poison_request=poison)
    # the default restart budget: replicas a suspect kills while run alone are not charged
    config = sliced_config(tmp_path, docs_file)
    summary = run_job(config, show_progress=False, backend=backend)
    assert summary.replica_failures, "the poison row never killed a replica"
    rows = rows_by_id(tmp_path / "out")
    errors = OutputStore(tmp_path / "out").rows(errors=True)
    lost = [e for e in errors if "lost with its replica" in e["error"]]
    # only the poisoned document's rows are lost, each one an error row with the reason
    assert {e["source_id"] for e in lost} == {poisoned_doc}
    assert poison in {e["id"] for e in lost}
    assert set(rows) | {e["id"] for e in lost} == set(reference)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["accounted"] and stats["errored_by_stage"]["generate"] == len(lost)
    listed = ds.dataset(tmp_path / "out" / "data", format="parquet").to_table()
    assert sorted(listed.column("id").to_pylist()) == sorted(rows)


def test_a_path_some_nodes_cannot_see_is_one_line_naming_them():
    from synth_ray.runtime.cluster import unreachable_message

    assert unreachable_message("output.path", "/data/out/_job.json", [], "fix") is None
    message = unreachable_message(
        "output.path", "/data/out/_job.json", [f"10.0.0.{i} (n{i})" for i in range(7)], "use s3"
    )
    assert "\n" not in message
    assert message.startswith("output.path /data/out/_job.json: not visible from Ray node(s)")
    assert "10.0.0.0 (n0)" in message and "and 2 more" in message and message.endswith("use s3")


def test_a_failing_row_parser_stops_the_job_with_its_reason(
    tmp_path, docs_file, embedded_model, monkeypatch
):
    """A bug in per-row code fails the same way on every replica: the job stops at once, with
    the reason and the unit, instead of killing replicas; committed units stay committed."""
    from synth_ray.methods.rephrase import RephraseMethod
    from synth_ray.runtime.scheduler import JobFailed

    real = RephraseMethod.expand

    def broken(self, doc):
        if doc.source_id == "d0030":
            raise KeyError("the parser's bug")
        return real(self, doc)

    monkeypatch.setattr(RephraseMethod, "expand", broken)
    config = job_config(tmp_path, docs_file)
    backend = FakeBackend()
    with pytest.raises(JobFailed, match=r"unit \d+: reading or rendering its rows failed on .*"):
        run_job(config, show_progress=False, backend=backend)
    assert not backend.started[1:], "a per-row bug must not be retried on new replicas"
    assert OutputStore(tmp_path / "out").committed(), "units before it stay committed"


def test_strays_of_killed_runs_are_swept_even_when_nothing_is_left_to_do(
    tmp_path, docs_file, embedded_model
):
    config = job_config(tmp_path, docs_file)
    run_job(config, show_progress=False, backend=FakeBackend())
    out = tmp_path / "out"
    before = sorted(p.name for p in (out / "data").iterdir())
    # what a run killed mid-unit leaves: a slice's shards and staged rows, never committed
    stray = pa.table({"id": ["x"]})
    pq.write_table(stray, out / "data" / "part-000001-000000-000002.parquet")
    pq.write_table(stray, out / "errors" / "part-000001-000000-000002.parquet")
    (out / "_staging").mkdir()
    pq.write_table(stray, out / "_staging" / "part-000002.parquet")
    summary = run_job(config, show_progress=False, backend=FakeBackend())
    assert summary.units_committed == 0
    assert sorted(p.name for p in (out / "data").iterdir()) == before
    assert not list((out / "errors").glob("part-000001-*"))
    assert not list((out / "_staging").iterdir())


class _KeepAll:
    """A filter keeping every row (these tests are about commit order, not decisions)."""

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


def test_filtered_units_commit_in_unit_order_whatever_order_they_are_written(tmp_path):
    """A resumed run rebuilds the filter from the committed units, so they must be a prefix:
    a unit written before an earlier one waits for it."""
    from synth_ray.runtime.slices import FilteredSliceTracker, SliceDone

    store = OutputStore(tmp_path / "out")
    committed: list[int] = []
    tracker = FilteredSliceTracker(
        store, "", lambda stats: committed.append(len(committed)), _KeepAll(), "k"
    )
    units = {i: WorkUnit(i, f"u{i}", i, i + 1, 1) for i in range(3)}
    items = list(tracker.register(cut_slices(units.values(), "k", 3, 1, 1), units))
    stats = {"rows_in": 1, "rows_out": 1, "input_documents": 1}
    for item in items:
        vectors = np.ones((1, 2), np.float16)
        done = SliceDone(
            item.key,
            item.unit_index,
            item.payload.start,
            f"s{item.unit_index}",
            None,
            stats,
            vectors=vectors,
            decided=np.zeros(1, np.int64),
        )
        tracker.add_result(item, done)
    writes = {w.unit_index: w for w in tracker.to_write}
    assert sorted(writes) == [0, 1, 2]

    def written(index):
        task = writes[index].payload
        return SliceDone(
            task.key, index, -1, f"data/{index}", None, {}, embedding_shard=f"embeddings/{index}"
        )

    for index in (2, 0):
        tracker.add_result(writes[index], written(index))
    assert sorted(r.unit_index for r in store.committed().values()) == [0]
    tracker.add_result(writes[1], written(1))
    assert sorted(r.unit_index for r in store.committed().values()) == [0, 1, 2]
    tracker.check_done()


def test_finished_units_never_pile_up_without_bound_behind_a_slow_one(tmp_path):
    """Units decide in order: while unit 0 is slow, finished later units wait with their
    vectors in the driver. At `max_ahead` of them no new slice goes out until unit 0 is back."""
    from synth_ray.runtime.slices import FilteredSliceTracker, SliceDone

    store = OutputStore(tmp_path / "out")
    tracker = FilteredSliceTracker(store, "", lambda stats: None, _KeepAll(), "k", max_ahead=3)
    units = {i: WorkUnit(i, f"u{i}", i, i + 1, 1) for i in range(10)}
    work = tracker.work(tracker.register(cut_slices(units.values(), "k", 10, 1, 1), units))
    stats = {"rows_in": 1, "rows_out": 1, "input_documents": 1}

    def back(item):
        done = SliceDone(
            item.key, item.unit_index, item.payload.start, f"s{item.unit_index}", None, stats,
            vectors=np.ones((1, 2), np.float16), decided=np.zeros(1, np.int64),
        )  # fmt: skip
        tracker.add_result(item, done)

    slow = next(work)  # unit 0: out, not back
    for _ in range(3):
        back(next(work))  # units 1-3 finish and wait behind it
    assert next(work) is None and next(work) is None  # unit 4 waits too
    back(slow)  # unit 0 is back: 0-3 are decided, their writes go out, then unit 4
    sent = [next(work) for _ in range(5)]
    assert [i.unit_index for i in sent] == [0, 1, 2, 3, 4]
    assert [type(i.payload).__name__ for i in sent] == ["FinalizeTask"] * 4 + ["SliceTask"]


class _CountingFile:
    """A binary file that counts the bytes read through it."""

    def __init__(self, path, counter: list[int]) -> None:
        self.fh = open(path, "rb")  # noqa: SIM115
        self.counter = counter

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()

    def seek(self, offset: int) -> int:
        return self.fh.seek(offset)

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.counter[0] += len(data)
        return data

    def __iter__(self):
        for line in self.fh:
            self.counter[0] += len(line)
            yield line


@pytest.mark.parametrize("layout", ["one big jsonl", "many jsonl", "many parquet"])
def test_a_unit_at_the_end_of_a_big_input_costs_what_one_at_the_start_costs(
    tmp_path, monkeypatch, layout
):
    """The plan records where each unit starts; a slice reads from there: the bytes (JSONL)
    or Parquet footers it reads do not grow with its position in the input."""
    import synth_ray.io.inputs as inputs
    from synth_ray.plan import plan_units

    folder = tmp_path / "in"
    folder.mkdir()
    rows = [{"text": f"document {i} " + "x" * 40, "id": f"r{i}"} for i in range(20_000)]
    if layout == "one big jsonl":
        write_jsonl(folder / "all.jsonl", rows)
    elif layout == "many jsonl":
        for f in range(200):
            write_jsonl(folder / f"part-{f:03d}.jsonl", rows[f * 100 : (f + 1) * 100])
    else:
        for f in range(200):
            part = pa.Table.from_pylist(rows[f * 100 : (f + 1) * 100])
            pq.write_table(part, folder / f"part-{f:03d}.parquet", row_group_size=25)
    spec = InputSpec(str(folder), id_column="id")

    class OneRowEach:
        def estimate_rows(self, doc) -> int:
            return 1

    units = plan_units(lambda: iter_documents(spec), OneRowEach(), "key", 250, "id")
    read = [0]
    footers = [0]
    real_parquet = inputs.pq.ParquetFile

    def counting_parquet(*args, **kwargs):
        footers[0] += 1
        return real_parquet(*args, **kwargs)

    monkeypatch.setattr(
        inputs, "open", lambda path, mode="r", **kw: _CountingFile(path, read), raising=False
    )
    monkeypatch.setattr(inputs.pq, "ParquetFile", counting_parquet)
    cost = {}
    for unit in (units[0], units[-2]):
        read[0] = footers[0] = 0
        docs = list(iter_document_range(spec, unit.start + 10, unit.stop, unit.seek))
        assert [d.source_id for d in docs] == [f"r{i}" for i in range(unit.start + 10, unit.stop)]
        cost[unit.index] = (read[0], footers[0])
    first, last = cost[units[0].index], cost[units[-2].index]
    assert last[0] <= 2 * first[0] + 4096 and last[1] <= first[1] + 2, cost


def test_a_long_read_is_progress_not_a_stall(tmp_path, docs_file, embedded_model, monkeypatch):
    """The progress mark a replica reports (runtime/generator_actor.py `progress`: its
    SliceWorker's `steps_done` beside the engine's tokens) moves with every row a slice
    reads, so a read from a slow filesystem is never taken for a stalled engine."""
    import threading

    import synth_ray.io.inputs as inputs

    backend = FakeBackend()
    real = inputs._rows_jsonl
    marks: list[list[int]] = []

    def slow_rows(*args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            yield from real(*args, **kwargs)  # the driver planning, not a replica
            return
        marks.append([])
        for row in real(*args, **kwargs):
            marks[-1].append(backend.worker.steps_done)  # what a probe would see now
            yield row

    monkeypatch.setattr(inputs, "_rows_jsonl", slow_rows)
    config = job_config(tmp_path, docs_file, output={"rows_per_shard": 40})
    run_job(config, show_progress=False, backend=backend)
    reads = [seen for seen in marks if len(seen) > 3]
    assert reads, "no slice read several rows"
    for seen in reads:
        assert seen == sorted(set(seen)), seen  # the mark moved at every row


def test_a_seek_into_a_rewritten_file_is_refused_not_read_mid_line(tmp_path):
    """A planned seek whose file was rewritten at the same size with other line lengths
    would start mid-line: the read stops with one line instead."""
    from synth_ray.io.inputs import InputChangedError

    path = tmp_path / "docs.jsonl"
    rows = [{"text": f"doc {i}", "id": f"id{i}"} for i in range(20)]
    write_jsonl(path, rows)
    spec = InputSpec(str(path), id_column="id")
    seek = list(iter_documents(spec))[10].seek
    content = path.read_bytes()
    shifted = content.replace(b'"doc 3"', b'"doc 3 "', 1).replace(b'"doc 15"', b'"doc15"', 1)
    assert len(shifted) == len(content)
    path.write_bytes(shifted)
    with pytest.raises(InputChangedError, match="no line starts at byte"):
        list(iter_document_range(spec, 10, 12, seek))
