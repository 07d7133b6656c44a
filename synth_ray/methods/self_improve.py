"""Method `self_improve`: rationales a model can be fine-tuned on, kept only when they hold up.

    synth-ray run configs/self_improve.yaml

Three modes (`self_improve.mode`), one row per sample:
- `star` (Zelikman et al. 2022, "STaR: Bootstrapping Reasoning With Reasoning"): a few-shot
  rationale per question, kept when its answer is correct (source `direct`); for the questions
  it got wrong, a second stage asks again with the correct answer as a hint and keeps the
  rationale if it reaches the answer (source `rationalized`), stored with the question alone,
  without the hint. methods/self_improve_star.py runs the two stages. As in the STaR code, a
  completion is cut after its first answer line (`#### N`), so a next problem the model goes on
  to invent is neither scored nor kept. A rationalized rationale that mentions its hint ("the
  hint says 33") or starts from knowing the answer ("we know the answer is 33", "since the
  answer is 33") is dropped (`mentions_hint`): it is stored without the hint, so it would not
  make sense. The STaR code keeps those; this is a deliberate departure.
- `rejection`: n samples in one request (vLLM's `n`), keep up to k correct ones.
- `self_consistency` (Huang et al. 2022, "Large Language Models Can Self-Improve"): n samples,
  majority vote on the final answer, keep the agreeing rationales when the majority's share
  reaches `min_agreement`; no labels needed (source `majority`).
Answers are extracted and compared by a named checker (methods/checkers.py).

`self_improve.constrain` (checker numeric; on in configs/self_improve.yaml for the embedded
model) decodes every rationale, in every mode and stage, with structured outputs into
`answer_line_regex(max_tokens)`: reasoning that fits the budget, then `#### N`. Every sample
then ends in the answer line the checker reads, within max_tokens (provided prompt and
max_tokens fit `engine.max_model_len`), instead of the last number of an unfinished text. A
departure from the papers, whose models wrote freely.

`self_improve.checker: program` is program-of-thought (Chen et al. 2022, "Program of Thoughts
Prompting"; the format of its GSM8K prompt, wenhuchen/Program-of-Thoughts: "Question: ...",
"# Python code, return ans", a program assigning `ans`; MathInstruct's PoT half is made so):
the rationale is a Python program (cut at its first blank line, PoT's stop, or at the end of
its markdown fence), run in the code sandbox (verify/sandbox.py, limits under
`self_improve.sandbox`), and its answer is what it computes for `ans`, compared with the
reference by the numeric checker. Any mode works with it. A program that fails, times out or
crashes is dropped as `program_fail`, `program_timeout` or `program_crash`; a rationalized
program that writes the hinted answer as a literal the question does not contain is dropped
as `answer_hardcoded` (it printed the hint rather than computing it). With
`self_improve.constrain` (on in configs/program_of_thought.yaml for the embedded model, which
does not write the format unaided) each program is decoded with structured outputs into
methods/program_format.py's language: assignments ending in `ans = ...`, within max_tokens. A
departure from the paper, whose Codex wrote freely.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import Document
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
from synth_ray.methods.program_format import program_format
from synth_ray.sections import ADDED, Section, check_templates
from synth_ray.verify.sandbox import CodeRunner, SandboxConfig, Verdict


class SelfImproveConfig(Section):
    mode: Literal["star", "rejection", "self_consistency"] = Field(
        "star",
        description="star: rationale, then rationalize wrong ones with a hint; rejection: n "
        "samples, keep k correct; self_consistency: n samples, keep those agreeing with the majority.",
    )
    question_column: str = Field("question", description="Input column with the question.")
    answer_column: str | None = Field(
        "answer", description="Raw reference (e.g. GSM8K's full answer); the checker extracts it."
    )
    checker: Literal["numeric", "exact", "choice", "program"] = Field(
        "numeric",
        description="How answers are found and compared; program: the rationale is a Python "
        "program, run in the sandbox, whose `ans` is the answer (program of thought).",
    )
    sandbox: SandboxConfig = Field(
        default_factory=SandboxConfig,
        description="Limits for each program run (checker: program).",
        json_schema_extra=ADDED,
    )
    # 4 samples already lift self-consistency well above one; more cost linearly.
    n: int = Field(
        4, ge=1, le=64, description="Samples per question (rejection, self_consistency)."
    )
    k: int = Field(1, ge=1, description="Correct samples kept per question at most (rejection).")
    min_agreement: float = Field(
        0.5, gt=0, le=1, description="Majority share needed to keep a question (self_consistency)."
    )
    iteration: int = Field(
        0, ge=0, description="Stamped on every row: which model iteration made it."
    )
    few_shot_path: str | None = Field(
        None, description="JSONL of {question, rationale, answer} replacing the built-in examples."
    )
    templates: dict[str, str] = Field(
        default_factory=dict,
        description="Override prompt templates: instruction (the line before the examples), hint ({answer}).",
    )
    constrain: bool = Field(
        False,
        description="Decode each sample (structured outputs) into the format its checker reads, "
        "within max_tokens: checker numeric, reasoning and a '#### N' line; checker program, "
        "lines of assignments ending in `ans = ...`. A departure from the papers, for small "
        "models.",
        json_schema_extra=ADDED,
    )

    @model_validator(mode="after")
    def _labels_needed(self) -> SelfImproveConfig:
        check_templates(self.templates, {"instruction": set(), "hint": {"answer"}})
        if self.constrain and self.checker not in ("numeric", "program"):
            raise ValueError(
                f"constrain: checker {self.checker} has no format to decode into (numeric: a "
                "'#### N' answer line; program: a program assigning ans)"
            )
        if self.mode in ("star", "rejection") and not self.answer_column:
            raise ValueError(f"answer_column: mode {self.mode} needs reference answers")
        if self.mode == "rejection" and self.k > self.n:
            raise ValueError(f"k: {self.k} is more than n={self.n}")
        return self

    def check_in_job(self, job: Any) -> None:
        if not self.constrain:
            return
        if self.checker == "numeric":
            check_answer_line_budget(job.sampling, "self_improve.constrain")
            return
        if job.sampling.ignore_eos:
            raise ValueError("self_improve.constrain: sampling.ignore_eos would write past `ans`")
        try:
            program_format(job.sampling.max_tokens)
        except ValueError as err:
            raise ValueError(f"self_improve.constrain: sampling.{err}") from None


INSTRUCTION = (
    "Solve each problem. Think step by step, then write the final answer on the last line "
    "as '#### <answer>'."
)
# Our own GSM8K-style exemplars (STaR prompts with a few worked rationales ending in the answer).
FEW_SHOT = [
    {
        "question": "A baker makes 12 muffins per tray and bakes 4 trays. She sells 30 muffins. "
        "How many muffins are left?",
        "rationale": "She bakes 12 * 4 = 48 muffins. After selling 30, 48 - 30 = 18 are left.",
        "answer": "18",
    },
    {
        "question": "Tom reads 15 pages a day. How many days does he need for a 120-page book?",
        "rationale": "He needs 120 / 15 = 8 days.",
        "answer": "8",
    },
    {
        "question": "A ticket costs $7 for adults and $4 for children. What do 2 adults and "
        "3 children pay in total?",
        "rationale": "Adults pay 2 * 7 = 14 dollars. Children pay 3 * 4 = 12 dollars. "
        "In total 14 + 12 = 26 dollars.",
        "answer": "26",
    },
]
HINT = " (Hint: the correct answer is {answer}.)"
PROGRAM_INSTRUCTION = (
    "Solve each problem by writing a Python program that computes the answer and stores it "
    "in a variable named ans."
)
PROGRAM_HEADER = "# Python code, return ans"
# The same problems as FEW_SHOT, each as a program of thought.
PROGRAM_FEW_SHOT = [
    {
        "question": FEW_SHOT[0]["question"],
        "rationale": "muffins_per_tray = 12\ntrays = 4\nsold = 30\n"
        "ans = muffins_per_tray * trays - sold",
        "answer": "18",
    },
    {
        "question": FEW_SHOT[1]["question"],
        "rationale": "pages_per_day = 15\nbook_pages = 120\nans = book_pages / pages_per_day",
        "answer": "8",
    },
    {
        "question": FEW_SHOT[2]["question"],
        "rationale": "adult_price = 7\nchild_price = 4\nans = 2 * adult_price + 3 * child_price",
        "answer": "26",
    },
]
# Where a program ends: the next problem the model invents, or the end of a markdown fence.
_PROGRAM_END = re.compile(r"^\s*(?:Question:|Q:|```\s*$)", re.MULTILINE)
# Program of Thoughts stops generating at a blank line (run_gsm8k.py: stop=['\n\n']); here an
# unfenced program is cut there instead, as a chat model's fenced program may hold blank lines.
_PROGRAM_STOP = "\n\n"
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")
# Generation stops at the next problem the model invents, which no program is followed by.
PROGRAM_STOP_STRINGS = ("\nQuestion:",)
_FENCE_START = re.compile(r"^\s*```(?:python|py)?\s*$", re.MULTILINE)
_NUMBER_LITERAL = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
# run after the program: its answer on a line of its own, whatever it printed before; a float
# rounded, so 1.1 * 3 is 3.3 (not 3.3000000000000003) and 8.0 is 8
_PRINT_ANS = (
    "\n\nprint()\n"
    "if isinstance(ans, float) and ans == ans and abs(ans) != float('inf'):\n"
    "    ans = round(ans, 6)\n"
    "    ans = int(ans) if ans.is_integer() else ans\n"
    "print(ans)\n"
)
# The next few-shot problem a model goes on to invent ("Q: ..." on a line of its own).
_NEXT_QUESTION = re.compile(r"^\s*Q:", re.MULTILINE)
# A rationalized rationale that talks about its hint was not reasoned out: STaR saves the
# rationale as if no hint had been given, so one that cites it teaches the wrong thing.
# It cites the hint by name ("the hint says"), calls the answer given ("the correct answer",
# "the answer is given as"), or takes it as known before deriving it ("we know the answer is
# 33", "we are told that the answer is", "since the answer is", "if the answer is"). A
# conclusion ("so the answer is 33", "we know that 3 * 14 = 42") is none of these.
_THE_ANSWER_IS = r"the\s+(?:(?:final|correct|right)\s+)?answer\s*(?:is|was|=|equals|:)"
_MENTIONS_HINT = re.compile(
    r"\bhint\b"
    r"|\b(?:given|correct|provided|expected|known) answer\b"
    r"|\banswer\s+(?:(?:is|was)\s+)?(?:key|given|provided|stated)\b"
    r"|\b(?:know|knew|known|knowing|told|tells?|given|says?|said|states?|stated)"
    r"\s+(?:(?:that|us|me|already)\s+)*"
    + _THE_ANSWER_IS
    + r"|\b(?:since|because|as|if)\s+"
    + _THE_ANSWER_IS
    + r"\s*\$?-?\d",  # "since the answer is 33", not "since the answer is in hours"
    re.IGNORECASE,
)


# The format a constrained rationale is decoded into (`constrain`): reasoning of printable
# ASCII and newlines without '#', ending in a visible character, then the answer line
# "\n#### N" with N a plain number. Each output token is at least one character (the language
# is ASCII: no token is a part of a character), so a completion of at most max_tokens - 1
# characters ends, with its end-of-sequence token, within max_tokens. SmolLM2 spends a token on
# each digit: a bound of characters per token above 1 would not hold.
_REASONING_CHAR = r'[ -"$-~\n]'
_REASONING_LAST = r'[!-"$-~]'
ANSWER_LINE = r"\n#### -?[0-9]{1,9}(\.[0-9]{1,4})?"
ANSWER_LINE_CHARS = len("\n#### -123456789.1234")  # the longest answer line: 21 characters


def answer_line_budget(max_tokens: int) -> int:
    """The reasoning's characters at most, before the answer line: the rest of `max_tokens`
    after the longest answer line and the end-of-sequence token (less than 1: no room)."""
    return max_tokens - ANSWER_LINE_CHARS - 1


def check_answer_line_budget(sampling: Any, key: str) -> None:
    """Refuse (ValueError naming `key`) a job whose sampling leaves no room for a constrained
    rationale: max_tokens under 23, or ignore_eos (it would write past the answer line)."""
    if answer_line_budget(sampling.max_tokens) < 1:
        raise ValueError(
            f"{key}: sampling.max_tokens {sampling.max_tokens} leaves no room for reasoning "
            f"before the answer line (at least {ANSWER_LINE_CHARS + 2})"
        )
    if sampling.ignore_eos:
        raise ValueError(f"{key}: sampling.ignore_eos would write on past the answer line")


def answer_line_regex(max_tokens: int) -> str:
    """The language `constrain` decodes a completion of at most `max_tokens` tokens into:
    reasoning (printable ASCII and newlines, no '#', ending in a visible character) of at
    most `answer_line_budget(max_tokens)` characters, then "\n#### N" (N: up to 9 digits,
    optionally a sign and 4 decimals). Every string of it ends before max_tokens, and its
    `#### N` is the first answer line, the one the numeric checker reads."""
    budget = answer_line_budget(max_tokens)
    if budget < 1:
        raise ValueError(f"max_tokens {max_tokens}: no room for reasoning and an answer line")
    return rf"{_REASONING_CHAR}{{0,{budget - 1}}}{_REASONING_LAST}{ANSWER_LINE}"


def cut_at_first_answer(text: str) -> str:
    """The completion up to and including its first answer line (`#### ...`), as the STaR
    code saves it (ezelikman/STaR, device_inference.py: the lines up to the first one holding
    "####"). Without an answer line, up to the first invented next question ("Q: ..."), so
    neither that question nor its answer is scored or kept."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if "####" in line:
            return "\n".join(lines[: i + 1]).strip()
    match = _NEXT_QUESTION.search(text)
    return (text[: match.start()] if match and match.start() > 0 else text).strip()


