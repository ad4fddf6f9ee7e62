"""Invocation queue backends, chosen by URL (see :mod:`broker.queue.base` for the protocol).

``sqlite+aiosqlite://`` and ``postgresql+asyncpg://`` keep the queue in the SQL
store itself; ``redis://`` (``rediss://``, ``unix://``) keeps the hot path in
Redis and the history in the SQL store. A backend's client library is imported
only when its URL is used.

May import the store, config and the domain model; the Redis history writer
(:mod:`broker.history`) builds on this package, not the other way round.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config.settings import Settings
from broker.errors import UsageError
from broker.extras import require
from broker.observability.tracing import NO_TRACING, Tracing
from broker.queue.base import InvocationQueue
from broker.queue.sql import Clock, utcnow
from broker.queue.traced import TracedQueue
from broker.store.engine import dialect_of

__all__ = ["InvocationQueue", "is_redis", "open_queue", "require_redis"]

REDIS_SCHEMES = ("redis", "rediss", "unix")


def is_redis(url: str) -> bool:
    return url.partition("://")[0] in REDIS_SCHEMES


def require_redis() -> None:
    """Before importing :mod:`broker.queue.redis`: say which extra it needs."""
    require("redis", "redis", "the Redis queue (EVENTWIRE_QUEUE_URL)")


@asynccontextmanager
async def open_queue(
    settings: Settings,
    engine: AsyncEngine,
    *,
    clock: Clock = utcnow,
    tracing: Tracing = NO_TRACING,
) -> AsyncIterator[InvocationQueue]:
    """The queue named by ``settings.effective_queue_url``, on ``engine`` when it is SQL;
    its enqueues make spans when ``tracing`` is on."""
    async with _open_backend(settings, engine, clock) as queue:
        yield TracedQueue(queue, tracing) if tracing.enabled else queue


@asynccontextmanager
async def _open_backend(
    settings: Settings, engine: AsyncEngine, clock: Clock
) -> AsyncIterator[InvocationQueue]:
    url = settings.effective_queue_url
    if is_redis(url):
        require_redis()
        from broker.queue.redis import open_redis_queue

        async with open_redis_queue(settings, engine, clock=clock) as redis_queue:
            yield redis_queue
        return
    if url != settings.database_url:
        raise UsageError(
            f"queue URL {url!r}: expected redis://… or the SQL store's own URL "
            f"({settings.database_url})"
        )
    queue: InvocationQueue
    if dialect_of(url) == "postgresql":
        from broker.queue.postgres import PostgresQueue

        pg = PostgresQueue(
            engine,
            clock=clock,
            account_concurrency=settings.account_concurrency,
            keep_succeeded_payloads=settings.keep_succeeded_payloads,
        )
        await pg.start_listening()
        queue = pg
    else:
        from broker.queue.sqlite import SqliteQueue

        queue = SqliteQueue(
            engine,
            clock=clock,
            account_concurrency=settings.account_concurrency,
            keep_succeeded_payloads=settings.keep_succeeded_payloads,
        )
    try:
        yield queue
    finally:
        await queue.close()
