"""``eventwire dlq``: inspect dead letters, redrive their events, purge old ones."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.cli import dlq_transfer
from broker.cli.app import App
from broker.cli.common import (
    JsonOption,
    confirm_deletion,
    err_console,
    open_enqueuing,
    open_store,
    print_json,
    run,
    settings,
)
from broker.cli.dlq_options import (
    BeforeOption,
    ErrorTypeOption,
    GrepOption,
    OriginOption,
    Pacer,
    SinceOption,
    build_filter,
    parse_rate,
    parse_time,
)
from broker.cli.output import (
    attempts_view,
    details,
    emit,
    error_text,
    payload_view,
    short_ids,
    styled,
    table,
    to_json,
    when,
)
from broker.config.settings import Settings
from broker.errors import UsageError
from broker.store.dead_letters import (
    DeadLetterFilter,
    count_matching,
    list_matching,
    matching_ids,
    purge_matching,
)
from broker.store.history import (
    REDRIVE_CHUNK,
    AttemptRow,
    DeadLetterRow,
    RedriveResult,
    RedriveStatus,
    get_dead_letter,
    list_functions,
    redrive,
    resolve_dead_letter_ids,
)
from broker.times import iso

app = App(help="Inspect, redrive and purge the dead-letter queue.")

FunctionArg = Annotated[
    str | None, typer.Argument(metavar="FUNCTION", help="Only this function's dead letters.")
]
IdArg = Annotated[
    str, typer.Argument(metavar="ID", help="Dead letter id, or its first 8 or more characters.")
]
SHOWN_RESULTS = 20


@app.command("ls")
def ls(
    ctx: typer.Context,
    function: FunctionArg = None,
    include_redriven: Annotated[
        bool, typer.Option("--all", help="Include dead letters already redriven.")
    ] = False,
    error_type: ErrorTypeOption = None,
    since: SinceOption = None,
    before: BeforeOption = None,
    origin: OriginOption = None,
    grep: GrepOption = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="COUNT", help="At most this many.")
    ] = 100,
    as_json: bool = JsonOption,
) -> None:
    """List dead letters, newest first, filtered by function, error, time, origin or text."""
    if limit < 1:
        raise UsageError(f"--limit must be 1 or more, got {limit}")
    where = build_filter(
        function=function,
        error_types=error_type,
        since=since,
        before=before,
        origins=origin,
        grep=grep,
        include_redriven=include_redriven,
    )
    rows, total = run(_list(settings(ctx), where, limit))
    if as_json:
        print_json(to_json(rows))
        return
    if not rows:
        err_console.print(
            "the dead-letter queue is empty"
            + (f" for {function}" if function else "")
            + (" (with these filters)" if where.narrows else "")
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
    if total > len(rows):
        err_console.print(f"showing the newest {len(rows)} of {total}; --limit shows more")


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
                (
                    "redriving to",
                    row.redrive_to if row.redrive_to and not row.redriven_at else None,
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
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="FUNCTION|ID",
            help="The function whose dead letters to redrive (with --edit: a dead letter id).",
        ),
    ] = None,
    ids: Annotated[
        list[str] | None,
        typer.Option(
            "--id",
            metavar="ID",
            help="A dead letter to redrive (id or 8+ character prefix); repeat.",
        ),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Redrive every dead letter of FUNCTION not yet redriven.")
    ] = False,
    error_type: ErrorTypeOption = None,
    since: SinceOption = None,
    before: BeforeOption = None,
    origin: OriginOption = None,
    grep: GrepOption = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", metavar="FUNCTION", help="Invoke this function instead of the original."
        ),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option("--rate", metavar="RATE", help="At most this many a second (50/s, 600/m)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be redriven; change nothing.")
    ] = False,
    edit: Annotated[
        bool, typer.Option("--edit", help="Edit the event in $EDITOR first (one dead letter).")
    ] = False,
    as_json: bool = JsonOption,
) -> None:
    """Enqueue dead events again; each runs at most once however often this is repeated.

    Select by --id, by FUNCTION --all, or by filters (--error-type, --since,
    --before, --origin, --grep), with or without FUNCTION.
    """
    where = build_filter(
        function=None if edit else target,
        error_types=error_type,
        since=since,
        before=before,
        origins=origin,
        grep=grep,
    )
    request = _RedriveRequest(
        ids=_edit_ids(target, ids) if edit else list(ids or []),
        where=where,
        every=every,
        to=to,
        rate=parse_rate(rate) if rate else None,
        edit=edit,
    )
    request.check()
    config = settings(ctx)
    if dry_run:
        _dry_run(*run(_selection(config, request, dry_run=True)), request, as_json)
        return
    if edit:
        letter = run(_selection(config, request, dry_run=True))[0][0]
        if letter.redriven_at is not None:
            raise UsageError(
                f"dead letter {letter.id} was redriven already, as {letter.redriven_as}"
            )
        request.payloads = {letter.id: _edited(letter)}
    started = time.monotonic()
    progress = _Counted()
    try:
        results = run(_redrive(config, request, progress))
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted after {progress.done} of {progress.total}; run the same command "
            "again to redrive the rest (nothing runs twice)"
        )
        raise typer.Exit(130) from None
    _report(results, time.monotonic() - started, as_json)


@dataclass
class _RedriveRequest:
    ids: list[str]
    where: DeadLetterFilter
    every: bool
    to: str | None
    rate: float | None
    edit: bool
    payloads: dict[str, bytes] = field(default_factory=dict)

    def check(self) -> None:
        function, filtered = self.where.function, self.where.narrows
        if self.edit and (self.every or filtered):
            raise UsageError("--edit redrives one dead letter: give its id, without filters")
        if self.ids and (self.every or filtered):
            raise UsageError("give either --id ID ... or FUNCTION --all / filters, not several")
        if self.ids and function is not None and not self.edit:
            return  # ids, checked to belong to FUNCTION
        if self.every and function is None:
            raise UsageError("--all redrives every dead letter of one function: give FUNCTION")
        if not self.ids and not self.every and not filtered:
            if function is not None:
                raise UsageError(
                    f"to redrive every dead letter of {function} add --all; to pick some, give "
                    "--id ID or filters (--error-type, --since, --before, --origin, --grep)"
                )
            raise UsageError(
                "nothing to redrive: give --id ID (repeatable), FUNCTION --all, or filters"
            )


def _edit_ids(target: str | None, ids: list[str] | None) -> list[str]:
    chosen = [*([target] if target else []), *(ids or [])]
    if len(chosen) != 1:
        raise UsageError("--edit redrives one dead letter: give exactly one id")
    return chosen


def _edited(letter: DeadLetterRow) -> bytes:
    """The event after the user edited it in $EDITOR; it must still be JSON."""
    try:
        text = json.dumps(json.loads(letter.payload.decode("utf-8")), indent=2) + "\n"
    except (ValueError, RecursionError):
        raise UsageError(
            f"dead letter {letter.id}: its event is not UTF-8 JSON and cannot be edited"
        ) from None
    import click  # only here: the editor is the one thing of Click's that Typer does not offer

    changed = click.edit(text, extension=".json", require_save=False)
    if changed is None:
        raise UsageError("the editor did not save the event; nothing was redriven")
    try:
        json.loads(changed)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"the edited event is not JSON ({exc}); nothing was redriven") from None
    return changed.encode("utf-8")


class _Counted:
    """Progress counts, kept so an interrupted redrive can say how far it got."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0

    def __call__(self, n: int) -> None:
        self.done += n