_ASSIGNMENT = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=[^=]", re.MULTILINE)


def cut_program(text: str) -> str:
    """The program in a completion, without the `# Python code` header line: inside a markdown
    fence if it opened one (after prose at most: no assignment before it), up to the fence's end; else up to its first blank line, where
    Program of Thoughts' stop ends it (what follows is prose, or the next problem). Either
    way, not past the next invented question."""
    fence = _FENCE_START.search(text)
    if fence is not None and not _ASSIGNMENT.search(text[: fence.start()]):
        text = text[fence.end() :]  # a chat model's preamble ("Here is the code:") is no code
    else:
        text = _LEADING_BLANK_LINES.sub("", text).split(_PROGRAM_STOP, 1)[0]
    end = _PROGRAM_END.search(text)
    program = text[: end.start()] if end else text
    lines = [ln for ln in program.strip("\n").split("\n") if ln.strip() != PROGRAM_HEADER]
    return "\n".join(lines).strip("\n")


def program_answer(verdict: Verdict) -> str | None:
    """The numeric answer a passing program computed: the last line it printed (`ans`)."""
    if not verdict.passed:
        return None
    lines = [ln for ln in verdict.stdout.splitlines() if ln.strip()]
    return normalize_number(lines[-1]) if lines else None


def hardcodes_answer(program: str, question: str, answer: str | None) -> bool:
    """Whether a program writes the answer as a number the question does not contain."""
    if answer is None:
        return False
    written = {normalize_number(n) for n in _NUMBER_LITERAL.findall(program)}
    given = {normalize_number(n) for n in _NUMBER_LITERAL.findall(question)}
    return answer in written and answer not in given


