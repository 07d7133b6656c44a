"""Planning from a scan of the input's parts gives the units streaming it gives, and with Ray
the parts are read by tasks: the driver parses no input row.

    python -m pytest tests/test_plan_scan.py
"""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import synth_ray.io.input_scan as input_scan
import synth_ray.io.inputs as inputs
import synth_ray.runtime.plan_tasks as plan_tasks
from synth_ray.errors import InputError
from synth_ray.io.inputs import InputChangedError, InputSpec, iter_documents, snapshot_inputs
from synth_ray.methods.rephrase import RephraseConfig, RephraseMethod
from synth_ray.plan import plan_scanned, plan_units
from synth_ray.runtime.plan_tasks import scan_input


def _method() -> RephraseMethod:
    """The real rephrase method: its estimate grows with a document's length."""
    return RephraseMethod(RephraseConfig(styles=["easy", "qa"], max_chunk_tokens=8), len, "m")


def _awkward_input(folder, rows: int = 400):
    """JSONL files with blank lines, a bare-whitespace line, broken JSON, a non-object, rows
    without an id or a text, a file without a final newline; Parquet files with several row
    groups; an empty file."""
    folder.mkdir()
    lines = []
    for i in range(rows):
        text = f"doc {i} " + "word " * (i % 23)
        if i % 37 == 5:
            lines.append("")
            lines.append("  \t ")
        if i % 53 == 7:
            lines.append("{not json")
        elif i % 61 == 8:
            lines.append("[1, 2]")
        elif i % 41 == 9:
            lines.append(json.dumps({"text": text}))  # no id: named by its row
        elif i % 43 == 10:
            lines.append(json.dumps({"id": f"a{i}"}))  # no text: an error row
        else:
            lines.append(json.dumps({"id": f"a{i}", "text": text}))
    (folder / "a.jsonl").write_text("\n".join(lines))  # no newline at the end
    (folder / "b.jsonl").write_text("")
    table = pa.Table.from_pylist([{"id": f"c{i}", "text": "plain " * (i % 11)} for i in range(150)])
    pq.write_table(table, folder / "c.parquet", row_group_size=40)
    (folder / "d.jsonl").write_text(
        "".join(json.dumps({"id": f"d{i}", "text": "x" * i}) + "\n" for i in range(90))
    )
    return folder


def _units(spec: InputSpec, rows_per_shard: int, id_column: str | None):
    scans = scan_input(spec, _method().estimate_rows, id_column is not None)
    docs = lambda: iter_documents(spec)  # noqa: E731
    return plan_scanned(scans, "key", rows_per_shard, spec.limit, id_column, docs)


@pytest.mark.parametrize("part_bytes", [97, 4096, 1 << 20])
@pytest.mark.parametrize("id_column", ["id", None])
@pytest.mark.parametrize("limit", [None, 333])
def test_a_scanned_plan_is_the_streamed_plan(tmp_path, monkeypatch, part_bytes, id_column, limit):
    """Same unit ids, bounds, estimates and seeks as streaming every document, whatever the
    JSONL files are cut into; and every unit's seek reads back its first document."""
    monkeypatch.setattr(input_scan, "JSONL_PART_BYTES", part_bytes)
    folder = _awkward_input(tmp_path / "in")
    spec = snapshot_inputs(InputSpec(str(folder), id_column=id_column, limit=limit))
    expected = plan_units(lambda: iter_documents(spec), _method(), "key", 25, id_column)
    got = _units(spec, 25, id_column)
    assert got == expected
    assert len(got) > 20
    for unit in got:
        first = next(inputs.iter_document_range(spec, unit.start, unit.stop, unit.seek))
        assert first.seek == unit.seek


