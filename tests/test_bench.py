"""`synth-ray bench`: workloads, the report, option errors, and one real run of every system.

    .venv/bin/pytest -q tests/test_bench.py

The real run sends 4 prompts of at most 8 tokens through synth-ray, raw vLLM and Ray Data LLM
(about 2 minutes on 2 cores, most of it three engine starts): it checks the plumbing and that
every system generated exactly the planned tokens, never a speed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synth_ray.bench.constraints import CHOICES, conforms, vllm_fields
from synth_ray.bench.report import Row, markdown, plot, summarize, table_lines
from synth_ray.bench.runner import BenchOptions, parse_sweep
from synth_ray.bench.spec import RunSpec, SystemResult
from synth_ray.bench.systems import SYSTEMS, missing, synth_ray_job
from synth_ray.bench.workload import build_workload, output_budgets
from synth_ray.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_fixed_lengths_give_every_request_the_cap():
    assert output_budgets(5, 64, "fixed", seed=0) == [64] * 5
    assert output_budgets(3, 64, "natural", seed=0) == [64] * 3


def test_skewed_lengths_are_mostly_short_with_a_long_tail_and_reproducible():
    budgets = output_budgets(2000, 1024, "skewed", seed=7)
    assert budgets == output_budgets(2000, 1024, "skewed", seed=7)
    assert budgets != output_budgets(2000, 1024, "skewed", seed=8)
    assert all(1 <= b <= 1024 for b in budgets)
    ordered = sorted(budgets)
    assert ordered[len(ordered) // 2] <= 1024 / 4  # most requests short
    assert sum(b >= 512 for b in budgets) >= 20  # a few long ones hold a batch back
    with pytest.raises(ValueError, match="lengths 'long'"):
        output_budgets(1, 8, "long", seed=0)


def test_workload_renders_the_chat_template_once_for_every_system(embedded_model, tmp_path):
    fixed = build_workload(embedded_model, 6, 32, "fixed")
    assert len(set(fixed.prompts)) == 6  # all different: prefix caching cannot skip work
    assert all(
        "<|im_start|>user" in p and p.endswith("<|im_start|>assistant\n") for p in fixed.prompts
    )
    assert fixed.ignore_eos and fixed.planned_output_tokens == 6 * 32
    natural = build_workload(embedded_model, 2, 32, "natural")
    assert not natural.ignore_eos and natural.planned_output_tokens is None
    rows = [json.loads(x) for x in fixed.write(tmp_path / "p.jsonl").read_text().splitlines()]
    assert rows[0] == {"prompt": fixed.prompts[0], "max_tokens": 32}


def test_rephrase_workload_cycles_wraps_styles_over_the_chunks(embedded_model):
    docs = ["Rivers carry sediment to the sea, where it settles into deltas over centuries."]
    work = build_workload(embedded_model, 8, 16, "fixed", "rephrase", docs)
    assert len(work.prompts) == 8 and all("deltas" in p for p in work.prompts)
    assert len(set(work.prompts)) == 4  # one chunk x WRAP's four styles
    with pytest.raises(ValueError, match="no text to rephrase"):
        build_workload(embedded_model, 2, 16, "fixed", "rephrase", ["  "])


def test_bad_options_are_one_line_config_errors():
    config = REPO / "configs" / "bench.yaml"
    for kwargs, expected in [
        ({"systems": ("vllm", "tgi")}, "--systems vllm,tgi: expected some of"),
        ({"systems": ()}, "--systems : expected some of"),
        ({"constraints": ("json",)}, "--constraints json: needs --lengths natural"),
        ({"constraints": ("xml",), "lengths": "natural"}, "--constraints xml: expected some of"),
        ({"lengths": "long"}, "--lengths long: expected one of fixed, skewed, natural"),
        ({"source": "web"}, "--source web: expected one of questions, rephrase"),
        ({"prompts": 0}, "--prompts 0: expected at least 1"),
        ({"repeats": 0}, "--repeats 0: expected at least 1"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            BenchOptions(config, **kwargs)
    assert parse_sweep("engine.max_num_seqs=64, 256") == ("engine.max_num_seqs", ["64", "256"])
    assert parse_sweep(None) is None
    spec = "engine.speculative_config=null,{method: ngram, num_speculative_tokens: 4}"
    assert parse_sweep(spec) == (
        "engine.speculative_config",
        ["null", "{method: ngram, num_speculative_tokens: 4}"],
    )
    for bad in ("engine.max_num_seqs", "=1,2", "engine.max_num_seqs="):
        with pytest.raises(ConfigError, match="expected KEY=v1,v2"):
            parse_sweep(bad)


def test_cli_refuses_an_unknown_system_before_any_work(tmp_path):
    from synth_ray.cli import app

    result = CliRunner().invoke(
        app, ["bench", str(REPO / "configs" / "bench.yaml"), "--systems", "vllm,tgi",
              "--results", str(tmp_path / "res")]
    )  # fmt: skip
    assert result.exit_code == 2
    assert "error: --systems vllm,tgi: expected some of synth-ray,vllm,ray-data" in result.output
    assert not (tmp_path / "res").exists()


def result(tokens: int, ready: float | None, done: float, wall: float) -> SystemResult:
    return SystemResult(tokens, 10, ready, first_result_s=done, done_s=done, wall_s=wall)


def test_ratios_are_to_raw_vllm_of_the_same_sweep_value(tmp_path):
    rows = [
        Row("engine.max_num_seqs=64", "vllm", result(1000, 10.0, 20.0, 25.0)),
        Row("engine.max_num_seqs=64", "synth-ray", result(1000, 12.0, 22.0, 40.0)),
        Row("engine.max_num_seqs=64", "ray-data", result(1000, None, 30.0, 50.0)),
        Row("engine.max_num_seqs=256", "vllm", result(1000, 10.0, 15.0, 20.0)),
        Row("engine.max_num_seqs=256", "synth-ray", result(1000, 10.0, 14.0, 20.0)),
        Row("engine.max_num_seqs=256", "ray-data", None, "not installed (pip install x)"),
    ]
    records = summarize(rows)
    by = {(r["sweep"], r["system"]): r for r in records}
    assert by["engine.max_num_seqs=64", "synth-ray"]["steady_tok_s"] == 100.0
    assert by["engine.max_num_seqs=64", "synth-ray"]["steady_ratio"] == 1.0
    assert by["engine.max_num_seqs=64", "synth-ray"]["whole_ratio"] == 0.625
    assert by["engine.max_num_seqs=256", "synth-ray"]["steady_ratio"] == 1.25
    ray_data = by["engine.max_num_seqs=64", "ray-data"]
    assert ray_data["steady_tok_s"] is None and ray_data["whole_ratio"] == 0.5
    assert by["engine.max_num_seqs=256", "ray-data"]["skipped"] == "not installed (pip install x)"

    lines = table_lines(records)
    assert lines[0][:2] == ["sweep", "system"] and all(len(x) == len(lines[0]) for x in lines)
    assert lines[-1][2] == "skipped: not installed (pip install x)"
    md = markdown("title", "context", records, tmp_path / "p.png")
    assert "| engine.max_num_seqs=64 | synth-ray | 100.0 |" in md and "Plot: p.png" in md

    png = plot(records, tmp_path / "sweep.png", "a sweep")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000


class CachedSystems:
    """Stands in for the systems' processes (bench policy only: which runs when, what is
    reported): every system takes 10 s of generation, but the first process of the whole
    bench finds the shared compile cache cold and takes 20 s, as on a GPU the first system
    paid for torch.compile's cache that the next reused."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, system: str, job: dict, spec: RunSpec, work: Path) -> SystemResult:
        cold = not self.calls
        self.calls.append((system, work.name))
        generation = 20.0 if cold else 10.0
        return SystemResult(1000, 10, 5.0, first_result_s=6.0, done_s=5.0 + generation,
                            wall_s=6.0 + generation)  # fmt: skip


