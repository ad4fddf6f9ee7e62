"""The SQLite engine: a query cancelled half-way does not leave the database locked."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from broker.store.engine import create_engine

SLOW_QUERY = text(
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000) "
    "SELECT count(*) FROM n"
)


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The cancelled query's frames are a reference cycle: the collector would free its
    cursor at some moment of its own choosing, and with it the lock. Not during the test."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_query_cancelled_half_way_leaves_the_write_lock_free(
    tmp_path: Path, no_gc: None
) -> None:
    path = tmp_path / "eventwire.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        in_transaction = asyncio.Event()

        async def query() -> None:
            async with engine.connect() as conn:  # BEGIN IMMEDIATE: the write lock
                await conn.execute(text("SELECT 1"))
                in_transaction.set()
                await conn.execute(SLOW_QUERY)

        task = asyncio.create_task(query())
        await in_transaction.wait()
        await asyncio.sleep(0.01)
        task.cancel()  # as a stopping dispatcher cancels its idle poll
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()

        other = sqlite3.connect(path, timeout=1, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # "database is locked" after 1 s if still held
            other.execute("ROLLBACK")
        finally:
            other.close()
    finally:
        await engine.dispose()
