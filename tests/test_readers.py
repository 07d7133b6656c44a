"""A finished output is read, unchanged, by the tools users bring: pyarrow, Hugging Face
`datasets` (by folder and through the dataset card), DuckDB, Polars and Ray Data; including a
run with an errors shard and a unit whose every row failed (an empty data shard). Also the
dataset card's contents and `synth-ray inspect`.

    pytest tests/test_readers.py

The job runs on the simulated engine: what is under test is the files, and they are written by
the same shard writer and commit path as on the real engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import job_config, make_docs, write_jsonl
from fake_backend import FakeBackend
from typer.testing import CliRunner

from synth_ray.cli import app
from synth_ray.dataset.card import card_text, write_card
from synth_ray.io.output_store import OutputStore
from synth_ray.runtime.job import run_job

EXPECTED_IDS = {f"p.jsonl:{i}" for i in (0, 1, 2, 3, 8, 9, 10)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, embedded_model) -> Path:
    """Three units of 4 prompts: the second has only null prompts (all errored, an empty data
    shard and an errors shard), the third is short."""
    tmp = tmp_path_factory.mktemp("readers")
    prompts = [f"question {i}" for i in range(4)] + [None] * 4 + [f"q {i}" for i in range(3)]
    path = write_jsonl(tmp / "p.jsonl", [{"prompt": p} for p in prompts])
    config = job_config(
        tmp,
        path,
        method="generate",
        input={"path": str(path), "text_column": "prompt", "id_column": None},
        output={"rows_per_shard": 4},
    )
    run_job(config, show_progress=False, backend=FakeBackend())
    out = tmp / "out"
    write_card(out)
    return out


def test_the_output_has_an_empty_unit_and_an_errors_shard(finished):
    records = sorted(OutputStore(finished).committed().values(), key=lambda r: r.unit_index)
    assert [r.rows_out for r in records] == [4, 0, 3]
    assert [bool(r.error_shard) for r in records] == [False, True, False]
    # no row group at all: `datasets` fails on a row group of 0 rows
    empty = pq.ParquetFile(finished / records[1].data_shard)
    assert empty.metadata.num_rows == 0 and empty.metadata.num_row_groups == 0
    assert empty.schema_arrow == pq.read_schema(finished / records[0].data_shard)


def test_pyarrow_reads_the_data_folder(finished):
    table = pq.read_table(finished / "data")
    assert set(table.column("source_id").to_pylist()) == EXPECTED_IDS


def test_hugging_face_datasets_reads_the_folder_and_the_card(finished):
    from datasets import load_dataset

    by_folder = load_dataset("parquet", data_dir=str(finished / "data"), split="train")
    assert set(by_folder["source_id"]) == EXPECTED_IDS
    # the card's configs: the default reads data/ only, `errors` the error rows
    by_card = load_dataset(str(finished), split="train")
    assert set(by_card["source_id"]) == EXPECTED_IDS
    assert str(by_card.features["n_output_tokens"].dtype) == "int32"
    errors = load_dataset(str(finished), "errors", split="train")
    assert set(errors["stage"]) == {"input"} and len(errors) == 4


def test_duckdb_and_polars_read_the_data_folder(finished):
    import duckdb
    import polars as pl

    glob = str(finished / "data" / "*.parquet")
    ids = duckdb.sql(f"SELECT source_id FROM read_parquet('{glob}')").fetchall()
    assert {i for (i,) in ids} == EXPECTED_IDS
    assert set(pl.read_parquet(glob)["source_id"].to_list()) == EXPECTED_IDS


def test_ray_data_reads_the_data_folder(finished):
    """In a process of its own, on a Ray of its own: the session may hold a Ray whose CPUs
    an engine has taken."""
    code = (
        "import sys, json, ray; ray.init(address='local', num_cpus=1, include_dashboard=False,"
        " log_to_driver=False); ds = ray.data.read_parquet(sys.argv[1]);"
        " print('IDS', json.dumps(sorted(r['source_id'] for r in ds.take_all())))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(finished / "data")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Ray's own lines (a raylet warning on a loaded machine) may share the stdout
    said = [line for line in done.stdout.splitlines() if line.startswith("IDS ")]
    assert said, done.stdout[-2000:]
    assert set(json.loads(said[-1][len("IDS ") :])) == EXPECTED_IDS


def test_the_card_describes_the_job(finished):
    text = (finished / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    schema = pq.read_schema(next((finished / "data").glob("part-000000-*.parquet")))
    assert [f["name"] for f in header["dataset_info"]["features"]] == schema.names
    assert header["size_categories"] == ["n<1K"]
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in header["configs"]}
    assert configs == {"default": "data/*.parquet", "errors": "errors/*.parquet"}
    assert "license" not in header  # the user's to choose
    for fact in ("`generate` method", "SmolLM2-135M-Instruct", "rows kept: 7 of 11", "input: 4"):
        assert fact in text, fact
    assert "@software{synth_ray" in text


def test_a_card_of_a_killed_run_names_only_committed_shards(finished, tmp_path):
    """A killed run can leave a shard renamed into place but never committed: readers going
    through the card must not see its rows."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished, out)
    committed = [f"data/{p.name}" for p in sorted((out / "data").iterdir())]
    shutil.copy(out / committed[2], out / "data" / "part-000003-0123456789ab-abcdef.parquet")
    header = yaml.safe_load(card_text(OutputStore(out)).split("---")[1])
    files = header["configs"][0]["data_files"][0]["path"]
    assert files == committed and len(files) == 3
    from datasets import load_dataset

    (out / "README.md").write_text(card_text(OutputStore(out)))
    assert set(load_dataset(str(out), split="train")["source_id"]) == EXPECTED_IDS