@pytest.mark.parametrize(
    ("repeats", "warmup", "ratio"),
    [(1, False, 0.615), (2, False, 0.808), (3, False, 1.0), (1, True, 1.0)],
)
def test_repeats_rotate_the_order_and_warmup_takes_the_cold_cache(
    tmp_path, monkeypatch, embedded_model, repeats, warmup, ratio
):
    """Without repeats the first system pays the cold cache alone (synth-ray's whole process
    at 0.615x of a vLLM no faster than it); repeats rotate the order and report medians (two
    halve the bias, three remove it), and a warm-up run takes it out of every timed run. The
    engine's start is reported apart from generation."""
    import synth_ray.bench.runner as runner

    fake = CachedSystems()
    monkeypatch.setattr(runner, "run_system", fake)
    monkeypatch.setattr(runner, "missing", lambda system: "")
    opts = BenchOptions(
        config=REPO / "configs" / "bench.yaml", overrides=[f"engine.model={embedded_model}"],
        systems=("synth-ray", "vllm"), prompts=2, results_dir=tmp_path / "res",
        work_dir=tmp_path / "work", repeats=repeats, warmup=warmup,
    )  # fmt: skip
    records, md, _ = runner.run_bench(opts, say=lambda line: None)
    timed = [c for c in fake.calls if c[1] != "warmup"]
    assert len(timed) == 2 * repeats
    firsts = [timed[2 * r][0] for r in range(repeats)]
    assert firsts == [("synth-ray", "vllm")[r % 2] for r in range(repeats)]
    if warmup:
        assert fake.calls[:2] == [("synth-ray", "warmup"), ("vllm", "warmup")]
    synth = next(r for r in records if r["system"] == "synth-ray")
    assert synth["whole_ratio"] == pytest.approx(ratio, abs=0.002)
    assert synth["engine_start_s"] == 5.0 and synth["runs"] == repeats
    table = md.read_text()
    assert "engine start s" in table and ("| runs |" in table) == (repeats > 1)
    assert ("untimed warm-up" in table) == warmup


