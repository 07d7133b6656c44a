"""Method `metamath`: GSM8K-style questions bootstrapped three ways, each answered with a
rationale kept only when it reaches the known answer (Yu et al. 2023, "MetaMath: Bootstrap Your
Own Mathematical Questions for Large Language Models", arXiv 2309.12284, Sections 3.2-3.4;
github.com/meta-math/MetaMath, code_for_generating_data/: the prompts and where we differ are
in methods/metamath_prompts.py).

    synth-ray run configs/metamath.yaml

Input: rows with a question and a raw answer ending in `#### N` (GSM8K's format). For each
question and each of `metamath.augmentations`:
- `rephrase`: the model rephrases the question (MetaMath's rephrase prompt); expected answer:
  the original one.
- `fobar` (template only, no model call): one number of the question masked as `x`, then "If we
  know the answer to the above question is {answer}, what is the value of unknown variable x?";
  expected answer: the masked number.
- `sv` (self-verification): the same masking; the model rewrites the question sentence with the
  answer as a declarative statement (MetaMath's rewrite prompt), then "What is the value of
  unknown variable x?"; expected answer: the masked number.
The masked number is one whole number token of the question (`12`, `$3`, `1,200`, `50%`, `4.5`)
whose value is not the answer, chosen by a hash of the source id and the augmentation, so a
run always masks the same one. MetaMath's code makes one backward question per number (and
also masks number words, "five"); we make one, from digits only.
Stages, in one output folder (resumed exactly after a kill in either):
1. `questions` (in stages/): the rephrase and SV-rewrite requests; the reply's first line is
   taken. Dropped: `empty_rephrase`, `same_as_original` (equal once case and spacing are
   ignored), `not_a_question` (a rephrasing of a question ending in "?" that asks nothing: a
   small model answers instead of rephrasing), `empty_statement`, `truncated` (cut by
   max_tokens), `lost_answer` (a statement that does not state the answer) and `lost_variable`
   (an SV statement without `x` any more). MetaMath's code filters none of these; they are
   ours, so that no question reaching stage 2 is unanswerable.
2. `answers` (the output rows): every bootstrapped question answered with self_improve's
   few-shot prompt (its instruction; its exemplars for rephrased questions, the same problems
   turned backward for FOBAR/SV), `metamath.n` samples in one request (vLLM's `n`), each cut
   at its first `#### N` line; up to `metamath.k` whose `#### N` equals the expected answer
   (numeric checker) are kept, the others dropped as `no_answer` (no `#### N` line: cut by
   max_tokens, or unformatted, where the checker's fallback to "the last number" would guess),
   `incorrect` or `over_k`.
   With `metamath.constrain` (on in configs/metamath.yaml, for the embedded model) each
   rationale is decoded with structured outputs into self_improve's
   `answer_line_regex(max_tokens)`, reasoning then `#### N`, so none is `no_answer`. Stage 1
   stays free: its checks (a question, the answer stated) judge whether the model rephrased
   or restated at all, and a forced format passes a small model's answer with a '?' glued on.
Each unit of stage 2 is a stage-1 unit's: its replica reads that unit's input rows (FOBAR is
built from them) and committed questions (`answer_documents`), so rerunning plans the same
units and the driver reads no row. Dropped in stage 2 without a request: `no_number` (no
maskable number) and `variable_in_question` (the question already has a standalone `x`), for
fobar and sv. Every bootstrapped question stands for `n` rows: one lost before stage 2 (or
an input row that is bad, once per augmentation) counts `n` rows dropped or errored, so
rows_in = input rows x augmentations x n. stats.json's `metamath` section gives, per
augmentation, the questions `asked`, those `bootstrapped` (reaching stage 2) and `rows_out`
(summed from the units' tallies and category counts, not re-read), and the questions stage's
own counts (`questions_stage`).
Not built here: MetaMath's answer augmentation (AnsAug: k correct rationales per original
question) is `self_improve.mode: rejection`; MetaMath's MATH prompts (`X`, `$x$`, boxed
answers); several rephrasings per question (MetaMath samples more than one).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import Counter
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from synth_ray.config import JobConfig
from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.io.inputs import Document, InputSpec, absolute_path
from synth_ray.io.output_store import STAGES_DIR
from synth_ray.methods.base import (
    TOKEN_COLUMNS,
    Candidate,
    Dropped,
    Kept,
    Method,
    Outcome,
    row_id,
)
from synth_ray.methods.checkers import get_checker, normalize_number
from synth_ray.methods.metamath_prompts import (
    BACKWARD_FEW_SHOT,
    ECHOED_LABELS,
    REQUIRED,
    TEMPLATES,
)
from synth_ray.methods.registry import MethodSpec, register
from synth_ray.methods.self_improve import (
    FEW_SHOT,
    answer_line_regex,
    check_answer_line_budget,
    cut_at_first_answer,
)
from synth_ray.methods.stages import JobContext, Together
from synth_ray.methods.templating import fill
from synth_ray.sections import ADDED, Section, check_templates
from synth_ray.stats import UnitStats

Augmentation = Literal["rephrase", "fobar", "sv"]
AUGMENTATIONS: tuple[str, ...] = ("rephrase", "fobar", "sv")
MODEL_WRITTEN = ("rephrase", "sv")  # the augmentations stage 1 asks the model for
CHECKER = get_checker("numeric")


class MetaMathConfig(Section):
    question_column: str = Field("question", description="Input column with the question.")
    answer_column: str = Field(
        "answer",
        min_length=1,
        description="Raw reference answer ending in `#### N` (GSM8K); its N is the answer.",
    )
    augmentations: list[Augmentation] = Field(
        default_factory=lambda: list(AUGMENTATIONS),
        description="rephrase: the question reworded; fobar: a number masked as x, the answer "
        "given; sv: a number masked as x, the question restated with its answer.",
    )
    n: int = Field(4, ge=1, le=64, description="Answers sampled per bootstrapped question.")
    k: int = Field(1, ge=1, description="Correct answers kept per bootstrapped question, at most.")
    variable: str = Field(
        "x",
        pattern=r"^[A-Za-z]$",
        description="The letter a masked number becomes (MetaMath: x for GSM8K).",
    )
    templates: dict[str, str] = Field(
        default_factory=dict,
        description="Override prompt templates: rephrase ({question}), sv_rewrite ({question}, "
        "{answer}), fobar ({question}, {answer}), sv ({statement}), instruction.",
    )
    constrain: bool = Field(
        False,
        description="Decode each rationale of the answers stage (structured outputs) into "
        "reasoning short enough to fit max_tokens and the '#### N' line that is scored. A "
        "departure from MetaMath, for small models.",
        json_schema_extra=ADDED,
    )

    @field_validator("augmentations")
    @classmethod
    def _augmentations(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one of rephrase, fobar, sv")
        repeated = sorted(a for a, c in Counter(value).items() if c > 1)
        if repeated:
            raise ValueError(f"{repeated[0]} is given twice")
        return value

    @model_validator(mode="after")
    def _checks(self) -> MetaMathConfig:
        check_templates(self.templates, REQUIRED)
        if self.k > self.n:
            raise ValueError(f"k: {self.k} is more than n={self.n}")
        return self

    def template(self, name: str) -> str:
        return self.templates.get(name, TEMPLATES[name])

    def check_in_job(self, job: Any) -> None:
        if self.constrain:
            check_answer_line_budget(job.sampling, "metamath.constrain")


# A whole number token: an optional `$`, digits (commas by thousands, a decimal part), then
# only closing punctuation or `%`; "5th", "10-minute", "3:30" and "(4)" are not masked.
_NUMBER_TOKEN = re.compile(r"^(\$?)(\d+(?:,\d{3})*(?:\.\d+)?)([,.?;:!%\"'”’)]*)$")
_TOKEN = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclasses.dataclass(frozen=True)
class Masked:
    """A question with one number replaced by the variable; `value` is that number."""

    question: str
    value: str
    token: str  # the number as the question wrote it ("$1,200")


def maskable_numbers(question: str, answer: str | None) -> list[tuple[int, int, str]]:
    """(start, end, normalized value) of each number token that may be masked: not the answer."""
    found = []
    for token in _TOKEN.finditer(question):
        match = _NUMBER_TOKEN.match(token.group(0))
        if match is None:
            continue
        value = normalize_number(match.group(2))
        if value is None or value == answer:
            continue
        start = token.start() + match.start(2)
        found.append((start, start + len(match.group(2)), value))
    return found


def has_variable(text: str, variable: str) -> bool:
    """Whether `variable` stands alone in `text` ("x", "$x", "4x" count; "box" does not)."""
    return re.search(rf"(?<![A-Za-z]){re.escape(variable)}(?![A-Za-z])", text) is not None


def mask_number(question: str, answer: str | None, key: str, variable: str = "x") -> Masked | str:
    """The question with one number (chosen by a hash of `key`) replaced by `variable`, or why
    none can be: `no_number` (no number other than the answer), `variable_in_question`."""
    if has_variable(question, variable):
        return "variable_in_question"
    numbers = maskable_numbers(question, answer)
    if not numbers:
        return "no_number"
    start, end, value = numbers[int(row_id(key, "mask"), 16) % len(numbers)]
    return Masked(question[:start] + variable + question[end:], value, question[start:end])


def mask_for(
    source_id: str, augmentation: str, question: str, answer: str, variable: str = "x"
) -> Masked | str:
    """The masked question of `augmentation` (fobar, sv) for one input row: each has its own
    choice, the same on every run."""
    return mask_number(question, answer, f"{source_id}\x1f{augmentation}", variable)


def fobar_question(config: MetaMathConfig, masked: str, answer: str) -> str:
    """MetaMath's FOBAR question: the masked question and the known answer of the original."""
    values = {"question": masked, "answer": answer, "variable": config.variable}
    return fill(config.template("fobar"), values)