def test_the_card_cites_the_papers_of_what_ran(tmp_path, embedded_model):
    docs = write_jsonl(tmp_path / "docs.jsonl", make_docs(3))
    config = job_config(
        tmp_path,
        docs,
        rephrase={"styles": ["easy", "faq"], "max_chunk_tokens": 64},
        filters={"diversity": {"enabled": True, "threshold": 0.9}},
    )
    run_job(config, show_progress=False, backend=FakeBackend())
    text = card_text(OutputStore(tmp_path / "out"))
    assert "arxiv.org/abs/2401.16380" in text and "@misc{maini2024wrap" in text  # WRAP: easy
    assert "@misc{finephrase2025" in text  # FinePhrase: faq
    assert "cosine similarity >= 0.9" in text
    configs = yaml.safe_load(text.split("---")[1])["configs"]
    assert [c["config_name"] for c in configs] == ["default"]  # no error rows, no errors config


def test_inspect_prints_the_rows_that_meet_a_condition(finished):
    runner = CliRunner()
    picked = runner.invoke(
        app, ["inspect", str(finished), "--where", "prompt LIKE 'q %'", "--n", "2", "--json"]
    )
    assert picked.exit_code == 0, picked.output
    rows = [json.loads(line) for line in picked.output.splitlines()]
    assert [r["prompt"] for r in rows] == ["q 0", "q 1"]
    errors = runner.invoke(app, ["inspect", str(finished), "--errors", "--n", "10", "--json"])
    assert len(errors.output.splitlines()) == 4
    shown = runner.invoke(app, ["inspect", str(finished), "--n", "1", "--width", "20"])
    assert "question 0" in shown.output and "1 rows" in shown.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "nope > 3"], "nope"),
        (["--where", "prompt LIKE"], "prompt LIKE"),
    ],
)
def test_inspect_refuses_a_bad_condition_in_one_line(finished, args, message):
    done = CliRunner().invoke(app, ["inspect", str(finished), *args])
    assert done.exit_code == 2
    assert message in done.output and "columns: id, source_id" in done.output
    assert "Traceback" not in done.output
