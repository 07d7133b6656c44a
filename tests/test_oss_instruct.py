"""Method `oss_instruct` (Magicoder's OSS-Instruct): snippet draws, the prompt, parsing, rows,
tests mode with a fake and with the real sandbox, bad configs; one run on the real engine.

    pytest tests/test_oss_instruct.py
"""

from __future__ import annotations

import ast
import re

import pyarrow.parquet as pq
import pytest
from fake_backend import FakeBackend
from test_decontamination import HUMAN_EVAL, write_jsonl

from synth_ray.config import validate_config
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.engine.requests import EngineResult
from synth_ray.errors import ConfigError
from synth_ray.io.inputs import Document
from synth_ray.io.output_store import OutputStore
from synth_ray.methods import oss_instruct
from synth_ray.methods.base import Dropped, Kept
from synth_ray.methods.oss_instruct import (
    OSSInstructConfig,
    OSSInstructMethod,
    benchmark_strings,
    parse_sections,
    pick_snippet,
)
from synth_ray.methods.oss_instruct_prompts import PROMPT, SYSTEM, TESTS_PROMPT
from synth_ray.runtime.job import run_job
from synth_ray.verify.sandbox import SandboxConfig, Verdict

SOURCE = "".join(f"line_{i} = {i}\n" if i % 4 else "\n" for i in range(1, 61))
WELL_FORMED = """[Problem Description]
Write a function `add(a, b)` that returns the sum of two integers.

[Solution]
```python
def add(a, b):
    return a + b
```
"""


def rows(path):
    return [r for f in OutputStore(path).data_files() for r in pq.read_table(f).to_pylist()]


def result(text: str, finish_reason: str = "stop") -> EngineResult:
    return EngineResult("r", text, 10, 20, finish_reason)


def method(**section) -> OSSInstructMethod:
    return OSSInstructMethod(OSSInstructConfig(**section), "model-x", seed=0)


def test_snippets_are_seeded_within_bounds_and_never_blank():
    lines = SOURCE.splitlines(keepends=True)
    seen = set()
    for i in range(200):
        snippet = pick_snippet(SOURCE, f"0:file{i}.py:snippet", 2, 6)
        assert snippet == pick_snippet(SOURCE, f"0:file{i}.py:snippet", 2, 6)
        assert 2 <= snippet.end - snippet.start + 1 <= 6
        assert snippet.text == "".join(lines[snippet.start - 1 : snippet.end])
        assert snippet.text.strip()
        seen.add(snippet.lines)
    assert len(seen) > 50  # start and length vary with the key
    assert pick_snippet("x = 1\n", "k", 5, 15).lines == "1-1"  # shorter than min: all of it
    assert pick_snippet("\n\n   \n", "k") is None
    # mostly blank: a blank draw is drawn again (or falls back to the non-blank line)
    sparse = "\n" * 200 + "value = 42\n" + "\n" * 200
    assert pick_snippet(sparse, "k", 1, 1).text == "value = 42\n"


def test_prompt_is_magicoders_with_the_snippet_verbatim():
    m = method()
    doc = Document(0, "pkg/cache.py", SOURCE)
    (candidate,) = m.expand(doc)
    snippet = candidate.fields["seed_snippet"]
    system, user = candidate.messages
    assert system == {"role": "system", "content": SYSTEM}
    assert user["content"] == PROMPT.replace("{code}", snippet)
    assert f"```\n{snippet}\n```" in user["content"]
    assert candidate.fields["language"] == "Python" and candidate.source_id == "pkg/cache.py"
    assert candidate.row_id == m.expand(doc)[0].row_id  # deterministic
    assert method().expand(Document(0, "pkg/cache.py", SOURCE))[0].fields == candidate.fields
    many = [Document(i, f"f{i}.py", SOURCE) for i in range(20)]
    reseeded = OSSInstructMethod(OSSInstructConfig(), "model-x", seed=7)
    assert [m.expand(d)[0].fields for d in many] != [reseeded.expand(d)[0].fields for d in many]
    hinted = method(language="Go", templates={"system": ""}).expand(doc)[0]
    assert [m["role"] for m in hinted.messages] == ["user"]
    assert hinted.messages[0]["content"].endswith("Write the [Solution] in Go.")
    assert hinted.fields["language"] == "Go"
    tests = method(tests=True).expand(doc)[0]
    assert tests.messages[1]["content"] == TESTS_PROMPT.replace(
        "{code}", tests.fields["seed_snippet"]
    )
    assert [c.error for c in method().expand(Document(1, "e.py", None, "empty file"))] == [
        "empty file"
    ]
    assert [c.error for c in method().expand(Document(1, "b.py", " \n"))] == ["empty seed"]
    assert method().expand(Document(1, "rows.parquet:3", "x = 1"))[0].fields["language"] is None


