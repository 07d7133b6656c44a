"""Method `label`: an LLM labels each input row with one label of a set, by k votes, and the
rows it is unsure of go to people (co-annotation).

    synth-ray run configs/label.yaml

Each row is asked once with `n = label.votes` samples (one engine request, one prefill) at the
job's temperature, decoded under a choice constraint (structured outputs): every vote is
exactly one of `label.labels`. The row's `label` is the majority, `vote_share` the majority's
votes over all k, `votes` the k votes in sample order, and `entropy` the Shannon entropy (bits)
of the votes, CoAnnotating's uncertainty measure. A vote that is no label (cut by `max_tokens`,
or from an engine without structured outputs) is a null in `votes`: it counts in k and in the
entropy (as CoAnnotating counts an unparsable answer as an outcome of its own), never for a
label. Ties go to the label listed first in `label.labels`; a tied row's share is at most 1/2.

Papers: Gilardi et al. 2023, "ChatGPT outperforms crowd-workers for text-annotation tasks"
(zero-shot LLM labels against trained annotators, repeated runs as intercoder agreement), and
Li et al. 2023, "CoAnnotating: Uncertainty-Guided Work Allocation between Human and Large
Language Models for Data Annotation" (EMNLP; SALT-NLP/CoAnnotating): the model labels what it
agrees with itself on, and the rest is allocated to human annotators. Here a row whose
`vote_share` is under `label.min_agreement` is kept into the output's `uncertain` split
(`uncertain/`, its own dataset-card config) instead of `data/`. `synth-ray annotations export`
turns that split into Label Studio tasks (the votes as predictions) and `synth-ray annotations
merge` reads the annotators' labels back into one Parquet file whose `labelled_by` says who
labelled each row (synth_ray/dataset/annotation.py, methods/label_studio.py).

With `label.gold_column` (a column of reference labels, never shown to the model), `stats.json`'s
`label` section reports the accuracy of the labels against it, over all rows, the confident
ones and the uncertain ones. Row id = hash(source_id, "label").
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from synth_ray.config import JobConfig
from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.io.inputs import Document, InputSpec, absolute_path
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Kept, Method, Outcome, row_id
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext, run_single_stage
from synth_ray.sections import INLINED, Section

UNCERTAIN = "uncertain"  # the split the rows under `min_agreement` are kept into
# the output's own columns: an input column named like one would be overwritten
LABEL_COLUMNS = (
    "id",
    "source_id",
    "label",
    "vote_share",
    "votes",
    "entropy",
    "labelled_by",
    "n_input_tokens",
    "n_output_tokens",
    "finish_reason",
)
SINGLE_TEXT_KEY = "text"  # a few-shot example's text when the job labels one column


class LabelConfig(Section):
    labels: dict[str, str] = Field(
        description="The label set: a list of labels, or label -> description (shown to the "
        "model and in the annotation tool). Every vote is exactly one of them."
    )
    instruction: str = Field(
        description="What to label, e.g. 'Label the sentiment of the following review.' The "
        "prompt adds the labels, their descriptions, the examples and the row's text."
    )
    text_columns: list[str] | None = Field(
        None,
        description="Input columns shown to the model, each as `column: value` (e.g. a pair of "
        "sentences); default: input.text_column, shown as `Text: value`.",
    )
    few_shot: list[dict[str, str]] | None = Field(
        None,
        description="Examples shown before the row: a list of {<text column> (or `text` for "
        "one column): ..., label: ...}, or the path of a JSONL file of them.",
        json_schema_extra=INLINED,
    )
    votes: int = Field(
        5,
        ge=1,
        le=64,
        description="k: samples per row, in one engine request (n = k) at the job's "
        "temperature; the majority is the label.",
    )
    min_agreement: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Rows whose majority has a smaller share of the k votes are kept into the "
        "`uncertain` split, for people to label (CoAnnotating); 1.0: every row without a "
        "unanimous vote.",
    )
    gold_column: str | None = Field(
        None,
        description="Input column of reference labels: copied to the rows (never shown to the "
        "model), and stats.json's `label` section reports the accuracy against it.",
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _label_list(cls, value: Any) -> Any:
        """A list of labels is a set without descriptions; a label must be a non-empty
        string with no surrounding space (it is what the engine decodes, character for
        character) and no line break."""
        if isinstance(value, list):
            if len({str(v) for v in value}) != len(value):
                raise ValueError("expected distinct labels")
            value = {v: "" for v in value}
        if not isinstance(value, dict):
            raise ValueError("a list of labels, or a mapping label -> description")
        out: dict[str, str] = {}
        for label, description in value.items():
            if not isinstance(label, str) or not label or label != label.strip():
                raise ValueError(f"label {label!r}: a non-empty string without surrounding space")
            if "\n" in label:
                raise ValueError(f"label {label!r}: no line breaks")
            out[label] = "" if description is None else str(description).strip()
        return out

    @field_validator("few_shot", mode="before")
    @classmethod
    def _load_few_shot(cls, value: Any) -> Any:
        """A path is read here, so the examples themselves (not the path) are in the
        fingerprint and travel with a submitted job."""
        if value is None or isinstance(value, list):
            return value
        if not isinstance(value, str):
            raise ValueError("a list of examples, or the path of a JSONL file of them")
        return read_examples(value)

    @model_validator(mode="after")
    def _consistent(self) -> LabelConfig:
        if len(self.labels) < 2:
            raise ValueError("labels: at least two labels")
        if not self.instruction.strip():
            raise ValueError("instruction: empty")
        if self.text_columns is not None:
            if not self.text_columns or len(set(self.text_columns)) != len(self.text_columns):
                raise ValueError("text_columns: a non-empty list of distinct columns")
        for i, example in enumerate(self.few_shot or []):
            label = example.get("label")
            if label not in self.labels:
                raise ValueError(
                    f"few_shot: example {i + 1}'s label {label!r} is not one of "
                    f"{', '.join(self.labels)}"
                )
        return self

    def decisive(self) -> dict[str, Any]:
        """The one rule, plus the labels' order: the fingerprint's JSON sorts mapping keys,
        but the order decides the prompt and which label a tie goes to."""
        return {**super().decisive(), "label_order": list(self.labels)}

    def columns(self, text_column: str) -> list[str]:
        """The input columns shown to the model, in order (the first is read as the row's
        text)."""
        return list(self.text_columns) if self.text_columns else [text_column]

    def check_in_job(self, job: Any) -> None:
        columns = self.columns(job.input.text_column if job.input else SINGLE_TEXT_KEY)
        taken = sorted({*columns, self.gold_column} & set(LABEL_COLUMNS))
        if taken:
            raise ValueError(
                f"label.text_columns: input column {taken[0]!r} clashes with the output's own "
                "column; rename it in the input"
            )
        if self.gold_column is not None and self.gold_column in columns:
            raise ValueError(f"label.gold_column: {self.gold_column!r} is shown to the model")
        keys = set(columns) if len(columns) > 1 else {columns[0], SINGLE_TEXT_KEY}
        for i, example in enumerate(self.few_shot or []):
            shown = set(example) - {"label"}
            one_column_missing = len(columns) == 1 and len(shown & keys) != 1
            if one_column_missing or len(columns) > 1 and shown != keys:
                want = ", ".join(columns) if len(columns) > 1 else f"{columns[0]} or text"
                raise ValueError(
                    f"label.few_shot: example {i + 1} needs {want} and label (has "
                    f"{', '.join(sorted(example))})"
                )
        if self.votes > 1 and job.sampling.temperature == 0:
            raise ValueError(
                f"label.votes: {self.votes} votes at sampling.temperature 0 are one answer "
                "repeated; sample (CoAnnotating's ChatGPT answered at 1.0) or set label.votes: 1"
            )
        if job.filters.diversity.enabled:
            raise ValueError(
                "filters.diversity.enabled: labeling writes no new text to compare; filter the "
                "rows before labeling"
            )


def read_examples(path: str) -> list[dict[str, str]]:
    """Few-shot examples from a JSONL file, one object per line; ValueError names the file
    and the line of a bad one."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"no such file {path}")
    examples = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number}: not JSON ({err.msg})") from None
        if not isinstance(example, dict):
            raise ValueError(f"{path} line {number}: not an object")
        examples.append({str(k): "" if v is None else str(v) for k, v in example.items()})
    return examples


