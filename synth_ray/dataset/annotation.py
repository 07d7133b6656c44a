"""Co-annotation of a `label` job's output: its uncertain rows out to Label Studio, the labels
people gave back into one final dataset.

    synth-ray annotations export out/label --to out/label-tasks
    synth-ray annotations merge out/label label-studio-export.json --to out/label-final

`export` writes `tasks.json` (Label Studio tasks, the model's votes as predictions: import it
into a project) and `labeling_config.xml` (that project's labeling interface) from the
committed rows of the output's `uncertain` split. `merge` reads the project's JSON export and
writes `data.parquet`: every confident row as the model labelled it, and every uncertain row a
person labelled with that label; `labelled_by` is the model's name or `human:<annotator>`,
`label_source` is `model` or `human`, `model_label` what the model's votes said. Uncertain rows
nobody labelled yet are left out (`keep_unlabelled`: kept with the model's label). Both write
each file atomically (readers see the old file or the new one) and give the same bytes for the
same output and export, so rerunning either is harmless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from synth_ray.config import validate_config
from synth_ray.engine.models import model_display_name
from synth_ray.errors import UserError
from synth_ray.io.filesystem import open_location
from synth_ray.io.output_store import OutputStore
from synth_ray.methods.label import UNCERTAIN, LabelConfig, label_columns
from synth_ray.methods.label_studio import (
    HUMAN_PREFIX,
    ExportError,
    labeling_config,
    read_export,
    task,
)

TASKS_FILE = "tasks.json"
LABELING_CONFIG_FILE = "labeling_config.xml"
MERGED_FILE = "data.parquet"
MERGED_FIELDS = [pa.field("label_source", pa.string()), pa.field("model_label", pa.string())]


class AnnotationError(UserError):
    """An output or an export that cannot be exported or merged; one line."""


@dataclass(frozen=True)
class LabelJob:
    store: OutputStore
    section: LabelConfig
    columns: list[str]
    model: str


def _label_job(output: str) -> LabelJob:
    store = OutputStore(output)
    store.location.kind()  # an unreachable store: one line, not a traceback
    job = store.read_job()
    if job is None:
        raise AnnotationError(f"output folder {output}: no synth-ray job here (_job.json missing)")
    method = job["config"].get("method")
    if method != "label":
        raise AnnotationError(
            f"output folder {output}: holds a {method} job's output; co-annotation reads the "
            "`uncertain` split of a label job"
        )
    config = validate_config(job["config"])
    return LabelJob(
        store,
        config.section_as(LabelConfig),
        label_columns(config),
        model_display_name(config.engine.model),
    )


def _tables(store: OutputStore, split: str | None) -> list[pa.Table]:
    """The committed rows of `split` (None: data/), in unit order, one table per shard."""
    if split is None:
        return list(store.data_tables())
    return list(store.data_tables(split=split))


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    return pa.concat_tables(tables) if tables else None


@dataclass(frozen=True)
class ExportSummary:
    tasks: int
    folder: str


def export_uncertain(output: str, to: str | Path) -> ExportSummary:
    """Write `tasks.json` and `labeling_config.xml` for the output's uncertain rows into
    the folder `to`."""
    job = _label_job(output)
    labels = list(job.section.labels)
    rows = [r for t in _tables(job.store, UNCERTAIN) for r in t.to_pylist()]
    tasks = [task(row, job.columns, labels, job.model) for row in rows]
    folder = open_location(to, "--to")
    folder.make_dir()
    body = json.dumps(tasks, ensure_ascii=False, indent=1).encode()
    folder.write_bytes_atomic(TASKS_FILE, body)
    xml = labeling_config(job.columns, job.section.labels, job.section.instruction)
    folder.write_bytes_atomic(LABELING_CONFIG_FILE, xml.encode())
    return ExportSummary(len(tasks), folder.uri)


@dataclass(frozen=True)
class MergeSummary:
    rows: int
    by_model: int
    by_people: int
    unlabelled: int  # uncertain rows nobody labelled (left out, or kept with the model's)
    file: str


def _read_export(path: str | Path) -> Any:
    file = Path(path).expanduser()
    if not file.is_file():
        raise AnnotationError(f"export {path}: no such file")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        reason = getattr(err, "msg", None) or "not UTF-8"
        raise AnnotationError(f"export {path}: not JSON ({reason})") from None


def merge_labels(
    output: str, export: str | Path, to: str | Path, keep_unlabelled: bool = False
) -> MergeSummary:
    """Write `data.parquet` into the folder `to`: the confident rows, then the uncertain rows
    with the label people gave them in the Label Studio JSON `export` (AnnotationError, one
    line naming the task, for an export that is no such file or names an unknown row or a
    label outside the set)."""
    job = _label_job(output)
    labels = list(job.section.labels)
    confident = _concat(_tables(job.store, None))
    uncertain = _concat(_tables(job.store, UNCERTAIN))
    schema = confident if confident is not None else uncertain
    if schema is None:
        raise AnnotationError(f"output folder {output}: no committed rows yet")
    uncertain_rows = uncertain.to_pylist() if uncertain is not None else []
    try:
        human = read_export(_read_export(export), {r["id"] for r in uncertain_rows}, labels)
    except ExportError as err:
        raise AnnotationError(f"export {export}: {err}") from None
    rows = []
    for row in confident.to_pylist() if confident is not None else []:
        rows.append({**row, "label_source": "model", "model_label": row["label"]})
    unlabelled = 0
    for row in uncertain_rows:
        given = human.get(row["id"])
        if given is not None:
            rows.append(
                {
                    **row,
                    "label": given.label,
                    "labelled_by": f"{HUMAN_PREFIX}{given.annotator}",
                    "label_source": "human",
                    "model_label": row["label"],
                }
            )
            continue
        unlabelled += 1
        if keep_unlabelled:
            rows.append({**row, "label_source": "model", "model_label": row["label"]})
    fields = [*schema.schema, *MERGED_FIELDS]
    table = pa.Table.from_pylist(rows, schema=pa.schema(fields))
    folder = open_location(to, "--to")
    folder.make_dir()
    folder.write_table_atomic(MERGED_FILE, table)
    by_people = sum(r["label_source"] == "human" for r in rows)
    return MergeSummary(
        len(rows), len(rows) - by_people, by_people, unlabelled, f"{folder.uri}/{MERGED_FILE}"
    )
