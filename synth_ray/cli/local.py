"""Commands on this machine and its outputs: `run`, `report`, `inspect`, `prepare-model`.

synth-ray run configs/quickstart.yaml --set input.limit=20
synth-ray inspect out/quickstart --where "style = 'qa'" --n 3
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from synth_ray.cli.common import _fail, app, console, err_console
from synth_ray.errors import UserError
from synth_ray.io.storage_errors import find_storage_error
from synth_ray.runtime.stopping import DEFAULT_GRACE_S, EXIT_STOPPED, JobStopped, StopRequest


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
    replan: Annotated[
        bool,
        typer.Option(
            help="Resume although the input files changed since the output's last run: keep "
            "the committed units whose rows still match, generate the rest."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress while running.")] = True,
    samples: Annotated[int, typer.Option(help="Sample rows to print at the end.")] = 0,
    grace: Annotated[
        float,
        typer.Option(
            min=0,
            help="On SIGTERM/SIGINT: seconds the work in flight gets to finish and commit "
            f"before the run exits with status {EXIT_STOPPED}. A second signal exits at once.",
        ),
    ] = DEFAULT_GRACE_S,
) -> None:
    """Run a job, or resume it: units already committed in the output are skipped."""
    from synth_ray.config import load_config
    from synth_ray.io.lease import LeaseLost
    from synth_ray.runtime.job import run_job
    from synth_ray.runtime.scheduler import JobFailed

    stop = StopRequest(grace)
    stop.install_signal_handlers(lambda line: err_console.print(escape(line), highlight=False))
    try:
        job = load_config(config, set_ or [])
        summary = run_job(
            job, overwrite=overwrite, show_progress=progress, stop=stop, replan=replan
        )
    except UserError as err:
        _fail(str(err), err.exit_code)
    except JobFailed as err:
        _fail(f"job failed: {err} (committed units are kept; rerun to resume)", 1)
    except LeaseLost as err:
        _fail(f"job failed: {err}", 1)
    except OSError as err:
        storage = find_storage_error(err)
        if storage is None:
            raise  # not the output's storage: a bug or an infrastructure failure, traceback
        _fail(
            f"job failed: {storage}. Committed units are kept; free space (or make it "
            "writable) and rerun the same command to resume",
            1,
        )
    except JobStopped as err:
        done = err.summary
        counts = (
            f"{done.units_committed} units committed this run, "
            f"{done.units_skipped + done.units_committed} of {done.units_total} planned so far"
            if done is not None
            else "committed units are kept"
        )
        err_console.print(
            f"[bold yellow]stopped[/]: {escape(str(err))}; {counts}. Rerun the same command "
            "to resume.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_STOPPED) from None
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
    if summary.row_ids:
        console.print(summary.row_ids, highlight=False)
    if stats.get("remote"):
        remote = stats["remote"]
        console.print(
            f"remote engines: cost ${remote['cost_usd']:.4f} at the configured prices, "
            f"{remote['retries']} requests retried"
            + "".join(
                f"; {name}: {s['model']} {s['input_tokens']:,} in / {s['output_tokens']:,} out"
                for name, s in remote["stages"].items()
            ),
            highlight=False,
        )
    if stats.get("nn_similarity_histogram"):
        from synth_ray.diversity.decide import format_histogram

        console.print(
            f"diversity filter dropped {stats['dropped_by_filter'].get('diversity', 0)}; "
            f"nearest-neighbour similarity: {format_histogram(stats['nn_similarity_histogram'])}"
        )
    if summary.generation_wall_s > 0:
        console.print(
            f"engine start {summary.startup_s:.1f}s, generation {summary.generation_wall_s:.1f}s "
            f"({summary.steady_tokens_per_s:.0f} output tokens/s), whole run {summary.wall_s:.1f}s"
        )
    if summary.engine.get("dtype_reason"):
        niceness = summary.engine.get("niceness")
        nice_note = f"; engine processes at nice {niceness}" if niceness else ""
        console.print(f"engine dtype {escape(str(summary.engine['dtype_reason']))}{nice_note}")
    if stats["rows_errored"]:
        reasons = ", ".join(f"{k} {v}" for k, v in stats["errored_by_stage"].items())
        console.print(f"errored rows by stage: {reasons} (see {summary.output_path}/errors/)")
    if summary.replica_failures:
        console.print(
            f"{len(summary.replica_failures)} replica failures, {summary.requests_resent} "
            f"requests re-sent; last: {escape(summary.replica_failures[-1])}"
        )
    if summary.stalls:
        console.print(
            f"{len(summary.stalls)} stalled replicas replaced; last: {escape(summary.stalls[-1])}"
        )
    if summary.pool_shrinks:
        console.print(
            f"[yellow]the replica pool shrank {len(summary.pool_shrinks)} time(s); last: "
            f"{escape(summary.pool_shrinks[-1])}[/]"
        )
    if summary.replica_moves:
        console.print(
            f"replicas moved between pools {len(summary.replica_moves)} time(s); last: "
            f"{escape(summary.replica_moves[-1])}"
        )
    commit_log = "_commits/" if "://" in summary.output_path else "_manifest.jsonl"
    console.print(f"output: {summary.output_path}/data/*.parquet (stats.json, {commit_log})")
    if samples:
        _print_samples(summary.output_path, samples)
    _write_card(summary.output_path)


def _write_card(output: str) -> None:
    """The dataset card and the report of a completed job. The data is committed and the
    job done whatever happens here, so a failure is a warning naming it, never an exit 1."""
    from synth_ray.dataset.card import write_card
    from synth_ray.dataset.report import write_report
    from synth_ray.io.output_store import OutputStore

    store = OutputStore(output)  # one read of the commit log for both
    for what, write in (("dataset card", write_card), ("report", write_report)):
        try:
            console.print(f"{what}: {write(store)}", soft_wrap=True)
        except Exception as err:  # noqa: BLE001 - the job is done; say why this part is not
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            err_console.print(
                f"warning: no {what}: {escape(first)} (synth-ray report {escape(output)} retries)",
                highlight=False,
                soft_wrap=True,
            )


@app.command()
def report(
    output: Annotated[str, typer.Argument(help="Output folder or URI of a job.")],
) -> None:
    """Write the run report (report/index.html, PNGs) and the dataset card (README.md) of an
    output, finished, running or killed."""
    from synth_ray.dataset.card import write_card
    from synth_ray.dataset.report import write_report
    from synth_ray.io.output_store import OutputStore

    try:
        store = OutputStore(output)
        console.print(f"report: {write_report(store)}", soft_wrap=True)
        console.print(f"dataset card: {write_card(store)}", soft_wrap=True)
    except UserError as err:
        _fail(str(err), err.exit_code)


SOURCE_COLUMNS = ("source_text", "prompt", "question", "instruction")
OUTPUT_COLUMNS = ("text", "rationale", "response", "output")


def _print_samples(output: str, n: int) -> None:
    """A few output rows: what each came from and what was generated, whatever the method."""
    from synth_ray.io.output_store import OutputStore

    shown = 0
    for table in OutputStore(output).data_tables():
        for row in table.slice(0, n - shown).to_pylist():
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
def inspect(
    output: Annotated[str, typer.Argument(help="Output folder or URI of a job.")],
    where: Annotated[
        str | None,
        typer.Option(
            help="DuckDB SQL condition on the columns: \"style = 'qa' and n_output_tokens > 200\""
        ),
    ] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Rows to print.")] = 5,
    errors: Annotated[bool, typer.Option(help="Look at the error rows instead.")] = False,
    dropped: Annotated[
        bool,
        typer.Option(help="Look at the dropped rows (output.keep_dropped) and their completions."),
    ] = False,
    split: Annotated[
        str | None, typer.Option(help="Look at a method's named split, e.g. uncertain.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, whole.")
    ] = False,
    width: Annotated[int, typer.Option(min=20, help="Characters of a value to show.")] = 600,
) -> None:
    """Print committed rows of an output, those meeting --where, in commit order."""
    from synth_ray.dataset.rows import pick_rows

    try:
        kept = "dropped" if dropped else split or "data"
        rows = pick_rows(output, where, n, errors, kept)
    except UserError as err:
        _fail(str(err), err.exit_code)
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, default=str))
        return
    for row in rows:
        console.rule(escape(str(row.get("id", ""))))
        for key, value in row.items():
            text = str(value)
            cut = f" [dim]... ({len(text):,} chars)[/]" if len(text) > width else ""
            console.print(f"[bold]{escape(key)}[/]: {escape(text[:width])}{cut}", highlight=False)
    console.print(
        f"{len(rows)} {'error ' if errors else '' if kept == 'data' else kept + ' '}rows"
        + (f" where {where}" if where else ""),
        markup=False,
        highlight=False,
    )


@app.command("prepare-model")
def prepare_model() -> None:
    """Convert the embedded model (SmolLM2-135M-Instruct) once and print its folder."""
    from synth_ray.engine.models import prepare_embedded_model

    try:
        console.print(str(prepare_embedded_model()))
    except UserError as err:
        _fail(str(err), err.exit_code)