def _bench(tmp_path, embedded_model, fake, monkeypatch, **options):
    import synth_ray.bench.runner as runner

    monkeypatch.setattr(runner, "run_system", fake)
    monkeypatch.setattr(runner, "missing", lambda system: "")
    opts = BenchOptions(
        config=REPO / "configs" / "bench.yaml", overrides=[f"engine.model={embedded_model}"],
        prompts=2, results_dir=tmp_path / "res", work_dir=tmp_path / "work", **options,
    )  # fmt: skip
    said: list[str] = []
    records, md, _ = runner.run_bench(opts, say=said.append)
    return {r["system"]: r for r in records}, md.read_text(), said


def test_a_later_repeats_failure_keeps_the_runs_that_finished(
    tmp_path, monkeypatch, embedded_model
):
    """raw vLLM fails its second run: its first still prices the others (the ratios), and its
    row says how many runs it has; a failed warm-up only warns."""
    from synth_ray.bench.systems import SystemFailed

    calls: list[tuple[str, str]] = []

    def flaky(system: str, job: dict, spec: RunSpec, work: Path) -> SystemResult:
        calls.append((system, work.name))
        if system == "vllm" and work.name in ("warmup", "1"):
            raise SystemFailed("CUDA error: out of memory")
        return SystemResult(1000, 10, 5.0, first_result_s=6.0, done_s=15.0, wall_s=16.0)

    by, md, said = _bench(tmp_path, embedded_model, flaky, monkeypatch,
                          systems=("synth-ray", "vllm"), repeats=3, warmup=True)  # fmt: skip
    assert by["vllm"]["runs"] == 1 and by["vllm"]["steady_tok_s"] == 100.0
    assert "1 of 3 runs; then failed: CUDA error" in by["vllm"]["notes"]
    assert by["synth-ray"]["runs"] == 3 and by["synth-ray"]["steady_ratio"] == 1.0
    assert ("vllm", "2") not in calls  # not run again after its failure
    assert "vllm: its timed runs go ahead on a cold cache" in said


