"""What every `synth-ray` command shares: the Typer app, the consoles, the one-line error.

python -c "from synth_ray.cli.common import app; print(app.info.help)"
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

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
