"""Invocation queue backends, chosen by URL (see :mod:`broker.queue.base` for the protocol)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.errors import UsageError
from broker.queue.base import InvocationQueue
from broker.queue.sql import Clock, utcnow
from broker.settings import Settings
from broker.store.engine import dialect_of

__all__ = ["InvocationQueue", "open_queue"]


@asynccontextmanager
async def open_queue(
    settings: Settings, engine: AsyncEngine, *, clock: Clock = utcnow
) -> AsyncIterator[InvocationQueue]:
    """The queue named by ``settings.effective_queue_url``, on ``engine`` when it is SQL."""
    url = settings.effective_queue_url
    if url != settings.database_url:
        raise UsageError(
            f"queue URL {url!r}: only the SQL store ({settings.database_url}) "
            "can hold the queue in this version"
        )
    queue: InvocationQueue
    if dialect_of(url) == "postgresql":
        from broker.queue.postgres import PostgresQueue

        pg = PostgresQueue(engine, clock=clock)
        await pg.start_listening()
        queue = pg
    else:
        from broker.queue.sqlite import SqliteQueue

        queue = SqliteQueue(engine, clock=clock)
    try:
        yield queue
    finally:
        await queue.close()
