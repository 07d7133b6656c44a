"""Co-annotation commands: `annotations export` (a label job's uncertain rows as Label Studio
tasks) and `annotations merge` (the labels people gave, back into one final dataset).

    synth-ray annotations export out/label --to out/label-tasks
    synth-ray annotations merge out/label project-export.json --to out/label-final
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synth_ray.cli.common import _fail, app, console
from synth_ray.errors import UserError

annotations = typer.Typer(
    no_args_is_help=True,
    help="Co-annotation: send the rows the model was unsure of to people (Label Studio) and "
    "merge their labels back.",
)
app.add_typer(annotations, name="annotations")

OutputArgument = Annotated[str, typer.Argument(help="Output folder or URI of a label job.")]
ToOption = Annotated[str, typer.Option("--to", help="Folder to write into (created if needed).")]


@annotations.command("export")
def export(output: OutputArgument, to: ToOption) -> None:
    """Write tasks.json (the uncertain rows, the model's votes as predictions: import it into
    a Label Studio project) and labeling_config.xml (that project's labeling interface)."""
    from synth_ray.dataset.annotation import export_uncertain

    try:
        done = export_uncertain(output, to)
    except UserError as err:
        _fail(str(err), err.exit_code)
    console.print(
        f"{done.tasks} uncertain rows -> {done.folder}/tasks.json (labeling interface: "
        f"{done.folder}/labeling_config.xml)",
        highlight=False,
        soft_wrap=True,
    )


@annotations.command("merge")
def merge(
    output: OutputArgument,
    export_file: Annotated[
        Path, typer.Argument(metavar="EXPORT", help="The Label Studio project's JSON export.")
    ],
    to: ToOption,
    keep_unlabelled: Annotated[
        bool,
        typer.Option(help="Keep uncertain rows nobody labelled, with the model's label."),
    ] = False,
) -> None:
    """Write data.parquet: the confident rows as the model labelled them and the uncertain
    rows with the labels people gave; `labelled_by` says who labelled each row."""
    from synth_ray.dataset.annotation import merge_labels

    try:
        done = merge_labels(output, export_file, to, keep_unlabelled)
    except UserError as err:
        _fail(str(err), err.exit_code)
    fate = "kept with the model's label" if keep_unlabelled else "left out"
    console.print(
        f"{done.rows} rows -> {done.file}: {done.by_model} labelled by the model, "
        f"{done.by_people} by people; {done.unlabelled} uncertain rows nobody labelled "
        f"({fate})",
        highlight=False,
        soft_wrap=True,
    )