def _dry_run(
    rows: list[DeadLetterRow], total: int, request: _RedriveRequest, as_json: bool
) -> None:
    if as_json:
        print_json(
            {
                "dry_run": True,
                "would_redrive": total,
                "to": request.to,
                "dead_letters": to_json(rows),
            }
        )
        return
    if rows:
        short = short_ids(row.id for row in rows)
        emit(
            table(
                ["ID", "FUNCTION", "TO", "ERROR", "DEAD AT"],
                (
                    [
                        short[row.id],
                        row.function,
                        row.redrive_to or request.to or row.function,
                        error_text(row.error_type, row.error_message),
                        when(row.dead_at),
                    ]
                    for row in rows[:SHOWN_RESULTS]
                ),
            )
        )
    more = f" (the first {SHOWN_RESULTS} shown)" if total > SHOWN_RESULTS else ""
    emit(Text(f"would redrive {total} dead letters{more}; nothing was changed"))


def _report(results: list[RedriveResult], elapsed_s: float, as_json: bool) -> None:
    counts = {status: 0 for status in RedriveStatus}
    for result in results:
        counts[result.status] += 1
    if as_json:
        print_json(
            {
                **{s.value: n for s, n in counts.items()},
                "elapsed_s": round(elapsed_s, 3),
                "results": to_json(results),
            }
        )
        return
    if len(results) <= SHOWN_RESULTS:
        for result in results:
            line = Text(f"{result.dead_letter_id}  ")
            line.append_text(styled(result.status.value))
            if result.invocation_id:
                line.append(f"  as invocation {result.invocation_id} of {result.function}")
            emit(line)
    summary = (
        f"redriven {counts[RedriveStatus.REDRIVEN]}, "
        f"already redriven {counts[RedriveStatus.ALREADY_REDRIVEN]}"
    )
    if counts[RedriveStatus.NOT_FOUND]:
        summary += f", not found {counts[RedriveStatus.NOT_FOUND]}"
    targets = sorted({r.function for r in results if r.function})
    if targets:
        summary += " → " + ", ".join(targets)
    if results:
        summary += f" in {elapsed_s:.1f}s ({len(results) / max(elapsed_s, 1e-3):.0f}/s)"
    emit(Text(summary))


