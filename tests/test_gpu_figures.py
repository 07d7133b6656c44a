"""benchmarks/gpu_figures.sh (issue 33's one-call GPU measurement) checked on CPU without an
engine: every step it would run on a GPU parses as a `synth-ray bench` command whose config,
overrides and sweep values load; and its summary prices records as datatrove does and states
each goal as met, missed or not measured. (Its --tiny mode, every step on the embedded model,
ran on CPU by hand: the note of issue 33.)

    python -m pytest tests/test_gpu_figures.py
"""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from conftest import REPO

from synth_ray.bench.gpu_summary import gpu_hours_per_billion, summary
from synth_ray.bench.runner import BenchOptions, parse_sweep

SCRIPT = REPO / "benchmarks" / "gpu_figures.sh"


def _plan(tmp_path, **env) -> dict[str, list[str]]:
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out"), "--plan"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    steps = {}
    for line in done.stdout.splitlines():
        label, _, command = line.partition(": ")
        steps[label.split(" (")[0]] = shlex.split(command)
    return steps


def test_every_gpu_step_is_a_bench_command_whose_config_loads(tmp_path):
    from synth_ray.config import load_config

    first = _plan(tmp_path)
    second = _plan(tmp_path, CALL="2")
    third = _plan(tmp_path, CALL="3")
    assert list(first) == ["warm-qwen", "skewed"]
    assert list(second) == ["warm-smol", "smol-default", "warm-smol-tuned", "smol-tuned"]
    assert list(third) == ["warm-smol", "smol-seqs", "rephrase-ngram"]
    assert not (tmp_path / "out").exists()  # --plan starts nothing, writes nothing
    for label, argv in {**first, **second, **third}.items():
        assert argv[1:4] == ["-m", "synth_ray", "bench"], label
        args = argv[5:]
        overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        option = {a[2:]: args[i + 1] for i, a in enumerate(args) if a.startswith("--")}
        sweep = parse_sweep(option.get("sweep"))
        opts = BenchOptions(
            REPO / argv[4], overrides, tuple(option["systems"].split(",")),
            int(option["prompts"]), option.get("lengths", "fixed"),
            option.get("source", "questions"), sweep,
        )  # fmt: skip
        for value in sweep[1] if sweep else [None]:
            extra = [f"{sweep[0]}={value}"] if sweep else []
            job = load_config(opts.config, overrides + extra)
            assert job.engine.extra_args["load_format"] == "dummy", label
            assert job.engine.enforce_eager is False, label  # CUDA graphs on a GPU
    skewed = first["skewed"]
    assert skewed[skewed.index("--prompts") + 1] == "8192" and "ray-data" in " ".join(skewed)
    tuned = " ".join(second["smol-tuned"])
    assert "engine.max_num_seqs=512" in tuned and "max_num_batched_tokens=32768" in tuned
    assert "num_speculative_tokens: 6" in tuned
    # each warm-up compiles what its step runs: the same engine settings
    assert second["warm-smol-tuned"][-6:] == second["smol-tuned"][-6:]
    assert all(a.endswith("/warm") for k, v in second.items() if k.startswith("warm")
               for a in [v[v.index("--results") + 1]])  # fmt: skip
    slices = sum(int(line) for line in _slices(tmp_path, "1") + _slices(tmp_path, "2"))
    assert slices <= 2 * 460  # two calls of at most 8 minutes, model folders and summary too


def _slices(tmp_path, call: str) -> list[str]:
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out"), "--plan"], cwd=REPO, capture_output=True,
        text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "CALL": call},
    )  # fmt: skip
    return [line.split("(at most ")[1].split("s)")[0] for line in done.stdout.splitlines()]


def _record(label: str, system: str, steady: float | None, whole: float, **more) -> dict:
    return {"label": label, "sweep": "", "system": system, "steady_tok_s": steady,
            "whole_tok_s": whole, "machine": {"gpu": "NVIDIA H100 80GB HBM3, 81559 MiB"},
            **more}  # fmt: skip


def test_the_summary_prices_each_record_and_states_each_goal(tmp_path):
    assert gpu_hours_per_billion(45_500.0) == 6.1
    assert gpu_hours_per_billion(None) is None
    records = [
        _record("skewed", "synth-ray", 13_000.0, 8_000.0, steady_ratio=0.96),
        _record("skewed", "vllm", 13_500.0, 9_000.0, steady_ratio=1.0),
        _record("skewed", "ray-data", None, 5_000.0),
        _record("smol-tuned", "synth-ray", 46_000.0, 20_000.0),
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "steps.txt").write_text("smol-seqs: timed out after 120s\n")
    text = summary([tmp_path])
    assert "| skewed | - | ray-data | 5000.0 | whole process | 55.6 |" in text  # no steady
    assert "| smol-tuned | - | synth-ray | 46000.0 | steady | 6.0 |" in text
    assert "steady / raw vLLM >= 1.0: 0.96x, missed" in text
    assert "Ray Data LLM >= 1.5: 1.6x, met" in text
    assert "46,000 steady (1.01x), met" in text and "not an H100" not in text
    assert "- smol-seqs: timed out after 120s" in text
    assert (tmp_path / "summary.md").read_text() == text


@pytest.mark.parametrize("missing", ["skewed", "smol-tuned"])
def test_a_goal_whose_step_did_not_run_is_not_measured(tmp_path, missing):
    records = [
        _record("skewed", "synth-ray", 13_000.0, 8_000.0, steady_ratio=1.02),
        _record("skewed", "vllm", 13_500.0, 9_000.0, steady_ratio=1.0),
        _record("smol-tuned", "synth-ray", 30_000.0, 20_000.0),
    ]
    kept = [r for r in records if r["label"] != missing]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    text = summary([tmp_path])
    if missing == "skewed":
        assert "steady / raw vLLM >= 1.0: not measured" in text
        assert "30,000 steady (0.66x), missed" in text
    else:
        assert "steady / raw vLLM >= 1.0: 1.02x, met" in text
        assert "datatrove's H100 figure): not measured" in text


def test_several_calls_are_read_together_and_a_rerun_step_replaces_its_records(tmp_path):
    """Each call of the script is a fresh machine and a fresh OUT: the summary reads them
    together, here; a step run again (in a later call) counts once, with its later figures."""
    first, second = tmp_path / "call1", tmp_path / "call2"
    for folder, records, steps in [
        (first, [_record("skewed", "synth-ray", 9_000.0, 5_000.0, steady_ratio=0.9),
                 _record("skewed", "vllm", 10_000.0, 6_000.0, steady_ratio=1.0)],
         "skewed: ran out of its 300s\n"),
        (second, [_record("skewed", "synth-ray", 13_000.0, 8_000.0, steady_ratio=1.01),
                  _record("skewed", "vllm", 12_900.0, 8_100.0, steady_ratio=1.0),
                  _record("smol-tuned", "synth-ray", 40_000.0, 20_000.0)],
         "skewed: done in 250s\n"),
    ]:  # fmt: skip
        folder.mkdir()
        (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (folder / "steps.txt").write_text(steps)
    text = summary([first, second])
    assert "1.01x, met" in text and "0.9x" not in text
    assert text.count("| skewed |") == 2 and "40,000 steady" in text
    assert "- skewed: ran out of its 300s" in text and "- skewed: done in 250s" in text
    assert (first / "summary.md").exists()