def answer_format(labels: Iterable[str]) -> str:
    """CoAnnotating's request for the answer's form (its prompt: 'Please give your answer as
    “paraphrase” or “not paraphrase”'), for any number of labels."""
    quoted = [f"“{label}”" for label in labels]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f"Please give your answer as {listed}"


def item_text(values: dict[str, str], columns: list[str]) -> str:
    """A row as the prompt shows it: `Text: ...` for one column, `column: ...` lines for
    several."""
    if len(columns) == 1:
        return f"Text: {values[columns[0]]}"
    return "\n".join(f"{column}: {values[column]}" for column in columns)


def build_prompt(config: LabelConfig, columns: list[str], values: dict[str, str]) -> str:
    """The user message: the instruction and the answer's form (CoAnnotating's first prompt:
    instruction, then the form, then the text), the labels' descriptions when there are any,
    the few-shot examples, then the row."""
    parts = [f"{config.instruction.strip()} {answer_format(config.labels)}."]
    described = [(label, d) for label, d in config.labels.items() if d]
    if described:
        parts.append("\n".join(f"{label}: {d}" for label, d in described))
    for example in config.few_shot or []:
        shown = {c: example.get(c, example.get(SINGLE_TEXT_KEY, "")) for c in columns}
        parts.append(f"{item_text(shown, columns)}\nLabel: {example['label']}")
    parts.append(item_text(values, columns))
    return "\n\n".join(parts)