def sv_question(config: MetaMathConfig, statement: str) -> str:
    values = {"statement": statement, "variable": config.variable}
    return fill(config.template("sv"), values)


def split_question_sentence(text: str) -> tuple[str, str]:
    """(what comes before, the last sentence): the sentence SV rewrites with the answer.
    MetaMath's code cuts at the last `.` or `,`; we cut at the last sentence end, as its
    rewrite examples ("If they ate 35, how many pieces ...?") show."""
    ends = list(_SENTENCE_END.finditer(text.strip()))
    if not ends:
        return "", text.strip()
    last = ends[-1]
    return text.strip()[: last.start()].strip(), text.strip()[last.end() :].strip()


def first_line(text: str) -> tuple[str, bool]:
    """The reply's first non-empty line without an echoed prompt label, and whether more
    text followed it (then it was not cut by max_tokens)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "", False
    line = lines[0]
    for label in ECHOED_LABELS:
        if line.startswith(label):
            line = line[len(label) :].strip()
    return line, len(lines) > 1


def normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def reference_answer(doc: Document, config: MetaMathConfig) -> str | None:
    raw = doc.extra.get(config.answer_column)
    return CHECKER.extract(str(raw)) if raw is not None else None


def document_error(doc: Document, config: MetaMathConfig) -> str | None:
    """Why an input row cannot be bootstrapped at all (then each augmentation is an error)."""
    if doc.error is not None:
        return doc.error
    if not doc.text or not doc.text.strip():
        return "empty question"
    if reference_answer(doc, config) is None:
        return "reference answer has no numeric final answer"
    return None


class MetaMathQuestions(Method):
    """Stage 1: the model rephrases a question, or restates a masked one with its answer."""

    name = "metamath_questions"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("augmentation", pa.string()),
            pa.field("original_question", pa.string()),
            pa.field("question", pa.string()),
            pa.field("expected_answer", pa.string()),
            pa.field("masked_number", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(self, config: MetaMathConfig) -> None:
        self.config = config
        self.asked = [a for a in config.augmentations if a in MODEL_WRITTEN]

    def estimate_rows(self, doc: Document) -> int:
        return max(1, len(self.asked))

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        return dataclasses.replace(job, n=1, stop=("\nQuestion:",))

    def expand(self, doc: Document) -> list[Candidate]:
        config = self.config
        error = document_error(doc, config)
        if error is not None:  # one error standing for every augmentation of this row
            rid = row_id(doc.source_id, "metamath", "questions")
            width = len(config.augmentations)
            return [Candidate(rid, doc.source_id, error=error, width=width)]
        question = (doc.text or "").strip()
        answer = reference_answer(doc, config) or ""
        candidates = []
        for augmentation in self.asked:
            fields: dict[str, Any] = {
                "augmentation": augmentation,
                "original_question": question,
                "expected_answer": answer,
                "masked_number": None,
            }
            if augmentation == "rephrase":
                prompt = fill(config.template("rephrase"), {"question": question})
            else:
                masked = mask_for(doc.source_id, "sv", question, answer, config.variable)
                if isinstance(masked, str):
                    continue  # dropped in stage 2 (no_number, variable_in_question)
                before, sentence = split_question_sentence(masked.question)
                fields.update(before=before, reference=answer, expected_answer=masked.value)
                fields["masked_number"] = masked.value
                values = {"question": sentence, "answer": answer}
                prompt = fill(config.template("sv_rewrite"), values)
            rid = row_id(doc.source_id, "metamath", augmentation, "question")
            messages = [{"role": "user", "content": prompt}]
            tallies = (f"asked:{augmentation}",)
            candidates.append(Candidate(rid, doc.source_id, fields, messages, tallies=tallies))
        return candidates

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        fields = candidate.fields
        reply, complete = first_line(result.text)
        truncated = result.finish_reason == "length" and not complete
        if fields["augmentation"] == "rephrase":
            if not reply:
                return Dropped("empty_rephrase")
            if truncated:
                return Dropped("truncated")
            if normalized(reply) == normalized(fields["original_question"]):
                return Dropped("same_as_original")
            if fields["original_question"].endswith("?") and "?" not in reply:
                return Dropped("not_a_question")
            question = reply
        else:
            if not reply:
                return Dropped("empty_statement")
            if truncated:
                return Dropped("truncated")
            stated = {normalize_number(n) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", reply)}
            if fields["reference"] not in stated:  # the statement must give the answer
                return Dropped("lost_answer")
            statement = f"{fields['before']} {reply}".strip()
            if not has_variable(statement, self.config.variable):
                return Dropped("lost_variable")
            question = sv_question(self.config, statement)
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                "augmentation": fields["augmentation"],
                "original_question": fields["original_question"],
                "question": question,
                "expected_answer": fields["expected_answer"],
                "masked_number": fields["masked_number"],
                **self.token_fields(result),
            }
        )


class MetaMathAnswers(Method):
    """Stage 2 (the output): n few-shot rationales per bootstrapped question, up to k correct
    ones kept."""

    name = "metamath"
    counts_input_documents = False  # stage 1 counted them; these are bootstrapped questions
    diversity_column = "rationale"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("augmentation", pa.string()),
            pa.field("original_question", pa.string()),
            pa.field("question", pa.string()),
            pa.field("rationale", pa.string()),
            pa.field("answer", pa.string()),
            pa.field("expected_answer", pa.string()),
            pa.field("masked_number", pa.string()),
            pa.field("model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(self, config: MetaMathConfig, model_name: str) -> None:
        self.config = config
        self.model_name = model_name
        self.asked_before = MODEL_WRITTEN  # stage 1 counted these as asked

    def sampling_overrides(self) -> dict[str, Any]:
        return {"n": self.config.n}

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """The job's sampling with `n`; with `constrain`, each rationale is decoded into
        self_improve's `answer_line_regex(max_tokens)`: reasoning, then the `#### N` line
        this stage scores, within max_tokens."""
        sampling = super().stage_sampling(job)
        if not self.config.constrain:
            return sampling
        regex = answer_line_regex(sampling.max_tokens)
        return dataclasses.replace(sampling, constraint=Constraint("regex", regex))

    def estimate_rows(self, doc: Document) -> int:
        return self.config.n

    def examples(self, augmentation: str) -> list[dict[str, str]]:
        """(question, rationale, answer) exemplars: forward for rephrase, backward otherwise."""
        if augmentation == "rephrase":
            return FEW_SHOT
        config, var = self.config, {"variable": self.config.variable}
        out = []
        for ex in BACKWARD_FEW_SHOT:
            masked = fill(ex["masked_question"], var)
            if augmentation == "fobar":
                question = fobar_question(config, masked, ex["answer"])
            else:
                question = sv_question(config, fill(ex["statement"], var))
            out.append(
                {
                    "question": question,
                    "rationale": fill(ex["rationale"], var),
                    "answer": ex["value"],
                }
            )
        return out

    def prompt(self, augmentation: str, question: str) -> str:
        """self_improve's prompt layout: instruction, Q/A/#### exemplars, then the question."""
        parts = [self.config.template("instruction"), ""]
        for ex in self.examples(augmentation):
            parts += [f"Q: {ex['question']}", f"A: {ex['rationale']}", f"#### {ex['answer']}", ""]
        parts += [f"Q: {question}", "A:"]
        return "\n".join(parts)

    def expand(self, doc: Document) -> list[Candidate]:
        augmentation = str(doc.extra["augmentation"])
        rid = row_id(doc.source_id, "metamath", augmentation)
        asked = (f"asked:{augmentation}",) if augmentation not in self.asked_before else ()
        if doc.extra.get("dropped"):  # could not be masked: no question to ask
            dropped = str(doc.extra["dropped"])
            return [Candidate(rid, doc.source_id, dropped=dropped, width=self.config.n,
                              tallies=(f"asked:{augmentation}",))]  # fmt: skip
        fields = {**doc.extra, "question": doc.text}
        messages = [{"role": "user", "content": self.prompt(augmentation, doc.text or "")}]
        tallies = (*asked, f"bootstrapped:{augmentation}")
        return [
            Candidate(rid, doc.source_id, fields, messages, width=self.config.n, tallies=tallies)
        ]

    def finish(self, candidate: Candidate, result: EngineResult) -> list[Outcome]:
        fields = candidate.fields
        outcomes: list[Outcome] = []
        kept = 0
        for i, (text, n_tokens, why) in enumerate(result.all_samples()):
            rationale = cut_at_first_answer(text)
            answer = CHECKER.extract(rationale)
            if "####" not in rationale:
                outcomes.append(Dropped("no_answer"))
            elif not CHECKER.is_correct(answer, fields["expected_answer"]):
                outcomes.append(Dropped("incorrect"))
            elif kept >= self.config.k:
                outcomes.append(Dropped("over_k"))
            else:
                kept += 1
                row = {
                    "id": candidate.sample_id(i),
                    "source_id": candidate.source_id,
                    "augmentation": fields["augmentation"],
                    "original_question": fields["original_question"],
                    "question": fields["question"],
                    "rationale": rationale,
                    "answer": answer,
                    "expected_answer": fields["expected_answer"],
                    "masked_number": fields["masked_number"],
                    "model": self.model_name,
                    "n_input_tokens": result.n_input_tokens,
                    "n_output_tokens": n_tokens,
                    "finish_reason": why,
                }
                outcomes.append(Kept(row))
        return outcomes


