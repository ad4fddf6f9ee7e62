"""``eventwire functions``: the functions the store knows, with their queue and DLQ counts."""

from __future__ import annotations

import typer

from broker.cli.common import (
    JsonOption,
    err_console,
    open_store,
    print_json,
    run,
    settings,
)
from broker.cli.output import emit, table, to_json, when
from broker.durations import format_duration
from broker.settings import Settings
from broker.store.history import FunctionRow, list_functions

app = typer.Typer(help="Inspect configured functions.", no_args_is_help=True)

COLUMNS = ["NAME", "INVOKER", "TIMEOUT", "RESERVED", "PENDING", "RUNNING", "DLQ", "THROTTLES"]


@app.command("ls")
def ls(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """List functions with their pending, running and dead-letter counts."""
    rows = run(_list(settings(ctx)))
    if as_json:
        print_json(to_json(rows))
        return
    if not rows:
        err_console.print("no functions registered")
        return
    emit(
        table(
            [*COLUMNS, "UPDATED"],
            (
                [
                    f.name,
                    f.invoker,
                    format_duration(f.timeout_s),
                    f.reserved_concurrency,
                    f.pending,
                    f.running,
                    f.dead_letters,
                    f.throttles,
                    when(f.updated_at),
                ]
                for f in rows
            ),
        )
    )


async def _list(config: Settings) -> list[FunctionRow]:
    async with open_store(config) as engine:
        return await list_functions(engine)