def vote_entropy(votes: list[str | None]) -> float:
    """CoAnnotating's `calculate_entropy` (Expertise_Estimation.py): the Shannon entropy in
    bits of the votes' distribution, a vote that is no label counted as an outcome of its
    own; 0 for one vote or none."""
    if len(votes) <= 1:
        return 0.0
    counts = Counter("\x00none" if v is None else v for v in votes)
    return abs(-sum(c / len(votes) * math.log2(c / len(votes)) for c in counts.values()))


def majority(votes: list[str | None], labels: list[str]) -> tuple[str | None, float]:
    """(the label most votes name, its share of all votes); a tie goes to the label listed
    first, so the same votes give the same label in any order. (None, 0.0) when no vote is a
    label."""
    counts = Counter(v for v in votes if v is not None)
    if not counts or not votes:
        return None, 0.0
    best = max(labels, key=lambda label: (counts[label], -labels.index(label)))
    return best, counts[best] / len(votes)


class LabelMethod(Method):
    name = "label"
    diversity_column = None  # labels are chosen from a set: there is no new text to dedupe
    splits = (UNCERTAIN,)

    def __init__(self, config: LabelConfig, model_name: str, columns: list[str]) -> None:
        self.config = config
        self.model_name = model_name
        self.columns = columns
        self.labels = list(config.labels)
        gold = [pa.field(config.gold_column, pa.string())] if config.gold_column else []
        self.schema = pa.schema(
            [
                pa.field("id", pa.string()),
                pa.field("source_id", pa.string()),
                *[pa.field(c, pa.string()) for c in columns],
                *gold,
                pa.field("label", pa.string()),
                pa.field("vote_share", pa.float64()),
                pa.field("votes", pa.list_(pa.string())),
                pa.field("entropy", pa.float64()),
                pa.field("labelled_by", pa.string()),
                *TOKEN_COLUMNS,
            ]
        )

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """The job's sampling with n = k votes, each decoded as one of the labels."""
        return dataclasses.replace(
            job, n=self.config.votes, constraint=Constraint("choice", choices=tuple(self.labels))
        )

    def values(self, doc: Document) -> dict[str, str]:
        """Column -> the row's value (a missing or null column is empty); the first column
        is the document's text."""
        out = {}
        for i, column in enumerate(self.columns):
            value = doc.text if i == 0 else doc.extra.get(column)
            out[column] = "" if value is None else str(value)
        return out

    def expand(self, doc: Document) -> list[Candidate]:
        rid = row_id(doc.source_id, "label")
        if doc.error is not None:
            return [Candidate(rid, doc.source_id, error=doc.error)]
        values = self.values(doc)
        if not any(v.strip() for v in values.values()):
            return [Candidate(rid, doc.source_id, error=f"column {self.columns[0]} is empty")]
        copied: dict[str, str | None] = dict(values)
        if self.config.gold_column:
            gold = doc.extra.get(self.config.gold_column)
            copied[self.config.gold_column] = None if gold is None else str(gold)
        prompt = build_prompt(self.config, self.columns, values)
        return [
            Candidate(
                rid,
                doc.source_id,
                fields={"copied": copied},
                messages=[{"role": "user", "content": prompt}],
            )
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        samples = result.all_samples()
        votes = [
            text.strip() if text.strip() in self.config.labels else None for text, _, _ in samples
        ]
        label, share = majority(votes, self.labels)
        reasons = [why for _, _, why in samples]
        row = {
            "id": candidate.row_id,
            "source_id": candidate.source_id,
            **candidate.fields["copied"],
            "label": label,
            "vote_share": share,
            "votes": votes,
            "entropy": vote_entropy(votes),
            "labelled_by": self.model_name,
            "n_input_tokens": result.n_input_tokens,
            "n_output_tokens": result.n_output_tokens,
            "finish_reason": next((r for r in reasons if r != "stop"), reasons[0]),
        }
        if share < self.config.min_agreement:
            return Kept(row, split=UNCERTAIN)
        return Kept(row)


def label_summary(
    tables: Iterable[tuple[str, pa.Table]], labels: list[str], gold_column: str | None
) -> dict[str, Any]:
    """What stats.json says about the labels, from the committed rows of each split
    ((split, table) pairs): rows per split, votes that were no label, the labels given, and
    with a gold column the accuracy (a row without a label counts as wrong) over all rows,
    the confident (`data`) and the `uncertain` ones."""
    rows: Counter[str] = Counter()
    given: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    judged: Counter[str] = Counter()
    votes = no_label_votes = 0
    for split, table in tables:
        rows[split] += table.num_rows
        given.update(v for v in table.column("label").to_pylist() if v is not None)
        for row_votes in table.column("votes").to_pylist():
            votes += len(row_votes)
            no_label_votes += sum(v is None for v in row_votes)
        if gold_column:
            pairs = zip(
                table.column("label").to_pylist(),
                table.column(gold_column).to_pylist(),
                strict=True,
            )
            for label, gold in pairs:
                if gold is not None:
                    judged[split] += 1
                    correct[split] += label == gold
    out: dict[str, Any] = {
        "rows": {"data": rows["data"], UNCERTAIN: rows[UNCERTAIN]},
        "votes": votes,
        "votes_not_a_label": no_label_votes,
        "labels": {label: given[label] for label in labels},
    }
    if gold_column:

        def accuracy(splits: tuple[str, ...]) -> float | None:
            n = sum(judged[s] for s in splits)
            return round(sum(correct[s] for s in splits) / n, 4) if n else None

        out["gold"] = {
            "column": gold_column,
            "rows": sum(judged.values()),
            "accuracy": accuracy(("data", UNCERTAIN)),
            "accuracy_confident": accuracy(("data",)),
            "accuracy_uncertain": accuracy((UNCERTAIN,)),
        }
    return out


def label_columns(config: JobConfig) -> list[str]:
    assert config.input is not None  # the label method reads input
    return config.section_as(LabelConfig).columns(config.input.text_column)


def label_input(config: JobConfig) -> InputSpec:
    """The first text column as each row's text; the other text columns and the gold column
    as extra columns."""
    i, section = config.input, config.section_as(LabelConfig)
    assert i is not None
    columns = label_columns(config)
    extra = tuple(columns[1:]) + ((section.gold_column,) if section.gold_column else ())
    return InputSpec(absolute_path(i.path), columns[0], i.id_column, i.limit, extra)


def run_label(ctx: JobContext) -> dict[str, Any]:
    section = ctx.config.section_as(LabelConfig)
    method = LabelMethod(section, ctx.model_name, label_columns(ctx.config))
    stats = run_single_stage(ctx, method)
    columns = ["label", "votes", *([section.gold_column] if section.gold_column else [])]
    tables = [
        *(("data", t) for t in ctx.store.data_tables(columns=columns)),
        *((UNCERTAIN, t) for t in ctx.store.data_tables(columns=columns, split=UNCERTAIN)),
    ]
    summary = label_summary(tables, method.labels, section.gold_column)
    return ctx.store.write_stats(units_total=stats.get("units_total"), sections={"label": summary})


def label_papers(config: JobConfig) -> list[str]:
    return ["gilardi2023chatgpt", "li2023coannotating"]


register(
    MethodSpec(
        "label", run=run_label, section=LabelConfig, input_spec=label_input, papers=label_papers
    )
)
