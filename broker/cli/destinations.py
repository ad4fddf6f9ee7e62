"""``eventwire destinations``: queues, topics, streams and webhooks records are delivered to."""

from __future__ import annotations

import typer

from broker.cli.app import App
from broker.cli.common import JsonOption, err_console, open_store, print_json, run, settings
from broker.cli.output import emit, table, to_json
from broker.config.settings import Settings
from broker.store.deliveries import DestinationRow, list_destinations

app = App(help="Inspect external destinations and their deliveries.")


@app.command("ls")
def ls(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """List external destinations: deliveries waiting, done and given up, and failed attempts.

    FAILURES (`destination_delivery_failures`) counts every delivery attempt
    that failed, retries included; GIVEN UP the deliveries that ran out of
    retries and went to the DLQ under the FUNCTION shown; DLQ those still there
    (`eventwire dlq ls FUNCTION`; `dlq redrive` delivers them again).
    """
    rows = run(_list(settings(ctx)))
    if as_json:
        print_json([to_json(row) for row in rows])
        return
    if not rows:
        err_console.print("no external destinations registered")
        return
    emit(
        table(
            [
                "DESTINATION",
                "FUNCTION",
                "PENDING",
                "RUNNING",
                "DELIVERED",
                "FAILURES",
                "GIVEN UP",
                "DLQ",
            ],
            (
                [
                    r.destination,
                    r.function,
                    r.pending,
                    r.running,
                    r.delivered,
                    r.destination_delivery_failures,
                    r.given_up,
                    r.dead_letters,
                ]
                for r in rows
            ),
        )
    )


async def _list(config: Settings) -> list[DestinationRow]:
    async with open_store(config, reader=True) as engine:
        return await list_destinations(engine)
