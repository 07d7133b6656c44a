"""Method `judge`: an LLM scores or labels each input row with a rubric; `min_score` filters.

    synth-ray run configs/judge.yaml          # AlpaGasus: rate (instruction, input, response)
    synth-ray run configs/label_edu.yaml      # FineWeb-Edu: 0-5 educational value per page

Each row's columns fill the rubric's `{placeholders}` (`judge.columns` maps a placeholder to an
input column; the built-in rubrics name their defaults), the model answers, and the row is kept
with `score` (or `label`), the judge's whole answer as `rationale`, and `parse_status`:
`ok`, `unparsable` (no score in the answer) or `out_of_range` (a score off the scale). An
unparsable or out-of-range answer is dropped and counted (`unparsable_score`,
`score_out_of_range`), or, with `judge.on_unparsable: keep`, kept with a null score; either
way `stats.json`'s `judge` section counts every status. Rows below `judge.min_score` are
dropped as `below_min_score`. The judged rows' columns are copied to the output unchanged, so
a filtered dataset is usable as it is. Input may be any job's output (`input.path:
out/generate/data`): a second job with its own `engine` section is how a different model
judges what one model generated. Built-in rubrics and their papers: methods/judge_rubrics.py.
Row id = hash(source_id, "judge").
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from synth_ray.config import JobConfig
from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.io.inputs import Document, InputSpec, absolute_path
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.judge_rubrics import (
    NUMBER,
    RUBRICS,
    Rubric,
    fill,
    placeholders,
    regex_literal,
    score_after,
)
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.stages import JobContext, run_single_stage
from synth_ray.sections import ADDED, Section

JUDGE_COLUMNS = (
    "id",
    "source_id",
    "score",
    "label",
    "rationale",
    "parse_status",
    "judge_model",
    "n_input_tokens",
    "n_output_tokens",
    "finish_reason",
)
DEFAULT_SCORE_PATTERN = rf"(?i)score\W*({NUMBER})"


class JudgeConfig(Section):
    rubric: str = Field(
        "alpagasus",
        description="alpagasus (AlpaGasus 0-5 accuracy), fineweb_edu (0-5 educational value), "
        "or custom (judge.template).",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Placeholder -> input column; unset placeholders read the rubric's default "
        "column (custom: the column named like the placeholder).",
    )
    template: str | None = Field(
        None, description="custom: the user prompt, with {placeholders} filled from columns."
    )
    system_prompt: str | None = Field(None, description="custom: a system prompt.")
    score_pattern: str = Field(
        DEFAULT_SCORE_PATTERN,
        description="custom: regex whose first group is the score; the last match counts.",
    )
    scale: tuple[float, float] | None = Field(
        None, description="[low, high] of a valid score; default the rubric's (custom: 0-5)."
    )
    labels: list[str] | None = Field(
        None,
        description="custom labeling: the label set; the answer's `Label: X` (else the first "
        "label it names) is the row's label.",
    )
    min_score: float | None = Field(
        None, description="Keep rows scoring at least this (AlpaGasus kept 4.5+); None keeps all."
    )
    on_unparsable: Literal["drop", "keep"] = Field(
        "drop", description="An answer without a valid score: dropped (counted) or kept, null."
    )
    temperature: float = Field(
        0.0, ge=0, description="The judge's sampling temperature (0: the same answer each run)."
    )
    constrain: bool = Field(
        False,
        description="Decode the answer into the rubric's format (structured outputs): a score "
        "every answer's parser reads, so no answer is unparsable. A departure from the papers, "
        "whose judges wrote freely; for small judges that do not follow a format.",
        json_schema_extra=ADDED,
    )

    @model_validator(mode="after")
    def _consistent(self) -> JudgeConfig:
        if self.rubric != "custom" and self.rubric not in RUBRICS:
            raise ValueError(
                f"rubric: unknown rubric {self.rubric!r} (expected custom or one of "
                f"{sorted(RUBRICS)})"
            )
        if self.rubric == "custom" and not self.template:
            raise ValueError("template: required for rubric custom")
        if self.rubric != "custom" and (self.template or self.system_prompt or self.labels):
            raise ValueError(
                f"template: rubric {self.rubric} has its paper's prompt; set rubric: custom "
                "to write your own"
            )
        if self.labels is not None:
            if not self.labels or len(set(self.labels)) != len(self.labels):
                raise ValueError("labels: expected distinct labels")
            if self.min_score is not None:
                raise ValueError("min_score: a label set has no score to filter on")
        try:
            re.compile(self.score_pattern)
        except re.error as err:
            raise ValueError(f"score_pattern: not a regular expression ({err})") from None
        if self.constrain and self.rubric == "custom" and self.labels is None:
            if self.score_pattern != DEFAULT_SCORE_PATTERN:
                raise ValueError(
                    "constrain: a custom score_pattern has no answer format to decode into; "
                    "keep the default (the answer ends with `Score: N`) or use labels"
                )
        if self.scale is not None and self.scale[0] >= self.scale[1]:
            raise ValueError("scale: expected [low, high] with low < high")
        taken = sorted(set(self.resolved_columns().values()) & set(JUDGE_COLUMNS))
        if taken:
            raise ValueError(
                f"columns: input column {taken[0]!r} clashes with the judge's own output "
                "column; rename it in the input"
            )
        return self

    def resolved_rubric(self) -> Rubric:
        """The rubric to run: a built-in one, or the custom template as a rubric."""
        if self.rubric != "custom":
            rubric = RUBRICS[self.rubric]
            return dataclasses.replace(rubric, scale=self.scale or rubric.scale)
        assert self.template is not None
        return Rubric(
            user=self.template,
            system=self.system_prompt,
            parse=score_after(re.compile(self.score_pattern)),
            scale=self.scale or (0.0, 5.0),
            columns={name: name for name in placeholders(self.template)},
        )

    def resolved_columns(self) -> dict[str, str]:
        """Placeholder -> input column, the rubric's defaults overridden by `columns`."""
        if self.rubric == "custom":
            defaults = {name: name for name in placeholders(self.template or "")}
        else:
            defaults = dict(RUBRICS[self.rubric].columns)
        unknown = sorted(set(self.columns) - set(defaults))
        if unknown:
            raise ValueError(
                f"columns: {unknown[0]!r} is not a placeholder of the prompt "
                f"(placeholders: {', '.join(defaults)})"
            )
        return {**defaults, **self.columns}

    def check_in_job(self, job: Any) -> None:
        if job.filters.diversity.enabled:
            raise ValueError(
                "filters.diversity.enabled: a judge writes no new text to compare; filter the "
                "rows before judging, or the judged output with another job"
            )


