"""The `synth-ray` command: run or submit a job, follow it, report status, prepare the model.

    synth-ray run configs/quickstart.yaml --set input.limit=20
    synth-ray status out/quickstart
    synth-ray inspect out/quickstart --where "style = 'qa'" --n 3
    synth-ray report out/quickstart      (report/index.html; run writes it when a job completes)
    synth-ray submit configs/generate.yaml --address http://HEAD:8265   (then logs/status/stop)
    synth-ray prepare-model
    synth-ray bench configs/generate.yaml --systems synth-ray,vllm,ray-data --lengths skewed

A `UserError` (bad config, missing input, output conflict, missing resources) prints one line
`error: ...` and exits 2 before any work; a job that fails mid-way (`JobFailed`) prints the
reason and exits 1, keeping every unit it had committed; a run stopped by SIGTERM/SIGINT
commits what finishes within `--grace` and exits 75 (runtime/stopping.py).
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
from synth_ray.io.storage_errors import find_storage_error
from synth_ray.runtime.stopping import DEFAULT_GRACE_S, EXIT_STOPPED, JobStopped, StopRequest

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="synth-ray: synthetic training data on Ray + vLLM, exactly-once Parquet shards.",
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, whole.")
    ] = False,
    width: Annotated[int, typer.Option(min=20, help="Characters of a value to show.")] = 600,
) -> None:
    """Print committed rows of an output, those meeting --where, in commit order."""
    from synth_ray.dataset.rows import pick_rows

    try:
        rows = pick_rows(output, where, n, errors)
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
        f"{len(rows)} {'error ' if errors else ''}rows" + (f" where {where}" if where else ""),
        markup=False,
        highlight=False,
    )


AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Ray dashboard URL of the cluster (default: RAY_ADDRESS if http, else 127.0.0.1:8265).",
    ),
]


def _is_job_id(target: str, address: str | None) -> bool:
    """A job id, not an output folder: --address given, or nothing by that name here."""
    if "://" in target or Path(target).exists():
        return False
    return address is not None or target.startswith(("synth-ray-", "raysubmit_"))


@app.command()
def status(
    # a str, not a Path: Path would fold the '//' of a URI (s3://b/x -> s3:/b/x)
    target: Annotated[str, typer.Argument(help="A job's output folder or URI, or a job id.")],
    address: AddressOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Committed and pending units; rows in, out, dropped, errored; tokens. Given a job id
    (with --address for a cluster), the job's state too."""
    from synth_ray.status import collect_status

    report: dict = {}
    try:
        if _is_job_id(target, address):
            from synth_ray.jobs import job_info

            report = job_info(target, address)
            output = report.get("output")
            if output:
                try:
                    report["progress"] = collect_status(output)
                except UserError:
                    report["progress"] = "output not readable from here"
        else:
            report = collect_status(target)
    except UserError as err:
        _fail(str(err), err.exit_code)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    progress = report.pop("progress", None)
    table = Table(title=f"synth-ray status: {target}", show_header=False)
    _add_rows(table, report)
    if isinstance(progress, dict):
        _add_rows(table, progress, prefix="output ")
    elif progress:
        table.add_row("output", progress)
    console.print(table)


def _add_rows(table: Table, report: dict, prefix: str = "") -> None:
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        table.add_row(prefix + key.replace("_", " "), escape(str(value)))


@app.command()
def submit(
    config: Annotated[Path, typer.Argument(help="Job config (YAML).")],
    address: AddressOption = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key by its dotted path."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an output that holds a different job's output.")
    ] = False,
    replan: Annotated[
        bool,
        typer.Option(help="Resume although the input files changed (see `run --replan`)."),
    ] = False,
    follow: Annotated[bool, typer.Option(help="Stream the job's log until it ends.")] = False,
    grace: Annotated[
        float,
        typer.Option(min=0, help="Seconds `synth-ray stop` gives the work in flight to commit."),
    ] = DEFAULT_GRACE_S,
) -> None:
    """Submit a job to a Ray cluster (Jobs API); the config and local inputs travel with it.
    Submitting the same config again resumes from the committed shards."""
    from synth_ray.jobs import logs, wait
    from synth_ray.jobs import submit as submit_job

    try:
        job_id, url, output = submit_job(config, address, set_ or [], overwrite, grace, replan)
    except UserError as err:
        _fail(str(err), err.exit_code)
    console.print(f"submitted job {job_id} to {url}", highlight=False)
    console.print(f"output: {output}", highlight=False)
    console.print(
        f"follow it:  synth-ray logs {job_id} --address {url} --follow\n"
        f"status:     synth-ray status {job_id} --address {url}\n"
        f"stop:       synth-ray stop {job_id} --address {url}",
        highlight=False,
    )
    if follow:
        logs(job_id, url, follow=True, write=lambda chunk: print(chunk, end="", flush=True))
        final = wait(job_id, url)
        console.print(f"job {job_id}: {final}")
        if final != "SUCCEEDED":
            raise typer.Exit(1)


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="The job id `submit` printed.")],
    address: AddressOption = None,
    follow: Annotated[bool, typer.Option(help="Keep printing until the job ends.")] = False,
) -> None:
    """Print a submitted job's driver log."""
    from synth_ray.jobs import logs as job_logs

    try:
        job_logs(job_id, address, follow, write=lambda chunk: print(chunk, end="", flush=True))
    except UserError as err:
        _fail(str(err), err.exit_code)


@app.command()
def stop(
    job_id: Annotated[str, typer.Argument(help="The job id `submit` printed.")],
    address: AddressOption = None,
) -> None:
    """Stop a submitted job; its committed units stay, and submitting again resumes."""
    from synth_ray.jobs import stop as stop_job

    try:
        final = stop_job(job_id, address)
    except UserError as err:
        _fail(str(err), err.exit_code)
    console.print(f"job {job_id}: {final}")


@app.command("prepare-model")
def prepare_model() -> None:
    """Convert the embedded model (SmolLM2-135M-Instruct) once and print its folder."""
    from synth_ray.engine.models import prepare_embedded_model

    try:
        console.print(str(prepare_embedded_model()))
    except UserError as err:
        _fail(str(err), err.exit_code)


@app.command()
def bench(
    config: Annotated[Path, typer.Argument(help="Job config: model, engine, sampling, resources.")],
    systems: Annotated[
        str, typer.Option(help="Comma-separated: synth-ray, vllm (raw LLM.generate), ray-data.")
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
    label: Annotated[str, typer.Option(help="A word for this run in the results.")] = "",
    seed: Annotated[int, typer.Option(help="Seed of the skewed lengths.")] = 0,
) -> None:
    """Throughput of the same prompts through synth-ray, raw vLLM and Ray Data LLM, each in a
    fresh process, side by side: one table, appended to results.md/.jsonl, and a plot."""
    from synth_ray.bench.report import table_lines
    from synth_ray.bench.runner import BenchOptions, parse_sweep, run_bench

    try:
        opts = BenchOptions(
            config=config,
            overrides=set_ or [],
            systems=tuple(s.strip() for s in systems.split(",") if s.strip()),
            prompts=prompts,
            lengths=lengths,
            source=source,
            sweep=parse_sweep(sweep),
            results_dir=results,
            seed=seed,
            label=label,
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


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