@pytest.mark.parametrize(
    ("text", "problem", "solution"),
    [
        (WELL_FORMED, "Write a function `add(a, b)`", "```python\ndef add(a, b):"),
        ("## [Problem Description]\nP text\n\n## [Solution]\nS text\n", "P text", "S text"),
        ("**[Problem Description]**\nP\n**[Solution]**\nS\n", "P", "S"),
        (
            "[PROBLEM DESCRIPTION]: inline problem\n[solution]: inline solution\n",
            "inline problem",
            "inline solution",
        ),  # fmt: skip
        # no brackets: a heading-only line counts
        ("### Problem Description\nP\n\n### Solution\nS\n", "P", "S"),
        ("**Problem Description:**\nP\n**Solution:**\n```\nx = 1\n```\n", "P", "```\nx = 1"),
        ("Intro.\n[Problem Description]\nP\n[Solution]\nS [Tests] stays\n", "P", "S [Tests]"),
    ],
)
def test_parses_sections_and_heading_variants(text, problem, solution):
    sections = parse_sections(text)
    assert sections.problem.startswith(problem) and sections.solution.startswith(solution)
    assert sections.tests is None


@pytest.mark.parametrize(
    "text",
    [
        "Just some code:\n```python\nprint(1)\n```\n",
        "[Problem Description]\nOnly a problem.\n",
        "[Solution]\nS\n[Problem Description]\nP\n",  # out of order
        "[Problem Description] and [Solution] on one line\nbody\n",
        # a heading inside a code block is code, not a section
        "### Problem Description\nP\n```python\n# Solution\nx = 1\n```\n",
    ],
)
def test_malformed_responses_do_not_parse(text):
    assert parse_sections(text) is None


def test_finish_keeps_or_names_the_filter():
    m = method()
    (candidate,) = m.expand(Document(0, "src/a.py", SOURCE))
    kept = m.finish(candidate, result(WELL_FORMED))
    assert isinstance(kept, Kept)
    row = kept.row
    assert row["source_id"] == "src/a.py" and row["id"] == candidate.row_id
    assert row["seed_snippet"] == candidate.fields["seed_snippet"]
    start, end = map(int, row["seed_lines"].split("-"))
    assert "".join(SOURCE.splitlines(keepends=True)[start - 1 : end]) == row["seed_snippet"]
    assert row["problem"].startswith("Write a function") and "return a + b" in row["solution"]
    assert row["tests"] is None and row["check_status"] is None and row["check_reason"] is None
    assert row["model"] == "model-x" and row["finish_reason"] == "stop"
    assert set(row) == set(OSSInstructMethod.schema.names)
    cases = {
        "truncated": result(WELL_FORMED, "length"),
        "unparsed": result("Here is a problem about sums."),
        "empty_problem": result("[Problem Description]\n\n[Solution]\nx = 1\n"),
        "empty_solution": result("[Problem Description]\nP\n[Solution]\n   \n"),
    }
    for name, completion in cases.items():
        assert m.finish(candidate, completion) == Dropped(name), name


HE0_DOCSTRING = HUMAN_EVAL[0]["prompt"].split('"""')[1].strip()
HE0_SOLUTION = HUMAN_EVAL[0]["canonical_solution"]