def parse_label(text: str, labels: list[str]) -> str | None:
    """The answer's label: a `Label: X` line naming one of `labels`, else the label named
    first in the answer (whole words, any case); None when it names none."""
    by_lower = {label.lower(): label for label in labels}
    stated = re.findall(r"(?im)^\W*label\W*:\s*(.+?)\s*$", text)
    for value in reversed(stated):
        cleaned = value.strip(" *.'\"`").lower()
        if cleaned in by_lower:
            return by_lower[cleaned]
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    first = re.search(rf"(?i)(?<!\w)({alternatives})(?!\w)", text)
    return by_lower[first.group(1).lower()] if first else None


class JudgeMethod(Method):
    name = "judge"
    diversity_column = None  # judging keeps or drops rows; it makes no new text to dedupe

    def __init__(self, config: JudgeConfig, model_name: str, text_placeholder: str) -> None:
        self.config = config
        self.model_name = model_name
        self.rubric = config.resolved_rubric()
        self.columns = config.resolved_columns()  # placeholder -> input column
        self.text_placeholder = text_placeholder  # the one read as the document's text
        self.text_column = self.columns[text_placeholder]
        copied = [pa.field(c, pa.string()) for c in dict.fromkeys(self.columns.values())]
        self.schema = pa.schema(
            [
                pa.field("id", pa.string()),
                pa.field("source_id", pa.string()),
                *copied,
                pa.field("score", pa.float64()),
                pa.field("label", pa.string()),
                pa.field("rationale", pa.string()),
                pa.field("parse_status", pa.string()),
                pa.field("judge_model", pa.string()),
                *TOKEN_COLUMNS,
            ]
        )

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """The job's max_tokens, at the judge's own temperature (greedy by default), one
        answer per row; with `judge.constrain`, decoded into the rubric's answer format."""
        sampling = dataclasses.replace(job, temperature=self.config.temperature, n=1)
        if not self.config.constrain:
            return sampling
        return dataclasses.replace(sampling, constraint=Constraint("regex", self.answer_regex()))

    def answer_regex(self) -> str:
        """The format a constrained answer is decoded into: the rubric's own; for a label set,
        an optional line of reasoning and `Label: X`; for a custom score, an optional line
        and `Score: N` (the default score pattern reads it)."""
        if self.config.labels is not None:
            names = "|".join(regex_literal(label) for label in self.config.labels)
            return rf"([^\n]{{1,300}}\n)?Label: ({names})"
        if self.rubric.answer_regex is not None:
            return self.rubric.answer_regex
        low, high = self.rubric.scale
        if low.is_integer() and high.is_integer() and 0 <= high - low <= 100:
            numbers = "|".join(str(n) for n in range(int(low), int(high) + 1))
        else:
            numbers = r"-?[0-9]{1,6}(\.[0-9]{1,3})?"
        return rf"([^\n]{{1,300}}\n)?Score: ({numbers})"

    def values(self, doc: Document) -> dict[str, str]:
        """Placeholder -> the row's value (a missing or null column is an empty string, as
        Alpaca's empty `input`); the text column is the document's text."""
        out = {}
        for name, column in self.columns.items():
            value = doc.text if column == self.text_column else doc.extra.get(column)
            out[name] = "" if value is None else str(value)
        return out

    def expand(self, doc: Document) -> list[Candidate]:
        rid = row_id(doc.source_id, "judge")
        if doc.error is not None:
            return [Candidate(rid, doc.source_id, error=doc.error)]
        values = self.values(doc)
        if not values[self.text_placeholder].strip():
            column = self.columns[self.text_placeholder]
            return [Candidate(rid, doc.source_id, error=f"column {column} is empty")]
        messages = [{"role": "user", "content": fill(self.rubric.user, values)}]
        if self.rubric.system:
            messages.insert(0, {"role": "system", "content": self.rubric.system})
        copied = {self.columns[name]: value for name, value in values.items()}
        return [Candidate(rid, doc.source_id, fields={"copied": copied}, messages=messages)]

    def judgment(self, text: str) -> tuple[float | None, str | None, str]:
        """(score, label, parse_status) of one answer."""
        if self.config.labels is not None:
            label = parse_label(text, self.config.labels)
            return None, label, "ok" if label is not None else "unparsable"
        score = self.rubric.parse(text)
        if score is None:
            return None, None, "unparsable"
        low, high = self.rubric.scale
        if not low <= score <= high:
            return None, None, "out_of_range"
        return score, None, "ok"

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        score, label, status = self.judgment(result.text)
        if status != "ok" and self.config.on_unparsable == "drop":
            return Dropped("unparsable_score" if status == "unparsable" else "score_out_of_range")
        min_score = self.config.min_score
        if min_score is not None and score is not None and score < min_score:
            return Dropped("below_min_score")
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                **candidate.fields["copied"],
                "score": score,
                "label": label,
                "rationale": result.text.strip(),
                "parse_status": status,
                "judge_model": self.model_name,
                **self.token_fields(result),
            }
        )


