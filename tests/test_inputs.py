"""Input discovery and streaming: Parquet, JSONL, folders, globs, limits, bad rows and files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl

from synth_ray.errors import InputError
from synth_ray.io.inputs import InputSpec, iter_document_range, iter_documents, validate_inputs


def test_folder_of_parquet_and_jsonl_in_sorted_order_with_limit(tmp_path):
    pq.write_table(pa.table({"text": ["a", "b"], "id": ["p1", "p2"]}), tmp_path / "b.parquet")
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "id": "j1"}, {"text": "y", "id": "j2"}])
    docs = list(iter_documents(InputSpec(str(tmp_path), id_column="id")))
    assert [d.source_id for d in docs] == ["j1", "j2", "p1", "p2"]
    assert [d.ordinal for d in docs] == [0, 1, 2, 3]
    limited = list(iter_documents(InputSpec(str(tmp_path), id_column="id", limit=3)))
    assert [d.text for d in limited] == ["x", "y", "a"]


def test_derived_ids_are_file_and_row(tmp_path):
    write_jsonl(tmp_path / "sub" / "f.jsonl", [{"text": "x"}, {"text": "y"}])
    docs = list(iter_documents(InputSpec(str(tmp_path / "**" / "*.jsonl"))))
    assert [d.source_id for d in docs] == ["f.jsonl:0", "f.jsonl:1"]


def test_folder_of_source_files_is_one_row_per_file_with_relative_ids(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "util.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "main.py").write_text("print('hi')\n")
    (tmp_path / "lib.rs").write_text("fn main() {}\n")
    (tmp_path / "notes.txt").write_text("not source")  # not a source suffix: skipped
    (tmp_path / ".hidden.py").write_text("x = 1\n")  # hidden: skipped
    (tmp_path / "blob.c").write_bytes(b"\xff\xfe\x00\x01binary")
    (tmp_path / "empty.go").write_text("  \n")
    spec = InputSpec(str(tmp_path))
    assert [f.name for f in validate_inputs(spec)] == [
        "blob.c", "empty.go", "lib.rs", "main.py", "util.py"
    ]  # fmt: skip
    docs = list(iter_documents(spec))
    assert [d.source_id for d in docs] == ["blob.c", "empty.go", "lib.rs", "main.py", "pkg/util.py"]
    assert [d.ordinal for d in docs] == [0, 1, 2, 3, 4]
    assert docs[4].text == "def add(a, b):\n    return a + b\n" and docs[4].error is None
    assert docs[0].text is None and docs[0].error.startswith("not UTF-8 text")
    assert docs[1].error == "empty file"
    # a slice of the rows, as a generator reads its unit, and a single file
    assert [d.source_id for d in iter_document_range(spec, 3, 5)] == ["main.py", "pkg/util.py"]
    one = list(iter_documents(InputSpec(str(tmp_path / "pkg" / "util.py"))))
    assert [(d.source_id, d.error) for d in one] == [("util.py", None)]
    # a project's package.json / tsconfig.json beside the code is not data
    (tmp_path / "package.json").write_text('{"name": "x"}')
    assert "package.json" not in [d.source_id for d in iter_documents(spec)]
    assert len(list(iter_documents(spec))) == 5
    (tmp_path / "package.json").unlink()
    # a folder holding any data file is read as data files only
    write_jsonl(tmp_path / "rows.jsonl", [{"text": "x"}])
    assert [d.source_id for d in iter_documents(spec)] == ["rows.jsonl:0"]


def test_source_files_have_no_columns(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    with pytest.raises(InputError, match="input.id_column 'id': source file .* has no columns"):
        validate_inputs(InputSpec(str(tmp_path), id_column="id"))
    glob_docs = list(iter_documents(InputSpec(str(tmp_path / "*.py"))))
    assert [d.source_id for d in glob_docs] == ["a.py"]


def test_bad_rows_become_error_documents(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"text": "ok"}\nnot json\n{"text": 5}\n{"text": null}\n{"other": 1}\n[1]\n')
    docs = list(iter_documents(InputSpec(str(path))))
    assert [d.error for d in docs] == [
        None,
        docs[1].error,
        "text is int, expected a string",
        "text is null",
        "line 5 has no field 'text'",
        "line 6 is not a JSON object",
    ]
    assert docs[1].error.startswith("line 2 is not JSON")


@pytest.mark.parametrize(
    ("setup", "spec_kwargs", "message"),
    [
        (lambda p: None, {}, "no such file or folder"),
        (
            lambda p: (p / "d").mkdir(),
            {"path": "d"},
            "folder holds no .parquet, .jsonl or source files",
        ),
        (
            lambda p: (p / "f.csv").write_text("a"),
            {"path": "f.csv"},
            "expected a .parquet or .jsonl file",
        ),
        (
            lambda p: write_jsonl(p / "f.jsonl", [{"body": "x"}]),
            {"path": "f.jsonl"},
            "input.text_column 'text': no such field",
        ),
        (
            lambda p: write_jsonl(p / "f.jsonl", [{"text": "x"}]),
            {"path": "f.jsonl", "id_column": "uid"},
            "input.id_column 'uid'",
        ),
        (
            lambda p: pq.write_table(pa.table({"body": ["x"]}), p / "f.parquet"),
            {"path": "f.parquet"},
            "no such column",
        ),
        (
            lambda p: pq.write_table(pa.table({"text": [1]}), p / "f.parquet"),
            {"path": "f.parquet"},
            "expected a string column",
        ),
        (
            lambda p: (p / "f.parquet").write_bytes(b"garbage"),
            {"path": "f.parquet"},
            "unreadable Parquet",
        ),
        (
            lambda p: (p / "f.jsonl").write_text("{oops\n"),
            {"path": "f.jsonl"},
            "first line is not JSON",
        ),
    ],
)
def test_bad_inputs_raise_one_line(tmp_path, setup, spec_kwargs, message):
    setup(tmp_path)
    kwargs = {"path": "missing.jsonl", **spec_kwargs}
    kwargs["path"] = str(tmp_path / kwargs["path"])
    with pytest.raises(InputError) as err:
        validate_inputs(InputSpec(**kwargs))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_read_checks_the_input_files_against_the_planned_snapshot(tmp_path):
    """An appended JSONL, a file added to the folder, a file removed: the next read (planning
    or a generator's slice) fails with one line naming the file, never a shifted row."""
    import os

    from synth_ray.io.inputs import InputChangedError, snapshot_inputs

    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", [{"text": f"a{i}"} for i in range(4)])
    write_jsonl(folder / "b.jsonl", [{"text": f"b{i}"} for i in range(4)])
    spec = snapshot_inputs(InputSpec(str(folder)))
    assert [d.text for d in iter_document_range(spec, 2, 6)] == ["a2", "a3", "b0", "b1"]
    os.utime(folder / "a.jsonl", (1, 1))  # unpacked again on another node: same bytes
    assert [d.text for d in iter_document_range(spec, 2, 4)] == ["a2", "a3"]

    with open(folder / "a.jsonl", "a") as fh:  # still being written
        fh.write('{"text": "a4"}\n')
    with pytest.raises(InputChangedError, match=r"a\.jsonl changed after the job planned"):
        list(iter_document_range(spec, 4, 6))
    spec = snapshot_inputs(InputSpec(str(folder)))
    write_jsonl(folder / "0-new.jsonl", [{"text": "new"}])  # sorts first: shifts every row
    with pytest.raises(InputChangedError, match=r"0-new\.jsonl appeared after the job planned"):
        list(iter_document_range(spec, 0, 2))
    os.remove(folder / "0-new.jsonl")
    os.remove(folder / "b.jsonl")
    with pytest.raises(InputChangedError, match=r"b\.jsonl is gone since the job planned"):
        list(iter_document_range(spec, 0, 2))
    message = ""
    try:
        list(iter_document_range(spec, 0, 2))
    except InputChangedError as err:
        message = str(err)
    assert "\n" not in message and message.startswith(f"input.path {folder}:")