def answer(problem: str, solution_body: str) -> str:
    """A completion in Magicoder's format: the problem, then a solution function."""
    return (
        f"[Problem Description]\n{problem}\n\n[Solution]\n```python\n"
        f"def has_close_elements(numbers, threshold):\n{solution_body}```\n"
    )


def decontaminating(tmp_path, **section) -> OSSInstructMethod:
    file = write_jsonl(tmp_path / "HumanEval.jsonl", HUMAN_EVAL)
    config = OSSInstructConfig(decontaminate=[{"name": "human_eval", "path": str(file)}], **section)
    return OSSInstructMethod(config, "model-x", seed=0, benchmarks=benchmark_strings(config))


def test_rows_holding_a_benchmark_string_are_dropped_naming_it(tmp_path):
    """Magicoder's rule: a HumanEval docstring or solution, verbatim in any case, in the
    problem or the solution drops the row; anything short of verbatim is kept."""
    m = decontaminating(tmp_path)
    (candidate,) = m.expand(Document(0, "src/a.py", SOURCE))
    clean = "Write `has_close_elements(numbers, threshold)`."
    contaminated = {
        "docstring in the problem": answer(f"Implement:\n    {HE0_DOCSTRING}", "    pass\n"),
        "upper-cased docstring": answer(HE0_DOCSTRING.upper(), "    pass\n"),
        "solution in the solution": answer(clean, HE0_SOLUTION),
        "both": answer(HE0_DOCSTRING, HE0_SOLUTION),
    }
    reasons = {k: m.finish(candidate, result(v)) for k, v in contaminated.items()}
    assert reasons == {
        "docstring in the problem": Dropped("contaminated_human_eval_docstrings"),
        "upper-cased docstring": Dropped("contaminated_human_eval_docstrings"),
        "solution in the solution": Dropped("contaminated_human_eval_solutions"),
        "both": Dropped("contaminated_human_eval_docstrings"),  # the first benchmark part
    }
    near_misses = [
        answer(" ".join(HE0_DOCSTRING.split()), "    pass\n"),  # the docstring re-wrapped
        answer(clean, HE0_SOLUTION.replace("elem2", "other")),  # one name changed
        answer(clean, HE0_SOLUTION.replace("\n    ", "\n")),  # indented one level less
        answer("Write `add(x, y)`.", "    return x + y\n"),  # HumanEval/53: too generic
        WELL_FORMED,
    ]
    for text in near_misses:
        assert isinstance(m.finish(candidate, result(text)), Kept), text
    # the seed snippet is not one of Magicoder's columns
    seeded = method().expand(Document(0, "he.py", HUMAN_EVAL[0]["prompt"] * 3))[0]
    assert isinstance(m.finish(seeded, result(WELL_FORMED)), Kept)
    assert isinstance(method().finish(candidate, result(contaminated["both"])), Kept)


def test_contaminated_rows_are_not_run_in_tests_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(oss_instruct, "CodeRunner", FakeRunner)
    FakeRunner.calls = []
    m = decontaminating(tmp_path, tests=True)
    candidates = [m.expand(Document(i, f"f{i}.py", SOURCE))[0] for i in range(2)]
    leaked = TESTS_RESPONSE.replace("return a + b", HE0_SOLUTION.strip())
    pairs = [(candidates[0], result(TESTS_RESPONSE)), (candidates[1], result(leaked))]
    m.prepare_finish(pairs, lambda: None)
    assert len(FakeRunner.calls) == 1 and len(FakeRunner.calls[0]) == 1
    assert isinstance(m.finish(*pairs[0]), Kept)
    assert m.finish(*pairs[1]) == Dropped("contaminated_human_eval_solutions")
    assert len(FakeRunner.calls) == 1


