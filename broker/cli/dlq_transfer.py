"""``eventwire dlq export`` and ``dlq import``: dead letters to and from JSON Lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.text import Text

from broker.cli.common import JsonOption, err_console, open_store, print_json, run, settings
from broker.cli.dlq_options import (
    BeforeOption,
    ErrorTypeOption,
    GrepOption,
    OriginOption,
    SinceOption,
    build_filter,
)
from broker.cli.output import emit
from broker.config.settings import Settings
from broker.errors import UsageError
from broker.store.dead_letters import DeadLetterFilter, import_dead_letters, iter_matching
from broker.store.dlq_lines import read_lines, to_line


def export(
    ctx: typer.Context,
    function: Annotated[
        str | None, typer.Argument(metavar="FUNCTION", help="Only this function's dead letters.")
    ] = None,
    include_redriven: Annotated[
        bool, typer.Option("--all", help="Include dead letters already redriven.")
    ] = False,
    error_type: ErrorTypeOption = None,
    since: SinceOption = None,
    before: BeforeOption = None,
    origin: OriginOption = None,
    grep: GrepOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write to this file, not stdout."),
    ] = None,
    as_json: bool = JsonOption,
) -> None:
    """Write dead letters as JSON Lines (one per line, oldest first, payloads byte for byte).

    The summary goes to stderr (as JSON with --json), so stdout is only the lines.
    """
    where = build_filter(
        function=function,
        error_types=error_type,
        since=since,
        before=before,
        origins=origin,
        grep=grep,
        include_redriven=include_redriven,
    )
    config = settings(ctx)
    if output is None:
        count = run(_export(config, where, sys.stdout))
    else:
        try:
            with output.open("w", encoding="utf-8") as file:
                count = run(_export(config, where, file))
        except OSError as exc:
            raise UsageError(f"--output: cannot write {output}: {exc.strerror}") from None
    summary = {"exported": count, "to": str(output) if output else "stdout"}
    if as_json:
        err_console.print_json(json.dumps(summary))
    else:
        err_console.print(f"exported {count} dead letters" + (f" to {output}" if output else ""))


def import_(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(metavar="FILE", help="A JSON Lines file from `dlq export`; - for stdin."),
    ],
    as_json: bool = JsonOption,
) -> None:
    """Add the dead letters of a `dlq export` file; those already present (by id) are skipped,
    so importing a file twice adds nothing the second time."""
    if file == "-":
        rows = read_lines(sys.stdin, "<stdin>")
    else:
        try:
            with open(file, encoding="utf-8") as handle:
                rows = read_lines(handle, file)
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{file}: not UTF-8 text; expected JSON Lines") from None
    created = run(_import(settings(ctx), rows))
    if as_json:
        print_json({"imported": created, "already_present": len(rows) - created})
    else:
        emit(Text(f"imported {created}, already present {len(rows) - created}"))


async def _export(config: Settings, where: DeadLetterFilter, out: TextIO) -> int:
    count = 0
    async with open_store(config) as engine:
        async for page in iter_matching(engine, where):
            out.write("".join(to_line(row) + "\n" for row in page))
            count += len(page)
    out.flush()
    return count


async def _import(config: Settings, rows: list[dict[str, object]]) -> int:
    async with open_store(config) as engine:
        return await import_dead_letters(engine, rows)
