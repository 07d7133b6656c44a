"""What prefix caching is worth to a few-shot method: self_improve with it on and off.

    python benchmarks/bench_prefix_cache.py [--questions 96] [--max-tokens 8]

Every self_improve prompt starts with the same instruction and few-shot rationales (about 250
tokens); only the question at the end differs, and requests go out in that order. With
`engine.enable_prefix_caching` the shared prefix is computed once and reused. The benchmark
runs the identical job twice (rejection sampling, n=1, short outputs so prefill dominates) and
reports requests/s and prompt tokens/s over the generation window. Results are appended to
benchmarks/results.md and results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import machine, machine_line, run_synth_ray_config  # noqa: E402


def make_questions(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        a, b, c = 3 + i % 7, 4 + i % 11, 2 + i % 5
        rows.append(
            {
                "id": f"q{i}",
                "question": f"A shop packs {a} boxes with {b} pencils each and sells {c} boxes. How many pencils are left in stock?",
                "answer": f"{a} * {b} - {c} * {b} = {(a - c) * b}\n#### {(a - c) * b}",
            }
        )
    return rows


def run(work: Path, questions: Path, caching: bool, args) -> dict:
    out = work / f"out-{caching}"
    config = work / f"job-{caching}.yaml"
    config.write_text(f"""
method: self_improve
input: {{path: {questions}, id_column: id}}
output: {{path: {out}, rows_per_shard: 100000}}
engine: {{model: {args.model}, max_model_len: 1024, enforce_eager: true, enable_prefix_caching: {str(caching).lower()}}}
sampling: {{temperature: 0.7, max_tokens: {args.max_tokens}, ignore_eos: true}}
self_improve: {{mode: rejection, n: 1, k: 1}}
""")
    wall, last_run, stats = run_synth_ray_config(config, out)
    gen = last_run["generation_wall_s"]
    return {
        "prefix_caching": caching,
        "generation_s": round(gen, 2),
        "wall_s": round(wall, 1),
        "requests_per_s": round(stats["rows_in"] / gen, 2),
        "prompt_tok_s": round(stats["input_tokens"] / gen, 1),
        "input_tokens": stats["input_tokens"],
        "output_tokens": stats["output_tokens"],
        "dtype": last_run.get("engine_dtype"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="synth-ray-prefix-"))
    questions = work / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in make_questions(args.questions)))
    results = {True: [], False: []}
    for _ in range(args.repeats):
        for caching in (False, True):
            results[caching].append(run(work, questions, caching, args))
    best = {c: max(rs, key=lambda r: r["requests_per_s"]) for c, rs in results.items()}
    speedup = round(best[True]["requests_per_s"] / best[False]["requests_per_s"], 2)
    m = machine()
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "benchmark": "prefix_cache",
        "machine": m,
        "questions": args.questions,
        "max_tokens": args.max_tokens,
        "model": args.model,
        "off": best[False],
        "on": best[True],
        "speedup": speedup,
    }
    with open(HERE / "results.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    prompt_len = best[True]["input_tokens"] // args.questions
    table = (
        f"\n## {record['date']} prefix caching, self_improve few-shot: {args.questions} questions, "
        f"~{prompt_len} prompt tokens each, {args.max_tokens} output tokens\n"
        f"Machine: {machine_line(m)}; dtype {best[True]['dtype']}; best of {args.repeats}.\n\n"
        "| prefix caching | requests/s | prompt tok/s | generation s |\n|---|---|---|---|\n"
        f"| off | {best[False]['requests_per_s']} | {best[False]['prompt_tok_s']} | {best[False]['generation_s']} |\n"
        f"| on | {best[True]['requests_per_s']} | {best[True]['prompt_tok_s']} | {best[True]['generation_s']} |\n"
        f"| speedup | {speedup} | | |\n"
    )
    with open(HERE / "results.md", "a") as fh:
        fh.write(table)
    print(table)


if __name__ == "__main__":
    main()