def test_decontamination_drops_are_counted_in_the_job_stats(tmp_path, embedded_model):
    folder = seeds(tmp_path / "seeds")
    benchmark = write_jsonl(tmp_path / "HumanEval.jsonl", HUMAN_EVAL)
    tokenizer = PromptRenderer.from_model(embedded_model).tokenizer

    def respond(request):  # the JavaScript seed's answer leaks HumanEval/0's solution
        leaks = "retry" in tokenizer.decode(request.prompt_token_ids)
        text = answer("Write it.", HE0_SOLUTION if leaks else "    return False\n")
        return EngineResult(request.request_id, text, len(request.prompt_token_ids), 20, "stop")

    config = oss_config(
        tmp_path, folder, decontaminate=[{"name": "human_eval", "path": str(benchmark)}]
    )
    summary = run_job(config, show_progress=False, backend=FakeBackend(responder=respond))
    stats = summary.stats
    assert stats["dropped_by_filter"] == {"contaminated_human_eval_solutions": 1}
    assert stats["rows_out"] == 1 and stats["accounted"]
    assert [r["source_id"] for r in rows(tmp_path / "out")] == ["pkg/cache.py"]


TESTS_RESPONSE = """[Problem Description]
Write `add(a, b)`.

[Solution]
```python
def add(a, b):
    return a + b
```

[Tests]
```python
assert add(1, 2) == 3
assert add(-1, 1) == 0
```
"""


class FakeRunner:
    """Stands in for the sandbox: a verdict per program from what it holds."""

    calls: list[list[str]] = []

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config

    def run(self, programs: list[str], on_each=None) -> list[Verdict]:
        FakeRunner.calls.append(list(programs))
        out = []
        for program in programs:
            if "while True" in program:
                out.append(Verdict("timeout", "ran past 10 s", ""))
            elif "MemoryError" in program:
                out.append(Verdict("crash", "over its 512 MiB memory", ""))
            elif "== 4" in program:
                out.append(Verdict("fail", "AssertionError", ""))
            else:  # as the real program does: its tests-done line last
                marker = ast.literal_eval(program.rstrip().splitlines()[-1][len("print(") : -1])
                out.append(Verdict("pass", "", f"{marker}\n"))
        return out


def test_tests_mode_runs_a_slice_at_once_and_keeps_passing_rows(monkeypatch):
    monkeypatch.setattr(oss_instruct, "CodeRunner", FakeRunner)
    FakeRunner.calls = []
    m = method(tests=True)
    docs = [Document(i, f"f{i}.py", SOURCE) for i in range(7)]
    candidates = [m.expand(d)[0] for d in docs]
    texts = [
        TESTS_RESPONSE,
        TESTS_RESPONSE.replace("== 3", "== 4"),
        TESTS_RESPONSE.replace("return a + b", "while True: pass"),
        TESTS_RESPONSE.replace("return a + b", "raise MemoryError"),
        TESTS_RESPONSE.replace("```python\ndef", "def").replace("a + b\n```", "a + b"),
        TESTS_RESPONSE.split("[Tests]")[0],
        TESTS_RESPONSE.replace("assert", "print"),
    ]
    pairs = [(c, result(t)) for c, t in zip(candidates, texts, strict=True)]
    m.prepare_finish(pairs, lambda: None)
    assert len(FakeRunner.calls) == 1 and len(FakeRunner.calls[0]) == 4  # checkable ones
    outcomes = [m.finish(c, r) for c, r in pairs]
    assert len(FakeRunner.calls) == 1  # finish read the verdicts
    assert outcomes[1:] == [
        Dropped("tests_failed"),
        Dropped("tests_timeout"),
        Dropped("tests_crashed"),
        Dropped("no_code"),
        Dropped("no_tests"),
        Dropped("no_tests"),
    ]
    row = outcomes[0].row
    assert row["check_status"] == "pass" and row["check_reason"] == ""
    assert row["tests"] == "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"
    assert row["language"] == "Python"
    program = FakeRunner.calls[0][0]
    assert program.index("def add") < program.index("assert add(1, 2)")
    # no verdict prepared (finish alone): the program runs there
    assert isinstance(m.finish(candidates[0], result(TESTS_RESPONSE)), Kept)
    assert len(FakeRunner.calls) == 2


