"""``eventwire config``: check a configuration file without starting anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from broker.cli.app import App
from broker.cli.common import settings
from broker.loading import load_config

app = App(help="Check configuration files.")


@app.command("validate")
def validate(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            metavar="FILE",
            help="The file to check [default: EVENTWIRE_CONFIG or eventwire.yaml].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Load and validate a configuration file; a problem is named with its file and line."""
    target = path if path is not None else Path(settings(ctx).config)
    config = load_config(target)
    count = len(config.functions)
    summary = f"ok: {target}: {count} function{'' if count == 1 else 's'}"
    if config.schedules:
        summary += f", {len(config.schedules)} schedule{'' if len(config.schedules) == 1 else 's'}"
    typer.echo(summary)