QUESTION_COLUMNS = ("source_id", "augmentation", "question", "expected_answer", "masked_number")


def answer_documents(
    rows: list[Document], table: pa.Table, config: MetaMathConfig
) -> list[Document]:
    """Stage 2's documents for one unit's input rows (the replica builds them: runtime
    `run_joined_stage`), from `table`, what stage 1 committed for those rows: per valid row
    and augmentation, in `augmentations` order, numbered `row.ordinal * len(augmentations) +
    i`. FOBAR questions are built here; rephrased and SV questions come from stage 1 (one it
    dropped gets no document: stage 1 counted it). A FOBAR or SV question that cannot be
    masked is a document marked `dropped` (no_number, variable_in_question)."""
    columns = {c: table.column(c).to_pylist() for c in QUESTION_COLUMNS}
    written = {
        (source_id, augmentation): i
        for i, (source_id, augmentation) in enumerate(
            zip(columns["source_id"], columns["augmentation"], strict=True)
        )
    }
    width = len(config.augmentations)
    out: list[Document] = []
    for doc in rows:
        if document_error(doc, config) is not None:
            continue  # stage 1 errored it, once per augmentation
        question = (doc.text or "").strip()
        answer = reference_answer(doc, config) or ""
        for i, augmentation in enumerate(config.augmentations):
            ordinal = doc.ordinal * width + i
            extra: dict[str, Any] = {"augmentation": augmentation, "original_question": question}
            if augmentation != "rephrase":
                masked = mask_for(doc.source_id, augmentation, question, answer, config.variable)
                if isinstance(masked, str):  # asked of no model: dropped in stage 2
                    extra["dropped"] = masked
                    out.append(Document(ordinal, doc.source_id, None, extra=extra))
                    continue
            if augmentation == "fobar":
                text = fobar_question(config, masked.question, answer)
                extra.update(expected_answer=masked.value, masked_number=masked.value)
            else:
                at = written.get((doc.source_id, augmentation))
                if at is None:
                    continue  # dropped in stage 1: counted there
                text = columns["question"][at]
                extra.update(
                    expected_answer=columns["expected_answer"][at],
                    masked_number=columns["masked_number"][at],
                )
            out.append(Document(ordinal, doc.source_id, text, extra=extra))
    return out


