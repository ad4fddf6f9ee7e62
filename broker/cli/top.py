"""``eventwire top``: a live view of what runs, read from the store every second.

Per function: attempts and errors per second over the last minute, p50 and p99
duration of the latest attempts, pending and running invocations, how long the
oldest pending one has waited, and the DLQ; per mapping its state, lag and
iterator age; the schedules due next. ``--once --json`` prints one snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live

from broker.cli.common import JsonOption, open_store, print_json, run, settings
from broker.cli.output import duration, emit, table, when
from broker.config.settings import Settings
from broker.store.overview import overview

FUNCTION_COLUMNS = [
    "FUNCTION", "INV/S", "ERR/S", "ERR %", "P50", "P99", "PENDING", "RUNNING", "RESERVED",
    "OLDEST", "DLQ",
]  # fmt: skip


def view(data: dict[str, Any]) -> Group:
    def ms(value: float | None) -> str:
        return "-" if value is None else duration(value)

    parts: list[Any] = [
        table(
            FUNCTION_COLUMNS,
            (
                [
                    f["name"],
                    f"{f['invocations_per_s']:.2f}",
                    f"{f['errors_per_s']:.2f}",
                    f"{f['error_rate'] * 100:.0f}",
                    ms(f["p50_ms"]),
                    ms(f["p99_ms"]),
                    f["pending"],
                    f["running"],
                    "-" if f["reserved_concurrency"] is None else f["reserved_concurrency"],
                    f"{f['oldest_pending_age_s']:.0f}s" if f["pending"] else "-",
                    f["dead_letters"],
                ]
                for f in data["functions"]
            ),
            title=f"eventwire top — {data['at'][:19]}Z (rates over the last minute)",
        )
    ]
    if data["mappings"]:
        parts.append(
            table(
                ["MAPPING", "KIND", "STATUS", "LAG", "ITERATOR AGE"],
                (
                    [
                        m["name"],
                        m["kind"],
                        m["status"],
                        "-" if m["lag"] is None else m["lag"],
                        "-" if m["iterator_age_ms"] is None else duration(m["iterator_age_ms"]),
                    ]
                    for m in data["mappings"]
                ),
            )
        )
    if data["schedules"]:
        parts.append(
            table(
                ["SCHEDULE", "FUNCTION", "NEXT"],
                (
                    [s["name"], s["function"], when(datetime.fromisoformat(s["next_slot_at"]))]
                    for s in data["schedules"]
                ),
            )
        )
    return Group(*parts)


def top(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    as_json: bool = JsonOption,
    interval: Annotated[
        float,
        typer.Option(metavar="SECONDS", min=0.2, help="Seconds between refreshes."),
    ] = 1.0,
) -> None:
    """A live view of functions, mappings and schedules, refreshed every second (Ctrl-C
    ends it). Works against any store: it reads what every serve process wrote."""
    config = settings(ctx)
    if as_json and not once:
        raise typer.BadParameter("--json prints one snapshot: use it with --once")
    if once:
        data = run(_once(config))
        if as_json:
            print_json(data)
        else:
            emit(view(data))
        return
    with contextlib.suppress(KeyboardInterrupt):
        run(_live(config, interval))


async def _once(config: Settings) -> dict[str, Any]:
    async with open_store(config, reader=True) as engine:
        return await overview(engine)


async def _live(config: Settings, interval: float) -> None:
    """Open the store once (its schema checked once), then read it every ``interval``."""
    async with open_store(config, reader=True) as engine:
        with Live(view(await overview(engine)), auto_refresh=False, screen=False) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(view(await overview(engine)), refresh=True)