def test_tests_mode_on_the_real_sandbox():
    from synth_ray.verify.sandbox import CodeRunner, SandboxError

    try:
        CodeRunner(SandboxConfig(timeout_s=5)).check_available()
    except SandboxError as err:
        pytest.skip(str(err))
    m = method(tests=True, sandbox={"timeout_s": 5, "workers": 2})
    candidates = [m.expand(Document(i, f"f{i}.py", SOURCE))[0] for i in range(4)]
    exits_early = "return a - b\n\nimport os\nos._exit(0)"  # its failing asserts never run
    pairs = [
        (candidates[0], result(TESTS_RESPONSE)),
        (candidates[1], result(TESTS_RESPONSE.replace("return a + b", "return a - b"))),
        (candidates[2], result(TESTS_RESPONSE.replace("return a + b", exits_early))),
        (candidates[3], result(TESTS_RESPONSE.replace("return a + b", "return a + b\nprint('x')"))),
    ]
    m.prepare_finish(pairs, lambda: None)
    outcomes = [m.finish(c, r) for c, r in pairs]
    assert isinstance(outcomes[0], Kept) and outcomes[0].row["check_status"] == "pass"
    assert outcomes[1] == Dropped("tests_failed")
    assert outcomes[2] == Dropped("tests_not_run")
    assert isinstance(outcomes[3], Kept)  # its own output before the tests is fine


class Echo:
    """Answers each prompt with a well-formed response quoting the prompt's snippet."""

    def __init__(self, embedded_model: str) -> None:
        self.tokenizer = PromptRenderer.from_model(embedded_model).tokenizer
        self.prompts: list[str] = []

    def __call__(self, request):
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        self.prompts.append(prompt)
        snippet = prompt.split("```\n", 1)[1].split("\n```", 1)[0]
        text = f"[Problem Description]\nExplain:\n{snippet}\n[Solution]\nprint({len(snippet)})\n"
        return EngineResult(request.request_id, text, len(request.prompt_token_ids), 20, "stop")


