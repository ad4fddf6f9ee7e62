"""The SQL queue's waits read indexes, not the history.

A finished invocation stays in ``invocations`` for the history's retention, so a
query that walks a function's rows gets slower for as long as a deployment runs.
These tests hold the query an idle dispatcher repeats (when is anything next due)
to partial indexes of unfinished invocations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.models import FunctionLimits
from broker.queue.postgres import PostgresQueue
from broker.queue.sql import SqlQueue
from broker.queue.sqlite import SqliteQueue
from tests.support.stores import BACKENDS, migrated_engine

F = {"f": FunctionLimits(lease_s=10), "g": FunctionLimits(lease_s=10)}


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(request.param, tmp_path) as value:
        yield value


async def plan(engine: AsyncEngine, queue: SqlQueue) -> str:
    """The plan of the statement ``queue.next_due`` sends, as the store would run it."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        await queue.next_due(F)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    [(statement, parameters)] = [s for s in sent if "min(" in s[0]]
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return "\n".join(str(row[-1]) for row in rows)
        # Tables this small would be read whole anyway: ask whether the index can serve.
        await conn.exec_driver_sql("SET enable_seqscan = off")
        rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
        return "\n".join(str(row[0]) for row in rows)


async def test_next_due_reads_only_the_due_indexes(engine: AsyncEngine) -> None:
    cls = PostgresQueue if engine.dialect.name == "postgresql" else SqliteQueue
    found = await plan(engine, cls(engine))
    assert "ix_invocations_delayed" in found
    assert "ix_invocations_leased" in found
    if engine.dialect.name == "sqlite":
        assert found.count("COVERING INDEX") == 2, found
    else:
        assert "Seq Scan" not in found, found