def test_a_repeated_id_found_by_the_scan_is_named(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [{"id": f"r{i}", "text": "t"} for i in range(50)] + [{"id": "r7", "text": "again"}]
    (folder / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = snapshot_inputs(InputSpec(str(folder), id_column="id"))
    with pytest.raises(InputError, match="id 'r7' appears more than once"):
        _units(spec, 10, "id")


def test_counting_a_part_agrees_with_reading_it(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n \r\n{"a": 2}\r\n\x0c\n{"a": 3}\n{"a": 4}')
    rows = list(iter_documents(InputSpec(str(path), text_column="a")))
    assert input_scan.count_jsonl(str(path), 0, path.stat().st_size) == (len(rows), 7)


def test_ray_tasks_plan_a_big_input_and_the_driver_parses_no_row(tmp_path, monkeypatch, ray_local):
    """With Ray connected and an input over TASKS_FROM_BYTES, the parts are counted and
    scanned by Ray tasks: this process's row readers raise and the plan is still the
    streamed one; with a limit too (the tasks past it are cancelled)."""
    folder = _awkward_input(tmp_path / "in", rows=1500)
    spec = snapshot_inputs(InputSpec(str(folder), id_column="id"))
    expected = plan_units(lambda: iter_documents(spec), _method(), "key", 25, "id")
    monkeypatch.setattr(plan_tasks, "TASKS_FROM_BYTES", 0)
    monkeypatch.setattr(input_scan, "JSONL_PART_BYTES", 2048)  # cut here, counted in tasks

    def driver_must_not_read(*args, **kwargs):
        raise AssertionError("the driver read an input row")

    for reader in ("_rows_jsonl", "_rows_parquet", "_rows_source"):
        monkeypatch.setattr(inputs, reader, driver_must_not_read)
    assert _units(spec, 25, "id") == expected
    limited = snapshot_inputs(InputSpec(str(folder), id_column="id", limit=100))
    monkeypatch.undo()
    expected_limited = plan_units(lambda: iter_documents(limited), _method(), "key", 25, "id")
    monkeypatch.setattr(plan_tasks, "TASKS_FROM_BYTES", 0)
    assert _units(limited, 25, "id") == expected_limited
    real_parts = plan_tasks.input_parts

    def grown_after_the_check(*args, **kwargs):  # as if d.jsonl grew once the driver looked
        return [
            dataclasses.replace(p, size=p.size - 1) if p.name == "d.jsonl" else p
            for p in real_parts(*args, **kwargs)
        ]

    monkeypatch.setattr(plan_tasks, "input_parts", grown_after_the_check)
    with pytest.raises(InputChangedError) as failed:  # raised in a task: its one line
        _units(spec, 25, "id")
    message = str(failed.value)
    assert message.startswith("input.path ") and "\n" not in message  # not Ray's remote trace
    assert "d.jsonl changed after the job planned" in message


def test_a_part_that_cannot_be_read_is_one_line(tmp_path):
    """A planning task on a node that cannot see the input (not on a shared filesystem)."""
    from synth_ray.io.input_scan import InputPart, scan_part

    part = InputPart(0, str(tmp_path / "gone.jsonl"), "gone.jsonl", 10)
    with pytest.raises(InputError, match="gone.jsonl cannot be read on node") as failed:
        scan_part(InputSpec(str(tmp_path)), part, len, False)
    assert "\n" not in str(failed.value)
    with pytest.raises(InputError, match="cannot be read on node"):
        input_scan.count_jsonl(str(tmp_path / "gone.jsonl"), 0, 10)


def test_id_hashes_of_a_huge_part_still_spill_in_bounded_memory(monkeypatch):
    import numpy as np

    import synth_ray.plan as plan

    monkeypatch.setattr(plan, "SPILL_AT", 1000)
    hashes = plan.IdHashes()
    peak = [0]
    real_spill = plan.IdHashes._spill

    def spill(self):
        peak[0] = max(peak[0], len(self.buffer))
        real_spill(self)

    monkeypatch.setattr(plan.IdHashes, "_spill", spill)
    values = np.arange(10_500, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    hashes.extend(np.concatenate([values, values[:3]]))
    assert peak[0] <= 1000 and hashes.repeated() == set(values[:3].tolist())