def _text_placeholder(config: JudgeConfig) -> str:
    """The placeholder read as the document's text: the last one of the prompt (the response,
    the page), which every row must have."""
    return list(config.resolved_columns())[-1]


def judge_input(config: JobConfig) -> InputSpec:
    """The input read with the rubric's columns: the last placeholder's column as the text,
    the others as extra columns."""
    i, judge = config.input, config.section_as(JudgeConfig)
    assert i is not None
    columns = judge.resolved_columns()
    text_column = columns[_text_placeholder(judge)]
    extra = tuple(c for c in dict.fromkeys(columns.values()) if c != text_column)
    return InputSpec(absolute_path(i.path), text_column, i.id_column, i.limit, extra)


def judge_summary(ctx: JobContext, stats: dict[str, Any]) -> dict[str, Any]:
    """Counts by parse status (dropped ones from stats, kept ones from the committed rows'
    `parse_status` column only) and the kept scores' distribution."""
    statuses: Counter[str] = Counter()
    scores: Counter[str] = Counter()
    for table in ctx.store.data_tables(columns=["score", "parse_status"]):
        statuses.update(table.column("parse_status").to_pylist())
        scores.update(f"{s:g}" for s in table.column("score").to_pylist() if s is not None)
    dropped = stats.get("dropped_by_filter", {})
    statuses["unparsable"] += dropped.get("unparsable_score", 0)
    statuses["out_of_range"] += dropped.get("score_out_of_range", 0)
    judged = sum(statuses.values()) + dropped.get("below_min_score", 0)
    statuses["ok"] += dropped.get("below_min_score", 0)
    return {
        "judged": judged,
        "parse_status": dict(sorted(statuses.items())),
        "kept_scores": dict(sorted(scores.items(), key=lambda kv: float(kv[0]))),
    }


def run_judge(ctx: JobContext) -> dict[str, Any]:
    judge = ctx.config.section_as(JudgeConfig)
    method = JudgeMethod(judge, ctx.model_name, _text_placeholder(judge))
    stats = run_single_stage(ctx, method)
    return ctx.store.write_stats(
        units_total=stats.get("units_total"), sections={"judge": judge_summary(ctx, stats)}
    )


def judge_papers(config: JobConfig) -> list[str]:
    rubric = config.section_as(JudgeConfig).rubric
    return {"alpagasus": ["chen2024alpagasus"], "fineweb_edu": ["penedo2024fineweb"]}.get(
        rubric, []
    )


register(
    MethodSpec(
        "judge", run=run_judge, section=JudgeConfig, input_spec=judge_input, papers=judge_papers
    )
)
