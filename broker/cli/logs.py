"""``eventwire logs NAME [--follow]``: what a function wrote to stdout/stderr, per invocation."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.text import Text

from broker.cli.common import JsonOption, err_console, open_store, print_json, run, settings
from broker.cli.output import to_json
from broker.config.settings import Settings
from broker.errors import UsageError
from broker.store.function_logs import LogEntry, function_logs
from broker.times import iso

FOLLOW_POLL_S = 0.5


def logs(
    ctx: typer.Context,
    function: Annotated[
        str, typer.Argument(metavar="FUNCTION", help="The function whose output to print.")
    ],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new output until interrupted.")
    ] = False,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", metavar="COUNT", help="Start with the output of this many attempts."
        ),
    ] = 20,
    as_json: bool = JsonOption,
) -> None:
    """Print the output of a function's latest invocations, each line tagged with its request id."""
    if limit < 0:
        raise UsageError(f"--limit must be 0 or more, got {limit}")
    if as_json and follow:
        raise UsageError("--json and --follow cannot be used together")
    config = settings(ctx)
    if as_json:
        print_json(to_json(run(_latest(config, function, limit))))
        return
    run(_print(config, function, limit, follow))


def format_entry(entry: LogEntry) -> list[str]:
    """``<started> <request id> <line>`` for each line of one attempt's output."""
    prefix = f"{iso(entry.started_at)} {entry.request_id}"
    return [f"{prefix} {line}" for line in entry.lines()]


async def _latest(config: Settings, function: str, limit: int) -> list[LogEntry]:
    async with open_store(config, reader=True) as engine:
        return await function_logs(engine, function, limit=limit)


async def _print(config: Settings, function: str, limit: int, follow: bool) -> None:
    async with open_store(config, reader=True) as engine:
        entries = await function_logs(engine, function, limit=limit)
        last = _show(entries, None)
        if last is None and follow:
            # Nothing to show yet: follow from the newest attempt on.
            newest = await function_logs(engine, function, limit=1)
            last = newest[-1].seq if newest else 0
        if follow:
            err_console.print(Text(f"following {function}'s output; Ctrl-C to stop", style="dim"))
        while follow:
            await asyncio.sleep(FOLLOW_POLL_S)
            last = _show(await function_logs(engine, function, after_seq=last or 0), last)


def _show(entries: list[LogEntry], last: int | None) -> int | None:
    for entry in entries:
        for line in format_entry(entry):
            typer.echo(line)
        last = entry.seq
    return last