def run_metamath(ctx: JobContext) -> dict[str, Any]:
    """Stage 1 into stages/, stage 2 into the output folder: each of its units is built by a
    replica from a stage-1 unit's input rows and committed questions, so the driver reads no
    row of either. The stages run together on the job's replicas: a unit's answers are asked
    as soon as its questions commit (`run_together`)."""
    assert ctx.docs is not None
    config = ctx.config.section_as(MetaMathConfig)
    ask = MetaMathQuestions(config)
    units = ctx.runner.plan(ctx.docs, ask, f"{ctx.fingerprint}/questions", ctx.id_column)
    ctx.prepare()
    work = ctx.store.child(STAGES_DIR)
    work.prepare(f"{ctx.fingerprint}/stages", {"stages_of": ctx.fingerprint}, overwrite=False)
    questions = functools.partial(ctx.runner.execute, work, ctx.docs, ask, units, "questions")
    answers = functools.partial(
        ctx.runner.run_joined_stage,
        "answers",
        ctx.store,
        ctx.docs,
        units,
        [(work, "questions")],
        QUESTION_COLUMNS,
        functools.partial(answer_documents, config=config),
        len(config.augmentations),
        MetaMathAnswers(config, ctx.model_name),
        ctx.fingerprint,
    )
    ctx.runner.run_together(
        [Together(questions, publishes=((work, "questions"),)), Together(answers, filtered=True)]
    )
    # every bootstrapped question stands for n rows; those lost in stage 1 count here
    n, first, second = config.n, work.totals("questions"), ctx.store.totals("answers")
    before = UnitStats(
        input_documents=first.input_documents,
        rows_in=(first.rows_in - first.rows_out) * n,
        input_tokens=first.input_tokens,
        output_tokens=first.output_tokens,
    )
    before.dropped.update({name: count * n for name, count in first.dropped.items()})
    before.errored.update({name: count * n for name, count in first.errored.items()})
    tallies = first.tallies + second.tallies
    kept = second.categories.get("augmentation", {})
    per = {
        a: {
            "asked": tallies[f"asked:{a}"],
            "bootstrapped": tallies[f"bootstrapped:{a}"],
            "rows_out": kept.get(a, 0),
        }
        for a in config.augmentations
    }
    return ctx.store.write_stats(
        units_total=ctx.runner.summary.units_total,
        extra=before,
        sections={"metamath": {"augmentations": per, "questions_stage": first.to_dict()}},
    )


def metamath_input(config: JobConfig) -> InputSpec:
    """The question column, plus the reference answers' column."""
    i, section = config.input, config.section_as(MetaMathConfig)
    assert i is not None
    extra = (section.answer_column,)
    return InputSpec(absolute_path(i.path), section.question_column, i.id_column, i.limit, extra)


register(
    MethodSpec(
        "metamath",
        run=run_metamath,
        input_spec=metamath_input,
        section=MetaMathConfig,
        papers=lambda config: ["yu2023metamath"],
        streams=lambda config: True,
    )
)
