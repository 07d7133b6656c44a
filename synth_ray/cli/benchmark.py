"""`synth-ray bench`: synth-ray against raw vLLM and Ray Data LLM on one workload.

synth-ray bench configs/generate.yaml --systems synth-ray,vllm,ray-data --lengths skewed
synth-ray bench configs/bench.yaml --repeats 2 --warmup   # order bias removed: bench/runner.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from synth_ray.cli.common import _fail, app, console, err_console
from synth_ray.errors import UserError


@app.command()
def bench(
    config: Annotated[Path, typer.Argument(help="Job config: model, engine, sampling, resources.")],
    systems: Annotated[
        str,
        typer.Option(
            help="Comma-separated: synth-ray, vllm (raw LLM.generate), ray-data, "
            "synth-ray-remote (synth-ray over HTTP to `vllm serve` of the same model)."
        ),
    ] = "synth-ray,vllm,ray-data",
    prompts: Annotated[int, typer.Option(help="Requests in the workload.")] = 128,
    lengths: Annotated[
        str,
        typer.Option(help="fixed (ignore_eos), skewed (most short, a few long), natural."),
    ] = "fixed",
    source: Annotated[
        str,
        typer.Option(help="questions (built in) or rephrase (WRAP prompts over the input)."),
    ] = "questions",
    sweep: Annotated[
        str | None,
        typer.Option(help="KEY=v1,v2,...: one run per value, e.g. engine.max_num_seqs=64,256"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: --set sampling.max_tokens=128"),
    ] = None,
    results: Annotated[
        Path, typer.Option(help="Folder for results.md, results.jsonl and the plot.")
    ] = Path("bench-results"),
    constraints: Annotated[
        str,
        typer.Option(
            help="Comma-separated: none (free), json, regex, choice: the workload once per "
            "constraint, decoded under it (needs --lengths natural); `vs free` prices each."
        ),
    ] = "none",
    label: Annotated[str, typer.Option(help="A word for this run in the results.")] = "",
    seed: Annotated[int, typer.Option(help="Seed of the skewed lengths.")] = 0,
    workload: Annotated[
        str,
        typer.Option(
            help="throughput (the systems side by side) or pipeline (a job on two pools, "
            "e.g. configs/preference_pools.yaml: pools at once against stages in turn)."
        ),
    ] = "throughput",
    repeats: Annotated[
        int | None,
        typer.Option(
            help="Timed runs of each system (default 1), each repeat in another order, "
            "medians reported; pipeline: runs of each mode, alternating (default 2)."
        ),
    ] = None,
    warmup: Annotated[
        bool,
        typer.Option(help="Run each system once, untimed, before its timed runs (warm caches)."),
    ] = False,
) -> None:
    """Throughput of the same prompts through synth-ray, raw vLLM and Ray Data LLM, each in a
    fresh process, side by side: one table, appended to results.md/.jsonl, and a plot. With
    `--workload pipeline`, a job with its stages running together (two pools, or sharing
    one) against its stages in turn."""
    from synth_ray.bench.report import table_lines
    from synth_ray.bench.runner import BenchOptions, parse_sweep, run_bench

    if workload not in ("throughput", "pipeline"):
        _fail(f"--workload {workload}: expected throughput or pipeline", 2)
    if workload == "pipeline":
        if warmup:
            _fail("--warmup: not for --workload pipeline (its repeats alternate the order)", 2)
        _pipeline(config, set_ or [], prompts, 2 if repeats is None else repeats, results, label)
        return
    try:
        opts = BenchOptions(
            config=config,
            overrides=set_ or [],
            systems=tuple(s.strip() for s in systems.split(",") if s.strip()),
            prompts=prompts,
            lengths=lengths,
            source=source,
            sweep=parse_sweep(sweep),
            constraints=tuple(c.strip() for c in constraints.split(",") if c.strip()),
            results_dir=results,
            seed=seed,
            label=label,
            repeats=1 if repeats is None else repeats,
            warmup=warmup,
        )
        records, md, plot = run_bench(opts, say=lambda line: err_console.print(escape(line)))
    except UserError as err:
        _fail(str(err), err.exit_code)
    lines = table_lines(records)
    if console.is_terminal:
        table = Table(*lines[0])
        for line in lines[1:]:
            table.add_row(*line)
        console.print(table)
    else:  # a log or a pipe: the Markdown table, never cut to a terminal's width
        for line in lines:
            print("| " + " | ".join(line) + " |")
    console.print(f"results: {md}" + (f"; plot: {plot}" if plot else ""))
    if any(str(r.get("skipped", "")).startswith("stopped by") for r in records):
        raise typer.Exit(130)  # stopped by a signal: what finished is written, not the rest


def _pipeline(
    config: Path, overrides: list[str], prompts: int, repeats: int, results: Path, label: str
) -> None:
    from synth_ray.bench.pipeline import run_pipeline_bench, table_lines

    try:
        rows, md = run_pipeline_bench(
            config, overrides, prompts, repeats, results, label,
            say=lambda line: err_console.print(escape(line)),
        )  # fmt: skip
    except UserError as err:
        _fail(str(err), err.exit_code)
    for line in table_lines(rows):
        print("| " + " | ".join(line) + " |")
    console.print(f"results: {md}")
