"""Label Studio's formats for co-annotation: the `label` method's uncertain rows as tasks to
import (the model's votes as predictions), and the labels people gave read back from its JSON
export.

    python -c "from synth_ray.methods.label_studio import labeling_config; print(labeling_config(['text'], {'pos': '', 'neg': ''}, 'Label it.'))"

Formats, as Label Studio documents them (docs/source/guide/tasks.md, predictions.md,
export.md, includes/task_format.md): a task is `{"data": {...}, "predictions": [{"model_version",
"score", "result": [{"from_name", "to_name", "type": "choices", "value": {"choices": [...]}}]}]}`;
its JSON export is a list of tasks, each with `annotations` of the same `result` form plus
`completed_by` (a user id, or in some versions an object with `id` and `email`),
`was_cancelled` and `updated_at`. The labeling interface is a `<Choices name="label">` on the
row's `<Text>` fields. Each task carries the row's id in `data.row_id`, which is how a label
finds its row again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

CHOICES_NAME = "label"  # the <Choices> tag's name: `from_name` in every result
ROW_ID_KEY = "row_id"  # the task data key holding the output row's id
HUMAN_PREFIX = "human:"  # `labelled_by` of a row a person labelled: human:<who>
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ExportError(ValueError):
    """A Label Studio export that cannot be merged; the message is one line naming the task."""


@dataclass(frozen=True)
class HumanLabel:
    label: str
    annotator: str  # the annotator as the export names them (email, or Label Studio user id)


def data_keys(columns: list[str]) -> list[str]:
    """The task data key of each text column: its name where Label Studio can reference it
    as `$name` (an identifier, not `row_id`), else `text_<i>`, with `_` added until it is
    not another column's key (columns `my col` and `text_0` stay two fields)."""
    named = {c for c in columns if _IDENTIFIER.fullmatch(c) and c != ROW_ID_KEY}
    keys: list[str] = []
    for i, column in enumerate(columns):
        if column in named:
            keys.append(column)
            continue
        key = f"text_{i}"
        while key in named or key in keys or key == ROW_ID_KEY:
            key += "_"
        keys.append(key)
    return keys


def labeling_config(columns: list[str], labels: dict[str, str], instruction: str) -> str:
    """The project's labeling interface (XML): the instruction, each label's description,
    the row's text fields and a single choice among the labels."""
    lines = ["<View>", f"  <Header value={quoteattr(instruction.strip())}/>"]
    for label, description in labels.items():
        if description:
            lines.append(f'  <Header value={quoteattr(f"{label}: {description}")} size="6"/>')
    keys = data_keys(columns)
    for column, key in zip(columns, keys, strict=True):
        if len(columns) > 1:
            lines.append(f'  <Header value={quoteattr(column)} size="6"/>')
        lines.append(f"  <Text name={quoteattr(key)} value={quoteattr('$' + key)}/>")
    lines.append(
        f'  <Choices name="{CHOICES_NAME}" toName={quoteattr(keys[0])} choice="single" '
        'showInline="true" required="true">'
    )
    lines += [f"    <Choice value={quoteattr(label)}/>" for label in labels]
    lines += ["  </Choices>", "</View>"]
    return "\n".join(lines) + "\n"


def task(row: dict[str, Any], columns: list[str], labels: list[str], model: str) -> dict[str, Any]:
    """One uncertain row as a task: its text fields and id as data, and one prediction per
    label the model voted for (most votes first), scored by that label's share of the votes."""
    keys = data_keys(columns)
    data = {key: row.get(column) or "" for column, key in zip(columns, keys, strict=True)}
    votes = [v for v in row.get("votes") or [] if v is not None]
    total = len(row.get("votes") or [])
    counts = {label: votes.count(label) for label in labels if label in votes}
    ranked = sorted(counts, key=lambda label: (-counts[label], labels.index(label)))
    predictions = [
        {
            "model_version": model,
            "score": round(counts[label] / total, 4),
            "result": [
                {
                    "from_name": CHOICES_NAME,
                    "to_name": keys[0],
                    "type": "choices",
                    "value": {"choices": [label]},
                }
            ],
        }
        for label in ranked
    ]
    return {"data": {**data, ROW_ID_KEY: row["id"]}, "predictions": predictions}


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        who = completed_by.get("email") or completed_by.get("id")
        return str(who) if who not in (None, "") else "unknown"
    if completed_by is None or completed_by == "":
        return "unknown"
    return f"label-studio user {completed_by}"


def _chosen(annotation: dict[str, Any], where: str) -> list[str] | None:
    """The labels an annotation chose in the `label` choices (None: it chose none there)."""
    result = annotation.get("result")
    if not isinstance(result, list):
        raise ExportError(f"{where}: an annotation's result is not a list")
    chosen = None
    for item in result:
        if not isinstance(item, dict) or item.get("from_name") != CHOICES_NAME:
            continue
        choices = (item.get("value") or {}).get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise ExportError(f"{where}: its `{CHOICES_NAME}` result has no list of choices")
        chosen = (chosen or []) + choices
    return chosen


def read_export(tasks: Any, rows: set[str], labels: list[str]) -> dict[str, HumanLabel]:
    """Row id -> the label a person gave it, from Label Studio's JSON export (a list of
    tasks). Of a task's annotations the latest not cancelled (by `updated_at`, else
    `created_at`, else its place in the list) that chose a label counts; a task nobody
    labelled is left out. ExportError (one line, naming the task) for anything that is no
    such export, a row id not in `rows`, a row in two tasks, a label not in `labels`, or an
    annotation choosing more than one."""
    if not isinstance(tasks, list):
        raise ExportError(
            "not a Label Studio JSON export (expected a list of tasks; export the project as JSON)"
        )
    out: dict[str, HumanLabel] = {}
    seen: set[str] = set()
    for index, item in enumerate(tasks):
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            raise ExportError(f"task {index + 1}: not a Label Studio task (no `data` object)")
        where = f"task {item.get('id', index + 1)}"
        rid = item["data"].get(ROW_ID_KEY)
        if not isinstance(rid, str):
            raise ExportError(
                f"{where}: no data.{ROW_ID_KEY} (not a task `synth-ray annotations export` wrote)"
            )
        where = f"{where} (row {rid})"
        if rid not in rows:
            raise ExportError(f"{where}: not an uncertain row of this output")
        if rid in seen:
            raise ExportError(f"{where}: the row is in two tasks")
        seen.add(rid)
        annotations = item.get("annotations") or []
        if not isinstance(annotations, list):
            raise ExportError(f"{where}: `annotations` is not a list")
        latest: tuple[str, int, str, str] | None = None
        for order, annotation in enumerate(annotations):
            if not isinstance(annotation, dict):
                raise ExportError(f"{where}: an annotation is not an object")
            if annotation.get("was_cancelled"):
                continue
            chosen = _chosen(annotation, where)
            if not chosen:
                continue
            if len(chosen) > 1:
                raise ExportError(f"{where}: an annotation chose {len(chosen)} labels, not one")
            if chosen[0] not in labels:
                raise ExportError(f"{where}: label {chosen[0]!r} is not one of {', '.join(labels)}")
            when = str(annotation.get("updated_at") or annotation.get("created_at") or "")
            key = (when, order, chosen[0], _annotator(annotation.get("completed_by")))
            latest = key if latest is None or key[:2] > latest[:2] else latest
        if latest is not None:
            out[rid] = HumanLabel(latest[2], latest[3])
    return out
