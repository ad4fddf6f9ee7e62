"""The SQL behind ``eventwire destinations ls``: each external destination and how delivery goes.

Destinations are the registered functions with the ``deliver`` invoker
(:mod:`broker.functions.delivery`); their figures come from the history
like any function's. ``destination_delivery_failures`` counts the delivery
attempts that failed (each retry that failed counts), as Lambda's
``DestinationDeliveryFailures`` metric does.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.destinations.external import redacted
from broker.models import State
from broker.store.schema import attempts, dead_letters, functions, invocations

DELIVER = "deliver"


@dataclass(frozen=True, slots=True)
class DestinationRow:
    destination: str  # the URI, without its password
    function: str  # the built-in function that delivers to it
    pending: int
    running: int
    delivered: int
    given_up: int  # deliveries that ran out of retries (in the DLQ)
    destination_delivery_failures: int
    dead_letters: int  # not redriven yet


async def list_destinations(engine: AsyncEngine) -> list[DestinationRow]:
    """Every external destination the running configuration sends to, by URI."""
    i = invocations.c
    by_state = (
        select(
            i.function,
            func.count(case((i.state == State.PENDING.value, 1))).label("pending"),
            func.count(case((i.state == State.RUNNING.value, 1))).label("running"),
            func.count(case((i.state == State.SUCCEEDED.value, 1))).label("delivered"),
            func.count(case((i.state == State.FAILED.value, 1))).label("given_up"),
        )
        .join(functions, functions.c.name == i.function)
        .where(functions.c.invoker == DELIVER)
        .group_by(i.function)
    )
    failed_attempts = (
        select(i.function, func.count().label("failures"))
        .select_from(attempts.join(invocations, i.id == attempts.c.invocation_id))
        .join(functions, functions.c.name == i.function)
        .where(functions.c.invoker == DELIVER, attempts.c.status != "success")
        .group_by(i.function)
    )
    d = dead_letters.c
    dead = (
        select(d.function, func.count().label("dead"))
        .join(functions, functions.c.name == d.function)
        .where(functions.c.invoker == DELIVER, d.redriven_at.is_(None))
        .group_by(d.function)
    )
    registered = select(functions.c.name, functions.c.config).where(functions.c.invoker == DELIVER)
    async with engine.connect() as conn:
        states = {row.function: row for row in await conn.execute(by_state)}
        failures = {row.function: row.failures for row in await conn.execute(failed_attempts)}
        dead_counts = {row.function: row.dead for row in await conn.execute(dead)}
        rows = []
        for name, config in await conn.execute(registered):
            state = states.get(name)
            rows.append(
                DestinationRow(
                    destination=redacted(str((config or {}).get("url") or "?")),
                    function=name,
                    pending=state.pending if state else 0,
                    running=state.running if state else 0,
                    delivered=state.delivered if state else 0,
                    given_up=state.given_up if state else 0,
                    destination_delivery_failures=int(failures.get(name, 0)),
                    dead_letters=int(dead_counts.get(name, 0)),
                )
            )
    return sorted(rows, key=lambda row: row.destination)