def mentions_hint(rationale: str) -> bool:
    """Whether a rationale shows it was given the answer: it names the hint ("the hint says
    33"), calls the answer given ("the correct answer is 33"), or starts from knowing it ("we
    know the answer is 33", "since the answer is 33"). A rationale that only concludes ("so
    the answer is 33") does not."""
    return _MENTIONS_HINT.search(rationale) is not None


def load_few_shot(path: str | None, programs: bool = False) -> list[dict[str, str]]:
    """The few-shot examples: built in, or a JSONL file's (with `checker: program`, each
    example's `rationale` is its program)."""
    if path is None:
        return PROGRAM_FEW_SHOT if programs else FEW_SHOT
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config key self_improve.few_shot_path: no such file {path}")
    examples = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    for i, example in enumerate(examples):
        if not {"question", "rationale", "answer"} <= set(example):
            raise ConfigError(
                f"self_improve.few_shot_path {path}: line {i + 1} needs question, rationale, answer"
            )
    return examples


class SelfImproveMethod(Method):
    name = "self_improve"
    diversity_column = "rationale"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("question", pa.string()),
            pa.field("rationale", pa.string()),
            pa.field("answer", pa.string()),
            pa.field("reference_answer", pa.string()),
            pa.field("correct", pa.bool_()),
            pa.field("source", pa.string()),
            pa.field("iteration", pa.int32()),
            pa.field("model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(self, config: SelfImproveConfig, model_name: str, stage: str = "direct") -> None:
        """`stage` is `direct` or `rationalize` for STaR; other modes use `direct`."""
        self.config = config
        self.model_name = model_name
        self.stage = stage
        self.programs = config.checker == "program"
        self.checker = get_checker("numeric" if self.programs else config.checker)
        self.examples = load_few_shot(config.few_shot_path, self.programs)
        self.runner = CodeRunner(config.sandbox) if self.programs else None
        self._verdicts: dict[str, Verdict] = {}  # of the slice being finished
        self.width = config.n if config.mode in ("rejection", "self_consistency") else 1
        self.counts_input_documents = stage != "rationalize"

    def sampling_overrides(self) -> dict[str, Any]:
        return {"n": self.width}

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """The job's sampling with `n`; a program of thought also stops at the next problem
        the model goes on to invent (`Question:`), which would be cut anyway. With
        `constrain`, a program is decoded into `program_format(max_tokens)`, a rationale into
        `answer_line_regex(max_tokens)`."""
        sampling = super().stage_sampling(job)
        if self.programs:
            constraint = None
            if self.config.constrain:
                constraint = Constraint("regex", program_format(sampling.max_tokens).regex)
            return dataclasses.replace(sampling, stop=PROGRAM_STOP_STRINGS, constraint=constraint)
        if self.config.constrain:
            regex = answer_line_regex(sampling.max_tokens)
            return dataclasses.replace(sampling, constraint=Constraint("regex", regex))
        return sampling

    def estimate_rows(self, doc: Document) -> int:
        return self.width

    def prompt(self, question: str, reference: str | None) -> str:
        if self.programs:
            return self.program_prompt(question, reference)
        hinted = self.stage == "rationalize"
        instruction = self.config.templates.get("instruction", INSTRUCTION)
        hint_template = self.config.templates.get("hint", HINT)
        parts = [instruction, ""]
        for ex in self.examples:
            hint = hint_template.format(answer=ex["answer"]) if hinted else ""
            parts += [
                f"Q: {ex['question']}{hint}",
                f"A: {ex['rationale']}",
                f"#### {ex['answer']}",
                "",
            ]
        hint = hint_template.format(answer=reference) if hinted else ""
        parts += [f"Q: {question}{hint}", "A:"]
        return "\n".join(parts)

    def program_prompt(self, question: str, reference: str | None) -> str:
        """Program of Thoughts' GSM8K format: each problem, the header line, its program."""
        hinted = self.stage == "rationalize"
        hint_template = self.config.templates.get("hint", HINT)
        parts = [self.config.templates.get("instruction", PROGRAM_INSTRUCTION), ""]
        for ex in self.examples:
            hint = hint_template.format(answer=ex["answer"]) if hinted else ""
            parts += [f"Question: {ex['question']}{hint}", PROGRAM_HEADER, ex["rationale"], ""]
        hint = hint_template.format(answer=reference) if hinted else ""
        parts += [f"Question: {question}{hint}", PROGRAM_HEADER]
        return "\n".join(parts) + "\n"

    def prepare_finish(
        self, pairs: list[tuple[Candidate, EngineResult]], progress: Callable[[], None]
    ) -> None:
        """Run every sample's program of this slice at once, in the sandbox's pool."""
        self._verdicts = {}
        if not self.programs or not pairs:
            return
        programs = [cut_program(t) for _, r in pairs for t, _, _ in r.all_samples()]
        self._verdicts = dict(zip(programs, self._run(programs, progress), strict=True))

    def _run(
        self, programs: list[str], progress: Callable[[], None] | None = None
    ) -> list[Verdict]:
        assert self.runner is not None  # made when checker is program
        return self.runner.run([p + _PRINT_ANS for p in programs], progress)

    def _verdict(self, program: str) -> Verdict:
        if program not in self._verdicts:
            self._verdicts[program] = self._run([program])[0]
        return self._verdicts[program]

    def expand(self, doc: Document) -> list[Candidate]:
        rid = row_id(doc.source_id, "self_improve", self.stage)
        if doc.error is not None:
            return [Candidate(rid, doc.source_id, error=doc.error, width=self.width)]
        if not doc.text or not doc.text.strip():
            return [Candidate(rid, doc.source_id, error="empty question", width=self.width)]
        reference = None
        if self.config.answer_column:
            raw = doc.extra.get(self.config.answer_column)
            reference = self.checker.extract(str(raw)) if raw is not None else None
            if reference is None and self.config.mode != "self_consistency":
                return [
                    Candidate(
                        rid,
                        doc.source_id,
                        error=f"reference answer has no {self.checker.name} final answer",
                        width=self.width,
                    )
                ]
        return [
            Candidate(
                rid,
                doc.source_id,
                fields={"question": doc.text, "reference_answer": reference},
                messages=[{"role": "user", "content": self.prompt(doc.text, reference)}],
                width=self.width,
            )
        ]

    def _row(
        self, candidate: Candidate, index: int, sample: tuple, answer: str | None, source: str
    ) -> dict:
        text, n_tokens, finish_reason = sample
        reference = candidate.fields["reference_answer"]  # text is already cut (finish)
        return {
            "id": candidate.sample_id(index),
            "source_id": candidate.source_id,
            "question": candidate.fields["question"],
            "rationale": text.strip(),
            "answer": answer,
            "reference_answer": reference,
            "correct": None if reference is None else answer == reference,
            "source": source,
            "iteration": self.config.iteration,
            "model": self.model_name,
            "n_input_tokens": candidate.fields.get("n_input_tokens", 0),
            "n_output_tokens": n_tokens,
            "finish_reason": finish_reason,
        }

    def finish(self, candidate: Candidate, result: EngineResult) -> list[Outcome]:
        candidate.fields["n_input_tokens"] = result.n_input_tokens
        failed: list[str | None] = []
        if self.programs:
            samples = [(cut_program(t), n, why) for t, n, why in result.all_samples()]
            verdicts = [self._verdict(text) for text, _, _ in samples]
            answers = [program_answer(v) for v in verdicts]
            failed = [None if v.passed else f"program_{v.status}" for v in verdicts]
        else:
            samples = [(cut_at_first_answer(t), n, why) for t, n, why in result.all_samples()]
            answers = [self.checker.extract(text) for text, _, _ in samples]
        reference = candidate.fields["reference_answer"]
        mode = self.config.mode
        if mode == "self_consistency":
            return self._vote(candidate, samples, answers)
        outcomes: list[Outcome] = []
        kept = 0
        question = candidate.fields["question"]
        for i, (sample, answer) in enumerate(zip(samples, answers, strict=True)):
            correct = self.checker.is_correct(answer, reference)
            if failed and failed[i] is not None:
                outcomes.append(Dropped(str(failed[i])))
            elif not correct:
                outcomes.append(
                    Dropped("incorrect_with_hint" if self.stage == "rationalize" else "incorrect")
                )
            elif self.stage == "rationalize" and mentions_hint(sample[0]):
                outcomes.append(Dropped("mentions_hint"))
            elif (
                self.stage == "rationalize"
                and self.programs
                and hardcodes_answer(sample[0], question, answer)
            ):
                outcomes.append(Dropped("answer_hardcoded"))
            elif mode == "rejection" and kept >= self.config.k:
                outcomes.append(Dropped("over_k"))
            else:
                kept += 1
                source = "rationalized" if self.stage == "rationalize" else "direct"
                outcomes.append(Kept(self._row(candidate, i, sample, answer, source)))
        return outcomes

    def _vote(
        self, candidate: Candidate, samples: list, answers: list[str | None]
    ) -> list[Outcome]:
        votes = Counter(a for a in answers if a is not None)
        if not votes:
            return [Dropped("no_answer")] * len(samples)
        # ties go to the smallest answer string, so the same samples always give the same vote
        majority, count = min(votes.items(), key=lambda kv: (-kv[1], kv[0]))
        if count / len(samples) < self.config.min_agreement:
            return [Dropped("no_majority")] * len(samples)
        return [
            Kept(self._row(candidate, i, sample, answer, "majority"))
            if answer == majority
            else Dropped("disagrees_with_majority")
            for i, (sample, answer) in enumerate(zip(samples, answers, strict=True))
        ]