def test_sigterm_mid_bench_writes_what_finished(tmp_path, monkeypatch, embedded_model):
    """A time slice that ran out (`timeout` signals the whole process group): the system
    running dies with it, none starts after, and the runs that finished are written."""
    import os
    import signal

    from synth_ray.bench.systems import SystemFailed

    def killed_second(system: str, job: dict, spec: RunSpec, work: Path) -> SystemResult:
        if system == "vllm":
            os.kill(os.getpid(), signal.SIGTERM)  # the group's signal, then the child's death
            raise SystemFailed("exit -15")
        return SystemResult(1000, 10, 5.0, first_result_s=6.0, done_s=15.0, wall_s=16.0)

    by, md, said = _bench(tmp_path, embedded_model, killed_second, monkeypatch,
                          systems=("synth-ray", "vllm", "ray-data"))  # fmt: skip
    assert by["synth-ray"]["steady_tok_s"] == 100.0
    assert (
        by["vllm"]["skipped"]
        == by["ray-data"]["skipped"]
        == "stopped by SIGTERM before it finished"
    )
    assert "bench: stopped by SIGTERM; writing what finished" in said
    assert "| synth-ray | 100.0 |" in md
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler was put back
    assert not any("failed" in line for line in said)

    def killed_twice(system: str, job: dict, spec: RunSpec, work: Path) -> SystemResult:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal: out at once
        raise AssertionError("the second signal did not interrupt")

    with pytest.raises(KeyboardInterrupt):
        _bench(tmp_path / "again", embedded_model, killed_twice, monkeypatch, systems=("vllm",))

    import synth_ray.bench.runner as runner
    from synth_ray.cli import app  # the command: the table of what finished, then exit 130

    monkeypatch.setattr(runner, "run_system", killed_second)
    result = CliRunner().invoke(
        app, ["bench", str(REPO / "configs" / "bench.yaml"), "--systems", "synth-ray,vllm",
              "--prompts", "2", "--set", f"engine.model={embedded_model}",
              "--results", str(tmp_path / "cli")],
    )  # fmt: skip
    assert result.exit_code == 130, result.output
    assert "| synth-ray | 100.0 |" in result.output and "stopped by SIGTERM" in result.output


def test_cli_refuses_repeats_below_one_and_warmup_for_the_pipeline(tmp_path):
    from synth_ray.cli import app

    config = str(REPO / "configs" / "bench.yaml")
    result = CliRunner().invoke(app, ["bench", config, "--repeats", "0"])
    assert result.exit_code == 2 and "--repeats 0: expected at least 1" in result.output
    result = CliRunner().invoke(app, ["bench", config, "--workload", "pipeline", "--warmup"])
    assert result.exit_code == 2 and "--warmup: not for --workload pipeline" in result.output


