"""``eventwire mappings``: see each mapping's state, lag and iterator age; disable, enable, seek.

Disable and enable take effect without a restart: the pollers of every
``serve`` process read the desired state every second. A seek asks them to
read a Kafka topic or Redis stream again from a time; the replayed records
are invoked again (they get new idempotency keys).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.text import Text

from broker.cli.app import App
from broker.cli.common import JsonOption, err_console, open_store, print_json, run, settings
from broker.cli.output import emit, table, to_json, when
from broker.config.settings import Settings
from broker.errors import UsageError
from broker.store.mappings import (
    DISABLED,
    ENABLED,
    MappingRow,
    get_mapping,
    list_mappings,
    request_seek,
    set_desired,
)

app = App(help="See event source mappings; disable, enable and seek them.")

NameArg = Annotated[str, typer.Argument(metavar="MAPPING", help="The mapping's name.")]
LS_COLUMNS = ["NAME", "SOURCE", "FUNCTION", "STATE", "REASON", "LAG", "ITERATOR AGE", "REPORTED"]

STATE_STYLES = {ENABLED: "green", DISABLED: "dim", "failing": "red"}


def age_text(milliseconds: int | None) -> str | None:
    if milliseconds is None:
        return None
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _json(row: MappingRow) -> dict[str, object]:
    return {**to_json(row), "state": row.state}


@app.command("ls")
def ls(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Mappings with their state (enabled | disabled | failing and why), lag and iterator age."""
    rows = run(_list(settings(ctx)))
    if as_json:
        print_json([_json(row) for row in rows])
        return
    if not rows:
        err_console.print("no mappings registered")
        return
    emit(
        table(
            LS_COLUMNS,
            (
                [
                    row.name,
                    row.source,
                    row.function,
                    Text(row.state, style=STATE_STYLES.get(row.state, "")),
                    row.status_reason if row.state == "failing" else None,
                    row.lag,
                    age_text(row.iterator_age_ms),
                    when(row.reported_at),
                ]
                for row in rows
            ),
        )
    )


@app.command("disable")
def disable(ctx: typer.Context, name: NameArg) -> None:
    """Stop reading the source (running batches finish); nothing is lost."""
    run(_set(settings(ctx), name, DISABLED))
    emit(Text(f"{name} disabled"))


@app.command("enable")
def enable(ctx: typer.Context, name: NameArg) -> None:
    """Read the source again from where the mapping stopped."""
    run(_set(settings(ctx), name, ENABLED))
    emit(Text(f"{name} enabled"))


@app.command("seek")
def seek(
    ctx: typer.Context,
    name: NameArg,
    to_timestamp: Annotated[
        str,
        typer.Option(
            "--to-timestamp",
            metavar="WHEN",
            help="Read again from this time (ISO 8601; naive times are UTC) or epoch seconds.",
        ),
    ],
    as_json: bool = JsonOption,
) -> None:
    """Replay a Kafka topic or Redis stream from a time (its records are invoked again)."""
    moment = parse_timestamp(to_timestamp)
    generation = run(_seek(settings(ctx), name, moment))
    if as_json:
        print_json({"name": name, "seek_to": moment.isoformat(), "generation": generation})
        return
    emit(Text(f"{name}: reading again from {when(moment)} (seek {generation})"))


def parse_timestamp(value: str) -> datetime:
    text = value.strip()
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise UsageError(
            f"--to-timestamp: expected an ISO 8601 time like 2026-11-01T05:00:00Z or epoch "
            f"seconds, got {value!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _list(config: Settings) -> list[MappingRow]:
    async with open_store(config, reader=True) as engine:
        return await list_mappings(engine)


async def _set(config: Settings, name: str, desired: str) -> None:
    async with open_store(config) as engine:
        await get_mapping(engine, name)
        await set_desired(engine, name, desired, datetime.now(UTC))


async def _seek(config: Settings, name: str, moment: datetime) -> int:
    async with open_store(config) as engine:
        return await request_seek(engine, name, moment, datetime.now(UTC))
