"""``eventwire dlq``: inspect dead letters, redrive their events, purge old ones."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from broker.cli.common import (
    JsonOption,
    err_console,
    open_store,
    print_json,
    run,
    settings,
)
from broker.cli.output import (
    attempts_view,
    details,
    emit,
    error_text,
    iso,
    payload_view,
    short_ids,
    styled,
    table,
    to_json,
    when,
)
from broker.durations import parse_duration
from broker.errors import UsageError
from broker.settings import Settings
from broker.store.history import (
    REDRIVE_CHUNK,
    AttemptRow,
    DeadLetterRow,
    RedriveResult,
    RedriveStatus,
    count_dead_letters,
    dead_letter_ids,
    get_dead_letter,
    list_dead_letters,
    purge_dead_letters,
    redrive,
    resolve_dead_letter_ids,
)

app = typer.Typer(help="Inspect, redrive and purge the dead-letter queue.", no_args_is_help=True)

FunctionArg = Annotated[str | None, typer.Argument(help="Only this function's dead letters.")]
IdArg = Annotated[str, typer.Argument(help="Dead letter id, or its first 8 or more characters.")]
SHOWN_RESULTS = 20


@app.command("ls")
def ls(
    ctx: typer.Context,
    function: FunctionArg = None,
    include_redriven: Annotated[
        bool, typer.Option("--all", help="Include dead letters already redriven.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many.")] = 100,
    as_json: bool = JsonOption,
) -> None:
    """List dead letters, newest first."""
    if limit < 1:
        raise UsageError(f"--limit must be 1 or more, got {limit}")
    rows = run(_list(settings(ctx), function, include_redriven, limit))
    if as_json:
        print_json(to_json(rows))
        return
    if not rows:
        err_console.print(
            "the dead-letter queue is empty" + (f" for {function}" if function else "")
        )
        return
    short = short_ids(row.id for row in rows)
    invocation = short_ids([*(row.invocation_id for row in rows), *(r.redriven_as for r in rows)])
    columns = ["ID", "FUNCTION", "INVOCATION", "CONDITION", "ATTEMPTS", "ERROR", "DEAD AT"]
    if include_redriven:
        columns.append("REDRIVEN AS")
    emit(
        table(
            columns,
            (
                [
                    short[row.id],
                    row.function,
                    invocation[row.invocation_id],
                    row.condition.value,
                    row.attempts,
                    error_text(row.error_type, row.error_message),
                    when(row.dead_at),
                    *([invocation.get(row.redriven_as or "")] if include_redriven else []),
                ]
                for row in rows
            ),
        )
    )


@app.command("show")
def show(ctx: typer.Context, id: IdArg, as_json: bool = JsonOption) -> None:
    """Show one dead letter: its event, why it died, and the attempts of its invocation."""
    row, attempts = run(_get(settings(ctx), id))
    if as_json:
        print_json({**to_json(row), "attempt_records": to_json(attempts)})
        return
    emit(
        details(
            [
                ("id", row.id),
                ("invocation", row.invocation_id),
                ("request id", row.request_id),
                ("function", row.function),
                ("origin", row.origin.value),
                ("condition", row.condition.value),
                ("attempts", row.attempts),
                ("first enqueued", when(row.first_enqueued_at)),
                ("dead at", when(row.dead_at)),
                (
                    "redriven",
                    f"{when(row.redriven_at)} as {row.redriven_as}" if row.redriven_at else None,
                ),
            ]
        )
    )
    emit(Text("\npayload", style="bold"))
    emit(payload_view(row.payload))
    error = error_text(row.error_type, row.error_message)
    if error is not None:
        emit(Text("\nlast error", style="bold"))
        emit(Text(error, style="red"))
    emit()
    emit(attempts_view(attempts))


@app.command("redrive")
def redrive_cmd(
    ctx: typer.Context,
    function: FunctionArg = None,
    ids: Annotated[
        list[str] | None,
        typer.Option("--id", help="A dead letter to redrive (id or 8+ character prefix); repeat."),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Redrive every dead letter of FUNCTION not yet redriven.")
    ] = False,
    as_json: bool = JsonOption,
) -> None:
    """Enqueue dead events again; each runs at most once however often this is repeated."""
    if ids and every:
        raise UsageError("give either --id ID ... or FUNCTION --all, not both")
    if every and function is None:
        raise UsageError("--all redrives every dead letter of one function: give FUNCTION")
    if not ids and not every:
        if function is not None:
            raise UsageError(
                f"to redrive every dead letter of {function} add --all; to pick some, give --id ID"
            )
        raise UsageError("nothing to redrive: give --id ID (repeatable) or FUNCTION --all")
    results = run(_redrive(settings(ctx), function, ids or [], every))
    counts = {status: 0 for status in RedriveStatus}
    for result in results:
        counts[result.status] += 1
    if as_json:
        print_json({**{s.value: n for s, n in counts.items()}, "results": to_json(results)})
        return
    if len(results) <= SHOWN_RESULTS:
        for result in results:
            line = Text(f"{result.dead_letter_id}  ")
            line.append_text(styled(result.status.value))
            if result.invocation_id:
                line.append(f"  as invocation {result.invocation_id}")
            emit(line)
    summary = (
        f"redriven {counts[RedriveStatus.REDRIVEN]}, "
        f"already redriven {counts[RedriveStatus.ALREADY_REDRIVEN]}"
    )
    if counts[RedriveStatus.NOT_FOUND]:
        summary += f", not found {counts[RedriveStatus.NOT_FOUND]}"
    emit(Text(summary))


@app.command("purge")
def purge(
    ctx: typer.Context,
    function: Annotated[str, typer.Argument(help="The function whose dead letters to delete.")],
    before: Annotated[
        str,
        typer.Option(
            "--before",
            help="Delete those dead before: YYYY-MM-DD, an ISO datetime (UTC unless "
            "it says otherwise) or an age like 7d or 12h.",
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: bool = JsonOption,
) -> None:
    """Delete dead letters (redriven or not) of FUNCTION that died before a time."""
    cutoff = parse_before(before, datetime.now(UTC))
    if not yes and not sys.stdin.isatty():
        raise UsageError("dlq purge asks for confirmation and stdin is not a terminal; pass --yes")
    config = settings(ctx)
    if not yes:
        count = run(_count(config, function, cutoff))
        if count == 0:
            _purged(0, function, cutoff, as_json)
            return
        typer.confirm(
            f"Delete {count} dead letters of {function} that died before {iso(cutoff)}?",
            abort=True,
            err=True,
        )
    _purged(run(_purge(config, function, cutoff)), function, cutoff, as_json)


def parse_before(value: str, now: datetime) -> datetime:
    """``--before``: a date (midnight UTC), an ISO datetime (naive means UTC) or an age."""
    text = value.strip()
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            "--before: expected a date like 2024-05-01, an ISO datetime "
            f"or an age like 7d or 12h, got {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _purged(count: int, function: str, cutoff: datetime, as_json: bool) -> None:
    if as_json:
        print_json({"purged": count, "function": function, "before": iso(cutoff)})
    else:
        emit(Text(f"purged {count} dead letters of {function} (dead before {iso(cutoff)})"))


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for a redrive of more than one chunk, on a terminal."""
    if total <= REDRIVE_CHUNK or not err_console.is_terminal:
        yield None
        return
    columns = (TextColumn("redriving"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("redrive", total=total)
        yield lambda n: bar.advance(task, n)


async def _redrive(
    config: Settings, function: str | None, ids: list[str], every: bool
) -> list[RedriveResult]:
    from broker.queue import open_queue

    async with open_store(config) as engine:
        if every:
            assert function is not None
            targets = await dead_letter_ids(engine, function)
        else:
            targets = await resolve_dead_letter_ids(engine, ids, function=function)
        async with open_queue(config, engine) as queue:
            with _progress(len(targets)) as progress:
                return await redrive(engine, queue, targets, datetime.now(UTC), progress=progress)


async def _list(
    config: Settings, function: str | None, include_redriven: bool, limit: int
) -> list[DeadLetterRow]:
    async with open_store(config) as engine:
        return await list_dead_letters(
            engine, function=function, include_redriven=include_redriven, limit=limit
        )


async def _get(config: Settings, id: str) -> tuple[DeadLetterRow, list[AttemptRow]]:
    async with open_store(config) as engine:
        return await get_dead_letter(engine, id)


async def _count(config: Settings, function: str, cutoff: datetime) -> int:
    async with open_store(config) as engine:
        return await count_dead_letters(engine, function=function, before=cutoff)


async def _purge(config: Settings, function: str, cutoff: datetime) -> int:
    async with open_store(config) as engine:
        return await purge_dead_letters(engine, function=function, before=cutoff)
