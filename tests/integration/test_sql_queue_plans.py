"""The SQL queue's waits and running counts read indexes, not the history.

A finished invocation stays in ``invocations`` for the history's retention, so a
query that walks a function's rows gets slower for as long as a deployment runs.
These tests hold the queries a dispatcher repeats — when is anything next due
(before each wait), how many run now (each lease, with reserved or account-wide
concurrency) — to partial indexes of unfinished invocations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.ids import new_id
from broker.models import FunctionLimits, NewInvocation
from broker.queue.postgres import PostgresQueue
from broker.queue.sql import SqlQueue
from broker.queue.sqlite import SqliteQueue
from tests.support.stores import BACKENDS, migrated_engine

F = {"f": FunctionLimits(lease_s=10), "g": FunctionLimits(lease_s=10)}


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(request.param, tmp_path) as value:
        yield value


async def plans(engine: AsyncEngine, step: Callable[[], Awaitable[object]], marker: str) -> str:
    """The plans of the statements holding ``marker`` that ``step`` sends, as the store
    would run them."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if marker in statement:
            sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        await step()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    assert sent, f"no statement with {marker!r}"
    found = []
    async with engine.connect() as conn:
        for statement, parameters in sent:
            if engine.dialect.name == "sqlite":
                rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                found += [str(row[-1]) for row in rows]
            else:
                # Tables this small would be read whole anyway: ask whether an index serves.
                await conn.exec_driver_sql("SET enable_seqscan = off")
                rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
                found += [str(row[0]) for row in rows]
    return "\n".join(found)


def queue(engine: AsyncEngine, **kw: Any) -> SqlQueue:
    cls = PostgresQueue if engine.dialect.name == "postgresql" else SqliteQueue
    return cls(engine, **kw)


async def test_next_due_reads_only_the_due_indexes(engine: AsyncEngine) -> None:
    q = queue(engine)
    found = await plans(engine, lambda: q.next_due(F), "min(")
    assert "ix_invocations_delayed" in found
    assert "ix_invocations_leased" in found
    if engine.dialect.name == "sqlite":
        assert found.count("COVERING INDEX") == 2, found
    else:
        assert "Seq Scan" not in found, found


async def test_running_counts_read_only_the_leased_index(engine: AsyncEngine) -> None:
    q = queue(engine, account_concurrency=10)
    limits = {"f": FunctionLimits(lease_s=10, reserved_concurrency=2)}
    await q.enqueue([NewInvocation(id=new_id(), function="f", payload=b"{}")])
    found = await plans(engine, lambda: q.lease(1, "a", limits, datetime.now(UTC)), "count(")
    if engine.dialect.name == "sqlite":
        assert found.count("COVERING INDEX ix_invocations_leased") == 2, found
    else:
        assert found.count("ix_invocations_leased") >= 2, found
        assert "Seq Scan" not in found, found