@app.command("purge")
def purge(
    ctx: typer.Context,
    function: Annotated[
        str, typer.Argument(metavar="FUNCTION", help="The function whose dead letters to delete.")
    ],
    before: Annotated[
        str,
        typer.Option(
            "--before",
            metavar="WHEN",
            help="Delete those dead before: YYYY-MM-DD, an ISO datetime (UTC unless "
            "it says otherwise) or an age like 7d or 12h.",
        ),
    ],
    error_type: ErrorTypeOption = None,
    origin: OriginOption = None,
    grep: GrepOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: bool = JsonOption,
) -> None:
    """Delete dead letters (redriven or not) of FUNCTION that died before a time."""
    where = build_filter(
        function=function,
        error_types=error_type,
        since=None,
        before=before,
        origins=origin,
        grep=grep,
        include_redriven=True,
    )
    assert where.before is not None
    cutoff = where.before
    config = settings(ctx)
    if not confirm_deletion(
        "dlq purge",
        yes,
        lambda: run(_count(config, where)),
        lambda n: f"Delete {n} dead letters of {function} that died before {iso(cutoff)}?",
    ):
        _purged(0, function, cutoff, as_json)
        return
    _purged(run(_purge(config, where)), function, cutoff, as_json)


def parse_before(value: str, now: datetime) -> datetime:
    """``--before``: a date (midnight UTC), an ISO datetime (naive means UTC) or an age."""
    return parse_time(value, now, "--before")


def _purged(count: int, function: str, cutoff: datetime, as_json: bool) -> None:
    if as_json:
        print_json({"purged": count, "function": function, "before": iso(cutoff)})
    else:
        emit(Text(f"purged {count} dead letters of {function} (dead before {iso(cutoff)})"))


@contextmanager
def _progress(total: int, counted: _Counted) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for a redrive of more than one chunk, on a terminal."""
    counted.total = total
    if total <= 1 or not err_console.is_terminal:
        yield counted
        return
    columns = (
        TextColumn("redriving"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("redrive", total=total)

        def advance(n: int) -> None:
            counted(n)
            bar.advance(task, n)

        yield advance


async def _selection(
    config: Settings, request: _RedriveRequest, *, dry_run: bool
) -> tuple[list[DeadLetterRow], int]:
    """The dead letters a redrive would take (``dry_run``: rows for a preview) and how many."""
    async with open_store(config) as engine:
        await _check_target(engine, request.to)
        if request.ids:
            ids = await resolve_dead_letter_ids(
                engine, request.ids, function=request.where.function
            )
            rows = [(await get_dead_letter(engine, id))[0] for id in ids]
            rows = [row for row in rows if row.redriven_at is None or request.edit]
            return rows, len(rows)
        total = await count_matching(engine, request.where)
        return await list_matching(engine, request.where, limit=SHOWN_RESULTS), total


async def _check_target(engine: AsyncEngine, to: str | None) -> None:
    if to is None:
        return
    known = [row.name for row in await list_functions(engine)]
    if to not in known:
        raise UsageError(
            f"--to: unknown function {to!r}; functions of the running configuration: "
            + (", ".join(known) or "none")
        )


async def _redrive(
    config: Settings, request: _RedriveRequest, counted: _Counted
) -> list[RedriveResult]:

    async with open_store(config) as engine:
        await _check_target(engine, request.to)
        if request.ids:
            targets = await resolve_dead_letter_ids(
                engine, request.ids, function=request.where.function
            )
        else:
            targets = await matching_ids(engine, request.where)
        pacer = Pacer(request.rate) if request.rate else None
        async with open_enqueuing(config, engine) as queue:
            with _progress(len(targets), counted) as progress:
                return await redrive(
                    engine,
                    queue,
                    targets,
                    datetime.now(UTC),
                    progress=progress,
                    to=request.to,
                    payloads=request.payloads,
                    chunk_size=pacer.chunk_size(REDRIVE_CHUNK) if pacer else None,
                    pace=pacer,
                )


async def _list(
    config: Settings, where: DeadLetterFilter, limit: int
) -> tuple[list[DeadLetterRow], int]:
    async with open_store(config, reader=True) as engine:
        rows = await list_matching(engine, where, limit=limit)
        total = len(rows) if len(rows) < limit else await count_matching(engine, where)
        return rows, total


async def _get(config: Settings, id: str) -> tuple[DeadLetterRow, list[AttemptRow]]:
    async with open_store(config, reader=True) as engine:
        return await get_dead_letter(engine, id)


async def _count(config: Settings, where: DeadLetterFilter) -> int:
    async with open_store(config, reader=True) as engine:
        return await count_matching(engine, where)


async def _purge(config: Settings, where: DeadLetterFilter) -> int:
    async with open_store(config) as engine:
        return await purge_matching(engine, where)


app.command("export")(dlq_transfer.export)
app.command("import")(dlq_transfer.import_)