def seeds(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pkg").mkdir(exist_ok=True)
    (folder / "pkg" / "cache.py").write_text(SOURCE)
    (folder / "retry.js").write_text(
        "async function retry(fn, n) {\n  for (let i = 0; i < n; i++) {\n"
        "    try { return await fn(); } catch (e) { if (i === n - 1) throw e; }\n  }\n}\n"
    )
    (folder / "blob.c").write_bytes(b"\xff\xfe\x00binary")
    return folder


def oss_config(tmp_path, folder, max_tokens=64, **section):
    return validate_config(
        {
            "method": "oss_instruct",
            "input": {"path": str(folder)},
            "output": {"path": str(tmp_path / "out"), "rows_per_shard": 2},
            "engine": {"max_model_len": 2048, "enforce_eager": True},
            "sampling": {"max_tokens": max_tokens, "temperature": 0.0},
            "oss_instruct": {"max_lines": 6, **section},
            "ray": {"num_cpus": 2},
        }
    )


def test_rows_keep_their_seed_file_and_lines(tmp_path, embedded_model):
    folder = seeds(tmp_path / "seeds")
    engine = Echo(embedded_model)
    summary = run_job(
        oss_config(tmp_path, folder), show_progress=False, backend=FakeBackend(responder=engine)
    )
    out = sorted(rows(tmp_path / "out"), key=lambda r: r["source_id"])
    assert [r["source_id"] for r in out] == ["pkg/cache.py", "retry.js"]
    assert [r["language"] for r in out] == ["Python", "JavaScript"]
    for row in out:
        text = (folder / row["source_id"]).read_text()
        start, end = map(int, row["seed_lines"].split("-"))
        assert "".join(text.splitlines(keepends=True)[start - 1 : end]) == row["seed_snippet"]
        assert row["seed_snippet"].rstrip("\n") in row["problem"]
        assert re.fullmatch(r"print\(\d+\)", row["solution"])
    stats = summary.stats
    assert stats["rows_in"] == 3 and stats["rows_out"] == 2 and stats["accounted"]
    assert stats["errored_by_stage"] == {"input": 1}  # the binary file
    assert all("Please gain inspiration" in p for p in engine.prompts)


def test_tests_mode_job_checks_every_row(tmp_path, embedded_model, monkeypatch):
    monkeypatch.setattr(oss_instruct, "CodeRunner", FakeRunner)
    monkeypatch.setattr(oss_instruct, "sandbox_or_config_error", lambda config, key: None)
    FakeRunner.calls = []
    folder = seeds(tmp_path / "seeds")

    def answer(request):
        return EngineResult(request.request_id, TESTS_RESPONSE, 100, 50, "stop")

    summary = run_job(
        oss_config(tmp_path, folder, tests=True),
        show_progress=False,
        backend=FakeBackend(responder=answer),
    )
    out = rows(tmp_path / "out")
    assert len(out) == 2 and all(r["check_status"] == "pass" for r in out)
    assert sum(len(c) for c in FakeRunner.calls) == 2
    assert summary.stats["accounted"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"min_lines": 9, "max_lines": 3}, "oss_instruct.min_lines: 9 is more than max_lines=3"),
        ({"tests": True, "language": "Rust"}, "oss_instruct.tests: runs Python asserts"),
        ({"language": " "}, "oss_instruct.language: empty"),
        ({"templates": {"prompt": "no snippet"}}, "templates.prompt: must contain {code}"),
        ({"templates": {"judge": "x"}}, "templates.judge: unknown template"),
        ({"max_lines": 0}, "oss_instruct.max_lines"),
        ({"decontaminate": ["gsm8k"]}, "gsm8k needs a file (no package ships it)"),
        ({"decontaminate": ["human_eval", "human_eval"]}, "human_eval listed twice"),
        ({"decontaminate": [{"name": "mine", "path": "m.jsonl"}]}, "needs a path and its fields"),
        ({"decontaminate": [{"name": "apps", "path": "a", "fields": ["q"]}]}, "omit fields"),
    ],
)
def test_bad_configs(tmp_path, section, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(
            {
                "method": "oss_instruct",
                "input": {"path": "x"},
                "output": {"path": str(tmp_path / "o")},
                "oss_instruct": section,
            }
        )
    ok = OSSInstructConfig(tests=True, language="python")
    assert ok.tests and ok.language == "python"


@pytest.mark.engine
def test_oss_instruct_on_real_engine(tmp_path, shared_engine):
    folder = tmp_path / "seeds"
    folder.mkdir()
    (folder / "stack.py").write_text(
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
        "    def push(self, item):\n        self.items.append(item)\n\n"
        "    def pop(self):\n        return self.items.pop()\n"
    )
    (folder / "fib.py").write_text(
        "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
        "    return a\n"
    )
    # constrained: the 135M model's answers are held to the two sections within max_tokens,
    # so none is truncated or unparsed (unaided, most are)
    config = oss_config(tmp_path, folder, max_tokens=192, max_lines=8, constrain=True)
    summary = run_job(config, show_progress=False, backend=shared_engine)
    stats = summary.stats
    assert stats["accounted"] and stats["rows_in"] == 2
    assert stats["rows_out"] == 2, stats["dropped_by_filter"]
    for row in rows(tmp_path / "out"):
        assert row["source_id"] in {"stack.py", "fib.py"}
        assert row["seed_snippet"] in (folder / row["source_id"]).read_text()
        assert row["problem"].strip() and row["solution"].strip()
        assert row["model"] == "SmolLM2-135M-Instruct"


def test_only_python_blocks_of_a_solution_are_run():
    from synth_ray.methods.oss_instruct import code_blocks

    text = "```bash\npip install x\n```\n```python\nx = 1\n```\n```\ny = 2\n```\n```text\nout\n```"
    assert code_blocks(text, python_only=True) == ["x = 1\n", "y = 2\n"]
    assert len(code_blocks(text)) == 4


# Answers shaped like the embedded model's under `oss_instruct.constrain`
CONSTRAINED = {
    False: (
        "[Problem Description]\nWrite a function that returns the mean of a list of numbers.\n\n"
        "[Solution]\n```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```",
        "Write a function that returns the mean of a list of numbers.",
        "```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```",
    ),
    True: (
        "[Problem Description]\nPush and pop on a stack.\n\n[Solution]\n```python\n"
        "items = []\nitems.append(1)\n```\n\n[Tests]\n```python\nassert items == [1]\n```",
        "Push and pop on a stack.",
        "```python\nitems = []\nitems.append(1)\n```",
    ),
}


@pytest.mark.parametrize("tests", [False, True])
def test_every_constrained_answer_parses_into_its_sections_within_max_tokens(tests):
    """`oss_instruct.constrain`: every string of the format (drawn from the regex itself,
    the longest ones included) splits into exactly the problem and solution written, neither
    empty, within max_tokens with its end-of-sequence token; in tests mode each has the code
    and the asserts the sandbox runs (unless its code holds a `[Tests]` marker, which the
    format does not ban)."""
    from regex_strings import longest, strings

    from synth_ray.engine.requests import Constraint, SamplingSpec
    from synth_ray.methods.oss_instruct import Sections, answer_format, checked_program

    form = answer_format(tests, 384)
    assert form.longest == longest(form.regex) <= 383
    sampling = method(constrain=True, tests=tests).stage_sampling(SamplingSpec(0.0, 1.0, 384))
    assert sampling.constraint == Constraint("regex", form.regex)
    assert method(tests=tests).stage_sampling(SamplingSpec(0.0, 1.0, 384)).constraint is None
    language = re.compile(form.regex)
    text, problem, solution = CONSTRAINED[tests]
    assert language.fullmatch(text)
    parsed = parse_sections(text, tests)
    assert (parsed.problem, parsed.solution) == (problem, solution)
    outside = [
        "Sure! Here is a problem:\n\n[Problem Description]\nAdd.\n\n[Solution]\n```\nx\n```",
        "[Problem Description]\nSee [Solution] below.\n\n[Solution]\n```\nx = 1\n```",
        "[Problem Description]\nAdd two numbers.\n\n[Solution]\n```\nx = `1`\n```",
        "[Problem Description]\n```\n\n[Solution]\n```\n[Problem Description]\n```",
        WELL_FORMED,  # Magicoder's own answers have prose and a trailing newline
    ]
    assert not any(language.fullmatch(t) for t in outside)
    for drawn in strings(form.regex, 200, seed=5 + tests):
        assert len(drawn) <= form.longest
        if tests and "[tests]" in drawn.lower().split("\n\n[tests]\n")[0]:
            continue  # code holding the marker: the tests start there (the sandbox judges)
        head, _, rest = drawn.partition("\n\n[Solution]\n")
        written_solution, _, written_tests = rest.partition("\n\n[Tests]\n")
        sections = parse_sections(drawn, tests)
        assert sections is not None and sections.problem and sections.solution
        assert sections.problem == head.removeprefix("[Problem Description]\n").strip()
        assert sections.solution == written_solution.strip()
        if tests:
            assert sections.tests == written_tests.strip()
            checked = checked_program(sections)
            assert isinstance(checked.program, str), checked  # not a Dropped
        else:
            assert isinstance(sections, Sections) and sections.tests is None


def test_constrain_is_refused_where_the_sections_cannot_fit(tmp_path):
    folder = tmp_path / "seeds"
    folder.mkdir()
    (folder / "a.py").write_text("x = 1\n")
    assert oss_config(tmp_path, folder, max_tokens=384, constrain=True).section.constrain
    with pytest.raises(ConfigError, match="oss_instruct.constrain: sampling.max_tokens 40 is"):
        oss_config(tmp_path, folder, max_tokens=40, constrain=True)
