"""``eventwire functions``: the functions the store knows, with their queue and DLQ counts,
their process pools and how long their recent invocations took."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer

from broker.cli.app import App
from broker.cli.common import (
    JsonOption,
    err_console,
    open_store,
    print_json,
    run,
    settings,
)
from broker.cli.output import duration, emit, table, to_json, when
from broker.config.durations import format_duration
from broker.config.settings import Settings
from broker.observability.pools import PoolStats
from broker.store.history import FunctionRow, list_functions
from broker.store.pools import Durations, pool_figures, recent_durations

app = App(help="Inspect configured functions.")

COLUMNS = [
    "NAME",
    "INVOKER",
    "TIMEOUT",
    "RESERVED",
    "PENDING",
    "RUNNING",
    "DLQ",
    "THROTTLES",
    "WARM",
    "BUSY",
    "STARTING",
    "COLD STARTS",
    "P50",
    "P99",
]


@app.command("ls")
def ls(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """List functions: pending, running and dead-letter counts, process pools, durations.

    WARM, BUSY and STARTING count the processes of every serving process's pools
    (idle and ready, running an invocation, starting); COLD STARTS how many they
    started; P50 and P99 are the durations of the latest 1,000 attempts.
    """
    rows, pools, durations = run(_list(settings(ctx)))
    if as_json:
        print_json([_json_row(f, pools.get(f.name), durations[f.name]) for f in rows])
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
                    *_pool_cells(pools.get(f.name)),
                    _ms(durations[f.name].p50_ms),
                    _ms(durations[f.name].p99_ms),
                    when(f.updated_at),
                ]
                for f in rows
            ),
        )
    )


def _pool_cells(stats: PoolStats | None) -> list[Any]:
    if stats is None:
        return ["-", "-", "-", "-"]
    return [stats.idle, stats.busy, stats.starting, stats.cold_starts]


def _ms(value: float | None) -> str:
    return "-" if value is None else duration(value)


def _json_row(row: FunctionRow, pool: PoolStats | None, durations: Durations) -> dict[str, Any]:
    data: dict[str, Any] = to_json(row)
    data["pool"] = to_json(pool) if pool is not None else None
    data["duration_p50_ms"] = durations.p50_ms
    data["duration_p99_ms"] = durations.p99_ms
    return data


async def _list(
    config: Settings,
) -> tuple[list[FunctionRow], dict[str, PoolStats], dict[str, Durations]]:
    async with open_store(config, reader=True) as engine:
        rows = await list_functions(engine)
        pools = await pool_figures(engine, datetime.now(UTC))
        durations = await recent_durations(engine, [row.name for row in rows])
        return rows, pools, durations
