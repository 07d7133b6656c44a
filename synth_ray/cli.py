"""The `synth-ray` command: run a job, report an output folder's status, prepare the model.

    synth-ray run configs/quickstart.yaml --set input.limit=20
    synth-ray status out/quickstart
    synth-ray prepare-model

A `UserError` (bad config, missing input, output conflict, missing resources) prints one line
`error: ...` and exits 2 before any work; a job that fails mid-way (`JobFailed`) prints the
reason and exits 1, keeping every unit it had committed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from synth_ray.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="synth-ray: synthetic training data on Ray + vLLM, exactly-once Parquet shards.",
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Job config (YAML).")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a config key by its dotted path: --set input.limit=20"
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an output folder that holds a different job's output.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress while running.")] = True,
    samples: Annotated[int, typer.Option(help="Sample rows to print at the end.")] = 0,
) -> None:
    """Run a job, or resume it: units already committed in the output are skipped."""
    from synth_ray.config import load_config
    from synth_ray.runtime.job import run_job
    from synth_ray.runtime.scheduler import JobFailed

    try:
        job = load_config(config, set_ or [])
        summary = run_job(job, overwrite=overwrite, show_progress=progress)
    except UserError as err:
        _fail(str(err), err.exit_code)
    except JobFailed as err:
        _fail(f"job failed: {err} (committed units are kept; rerun to resume)", 1)
    stats = summary.stats
    console.print(
        f"[bold green]done[/]: {summary.units_committed} units written this run, "
        f"{summary.units_skipped} already committed, {summary.units_total} in all"
    )
    console.print(
        f"rows in {stats['rows_in']} = out {stats['rows_out']} + dropped {stats['rows_dropped']} "
        f"+ errored {stats['rows_errored']}; tokens in {stats['input_tokens']}, "
        f"out {stats['output_tokens']}"
    )
    if summary.generation_wall_s > 0:
        console.print(
            f"engine start {summary.startup_s:.1f}s, generation {summary.generation_wall_s:.1f}s "
            f"({summary.steady_tokens_per_s:.0f} output tokens/s), whole run {summary.wall_s:.1f}s"
        )
    if stats["rows_errored"]:
        reasons = ", ".join(f"{k} {v}" for k, v in stats["errored_by_stage"].items())
        console.print(f"errored rows by stage: {reasons} (see {summary.output_path}/errors/)")
    if summary.replica_failures:
        console.print(
            f"{len(summary.replica_failures)} replica failures, {summary.requests_resent} "
            f"requests re-sent; last: {escape(summary.replica_failures[-1])}"
        )
    console.print(f"output: {summary.output_path}/data/*.parquet (stats.json, _manifest.jsonl)")
    if samples:
        _print_samples(Path(summary.output_path), samples)


SOURCE_COLUMNS = ("source_text", "prompt", "question", "instruction")
OUTPUT_COLUMNS = ("text", "rationale", "response", "output")


def _print_samples(output: Path, n: int) -> None:
    """A few output rows: what each came from and what was generated, whatever the method."""
    import pyarrow.parquet as pq

    from synth_ray.io.output_store import OutputStore

    shown = 0
    for file in OutputStore(output).data_files():
        for row in pq.read_table(file).slice(0, n - shown).to_pylist():
            source = next((str(row[c]) for c in SOURCE_COLUMNS if row.get(c)), "")
            produced = next((str(row[c]) for c in OUTPUT_COLUMNS if row.get(c)), "")
            label = next(
                (f" ({row[c]})" for c in ("style", "source", "operation") if row.get(c)), ""
            )
            console.rule(escape(f"{row['id']}{label}"))
            console.print(f"[dim]from:[/] {escape(source[:300])}", highlight=False)
            console.print(f"[bold]generated:[/] {escape(produced[:500])}", highlight=False)
            shown += 1
        if shown >= n:
            return
    if shown == 0:
        console.print("no output rows to show (see stats.json for what was dropped or errored)")


@app.command()
def status(
    output: Annotated[Path, typer.Argument(help="A job's output folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Committed and pending units; rows in, out, dropped, errored; tokens."""
    from synth_ray.status import collect_status

    try:
        report = collect_status(output)
    except UserError as err:
        _fail(str(err), err.exit_code)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"synth-ray status: {output}", show_header=False)
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)


@app.command("prepare-model")
def prepare_model() -> None:
    """Convert the embedded model (SmolLM2-135M-Instruct) once and print its folder."""
    from synth_ray.engine.models import prepare_embedded_model

    try:
        console.print(str(prepare_embedded_model()))
    except UserError as err:
        _fail(str(err), err.exit_code)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
