"""Commands for outputs and jobs anywhere: `status` (an output folder or a submitted job),
`submit`, `logs`, `stop` (Ray's Jobs API).

    synth-ray status out/quickstart
    synth-ray submit configs/generate.yaml --address http://HEAD:8265
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from synth_ray.cli.common import _fail, app, console
from synth_ray.errors import UserError
from synth_ray.runtime.stopping import DEFAULT_GRACE_S

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