def test_synth_ray_runs_the_same_prompts_and_budgets_as_the_others(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a", "max_tokens": 3}\n{"prompt": "b", "max_tokens": 9}\n')
    spec = RunSpec("m", "auto", {}, 1, 0.7, 0.9, 0, True, str(prompts))
    job = {
        "engine": {"model": "m", "max_num_seqs": 8},
        "scheduler": {"batch_size": 4},
        "sampling": {"temperature": 0.7, "max_tokens": 64},
        "rephrase": {"styles": ["qa"]},
    }
    config = synth_ray_job(job, spec, tmp_path / "out")
    assert config["method"] == "generate" and "rephrase" not in config
    assert config["generate"] == {"raw_prompt": True, "max_tokens_column": "max_tokens"}
    assert config["sampling"]["max_tokens"] == 9 and config["sampling"]["ignore_eos"] is True
    assert config["engine"] == job["engine"] and config["scheduler"] == job["scheduler"]
    from synth_ray.config import validate_config

    validate_config(config)


def test_random_model_keeps_the_shape_and_takes_the_tokenizers_vocabulary(embedded_model, tmp_path):
    from transformers import AutoTokenizer

    from synth_ray.bench.random_model import SHAPES, make_random_model

    out = make_random_model(tmp_path / "qwen", "qwen2.5-1.5b", Path(embedded_model))
    config = json.loads((out / "config.json").read_text())
    vocab = len(AutoTokenizer.from_pretrained(str(out)))
    assert config["vocab_size"] >= vocab and config["vocab_size"] != 151936
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_key_value_heads"):
        assert config[key] == SHAPES["qwen2.5-1.5b"][key]
    assert "instead of 151936" in (out / "README.md").read_text()
    assert not list(out.glob("*.safetensors"))
    with pytest.raises(ValueError, match="shape 'gpt5'"):
        make_random_model(tmp_path / "x", "gpt5", Path(embedded_model))


def test_conforms_reads_each_constraint_as_the_engine_enforces_it():
    json_fields = vllm_fields("json")
    good = '{"answer": "salt from rocks", "keywords": ["salt"], "confidence": 80}'
    assert conforms(json_fields, good)
    assert not conforms(json_fields, good[:-1])  # cut by max_tokens
    assert not conforms(json_fields, good.replace("80", "180"))  # off the schema's range
    assert not conforms(json_fields, '{"answer": "x", "keywords": [], "confidence": 1, "y": 2}')
    regex = vllm_fields("regex")
    assert conforms(regex, "Answer: Salt washes in from rocks.\nConfidence: 90%")
    assert not conforms(regex, "Answer: Salt washes in from rocks.")
    assert conforms(vllm_fields("choice"), "it depends") and not conforms(
        vllm_fields("choice"), "It depends."
    )
    assert conforms(vllm_fields("none"), "anything at all")
    with pytest.raises(ValueError, match="constraint 'xml'"):
        vllm_fields("xml")


def test_constrained_rows_are_priced_against_their_own_free_decoding(tmp_path):
    def constrained(tokens: int, done: float, conforming: int) -> SystemResult:
        out = result(tokens, 10.0, done, done + 5)
        out.conforming = conforming
        return out

    rows = [
        Row("", "vllm", result(1000, 10.0, 20.0, 25.0)),
        Row("", "synth-ray", result(1000, 10.0, 20.0, 25.0)),
        Row("", "vllm", constrained(400, 15.0, 10), constraint="json"),
        Row("", "synth-ray", constrained(360, 16.0, 9), constraint="json"),
    ]
    by = {(r["sweep"], r["system"]): r for r in summarize(rows)}
    assert by["constraint=json", "vllm"]["vs_free"] == 0.8  # 80 tok/s against 100
    assert by["constraint=json", "synth-ray"]["vs_free"] == 0.6
    assert by["constraint=json", "synth-ray"]["steady_ratio"] == 0.75  # to the json vLLM
    assert by["constraint=json", "synth-ray"]["conforming"] == "9/10"
    assert "vs_free" not in by["", "vllm"]
    lines = table_lines(summarize(rows))
    assert lines[0][-2:] == ["vs free", "conforming"] and lines[3][-2:] == ["0.8", "10/10"]
    assert "vs free" not in table_lines(summarize(rows[:2]))[0]


def test_synth_ray_decodes_under_the_same_constraint_as_the_others(tmp_path):
    from synth_ray.config import validate_config

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a", "max_tokens": 3}\n')
    job = {"engine": {"model": "m"}, "sampling": {"temperature": 0.7, "max_tokens": 64}}
    for kind, key in (("json", "output_schema"), ("regex", "constraint"), ("choice", "constraint")):
        spec = RunSpec("m", "auto", {}, 1, 0.7, 0.9, 0, False, str(prompts), constraint=kind)
        config = synth_ray_job(job, spec, tmp_path / "out")
        assert key in config["generate"], kind
        validate_config(config)
    spec = RunSpec("m", "auto", {}, 1, 0.7, 0.9, 0, False, str(prompts))
    assert set(synth_ray_job(job, spec, tmp_path / "out")["generate"]) == {
        "raw_prompt",
        "max_tokens_column",
    }


def test_vllm_and_ray_data_requests_carry_the_constraint(tmp_path):
    """Each baseline asks its engine for the same constraint synth-ray decodes under (vLLM
    enforcing it is the structured-output tests' business; by hand, a 3-prompt choice run
    of raw vLLM gave 3 of 3 conforming, 0 of 3 with the constraint left out)."""
    from vllm.sampling_params import StructuredOutputsParams

    from synth_ray.bench.raw_vllm import sampling_params
    from synth_ray.bench.ray_data_llm import preprocess_for

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a", "max_tokens": 3}\n')
    free = RunSpec("m", "auto", {}, 1, 0.7, 0.9, 0, False, str(prompts))
    choice = dataclasses.replace(free, constraint="choice")
    params = sampling_params(choice, [3, 9], on_cpu=True)
    assert [p.max_tokens for p in params] == [3, 9]
    assert all(
        p.structured_outputs == StructuredOutputsParams(choice=list(CHOICES)) for p in params
    )
    assert sampling_params(free, [3], on_cpu=True)[0].structured_outputs is None
    request = preprocess_for(choice)({"prompt": "a", "max_tokens": 3})
    assert request["sampling_params"]["structured_outputs"] == {"choice": list(CHOICES)}
    assert request["sampling_params"]["max_tokens"] == 3 and request["prompt"] == "a"
    assert (
        "structured_outputs"
        not in preprocess_for(free)({"prompt": "a", "max_tokens": 3})["sampling_params"]
    )


@pytest.mark.engine
def test_a_tiny_bench_runs_every_system_and_writes_table_results_and_plot(tmp_path):
    """The real thing from the command line, as a user runs it (about 2 minutes)."""
    import subprocess
    import sys

    absent = [s for s in SYSTEMS if missing(s)]
    systems = [s for s in SYSTEMS if s not in absent]
    results = tmp_path / "res"
    done = subprocess.run(
        [sys.executable, "-m", "synth_ray", "bench", str(REPO / "configs" / "bench.yaml"),
         "--systems", ",".join(SYSTEMS), "--prompts", "4", "--lengths", "skewed",
         "--set", "sampling.max_tokens=8", "--results", str(results), "--label", "test"],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    planned = sum(output_budgets(4, 8, "skewed", seed=0))
    records = [json.loads(x) for x in (results / "results.jsonl").read_text().splitlines()]
    assert [r["system"] for r in records] == list(SYSTEMS)
    for rec in records:
        if rec["system"] in absent:
            assert "not installed" in rec["skipped"]
            continue
        assert "skipped" not in rec, rec
        assert rec["output_tokens"] == planned and rec["requests"] == 4, rec
        assert rec["whole_tok_s"] > 0 and rec["wall_s"] > rec["first_result_s"] > 0
        assert rec["machine"]["cores"] >= 1 and rec["lengths"] == "skewed"
    assert records[1]["system"] == "vllm" and records[1]["steady_ratio"] == 1.0
    assert records[0]["steady_ratio"] > 0  # synth-ray against the vLLM of the same run
    md = (results / "results.md").read_text()
    assert "synth-ray bench (test): 4 questions prompts, skewed lengths" in md
    assert "Machine: " in md and "vllm " in md
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == [f"| {s}" for s in SYSTEMS]
    pngs = list(results.glob("bench-*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == PNG_MAGIC
    for system in systems:
        assert f"{system}: running (4 prompts)" in done.stderr


def test_the_pipeline_bench_alternates_its_order_and_prices_pools_against_stages_in_turn(
    tmp_path,
):
    """Repeats alternate which mode runs first (a cold page cache or compile cache must not
    always fall on one); the table's speedup is the median sequential wall over each mode's;
    the command sets the mode, the prompts and the output; a job on one pool is one line."""
    from synth_ray.bench.pipeline import (
        check_pipeline_config,
        run_command,
        run_order,
        summarize,
        table_lines,
    )
    from synth_ray.config import load_config
    from synth_ray.errors import ConfigError

    assert run_order(3) == [
        (0, "sequential"), (0, "pools"), (1, "pools"), (1, "sequential"),
        (2, "sequential"), (2, "pools"),
    ]  # fmt: skip
    runs = [
        {"mode": "sequential", "wall_s": 90.0, "generation_s": 60.0, "output_tokens": 900},
        {"mode": "sequential", "wall_s": 110.0, "generation_s": 70.0, "output_tokens": 900},
        {"mode": "pools", "wall_s": 60.0, "generation_s": None, "output_tokens": 900},
        {"mode": "pools", "wall_s": 40.0, "generation_s": 30.0, "output_tokens": 900},
    ]
    rows = {r["mode"]: r for r in summarize(runs)}
    assert rows["sequential"]["wall_s"] == 100.0 and rows["sequential"]["speedup"] == 1.0
    assert rows["pools"]["wall_s"] == 50.0 and rows["pools"]["speedup"] == 2.0
    assert rows["pools"]["generation_s"] == 30.0 and rows["pools"]["whole_tok_s"] == 18.0
    lines = table_lines(list(rows.values()))
    assert lines[0][-1] == "speedup" and lines[1][:3] == ["pools", "2", "50.0"]
    cmd = run_command(REPO / "configs" / "preference_pools.yaml", tmp_path, 8, "pools", ["a=1"])
    assert cmd[3:5] == ["run", str(REPO / "configs" / "preference_pools.yaml")]
    sets = [cmd[i + 1] for i, part in enumerate(cmd) if part == "--set"]
    assert sets == [f"output.path={tmp_path}", "input.limit=8", "scheduler.stream_stages=true",
                    "a=1"]  # fmt: skip
    check_pipeline_config(load_config(REPO / "configs" / "preference_pools.yaml"), Path("p"))
    check_pipeline_config(load_config(REPO / "configs" / "preference.yaml"), Path("p"))
    check_pipeline_config(load_config(REPO / "configs" / "metamath.yaml"), Path("p"))
    with pytest.raises(ConfigError, match="runs one stage, or stages that cannot run together"):
        check_pipeline_config(load_config(REPO / "configs" / "generate.yaml"), Path("p"))
