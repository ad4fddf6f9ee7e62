"""Migrated stores for tests: an SQLite file or a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.store.engine import create_engine
from broker.store.migrate import upgrade
from tests.support.postgres import fresh_database

BACKENDS = ["sqlite", "postgres"]
"""The SQL stores."""
QUEUES = [*BACKENDS, "redis"]
"""Every queue backend; ``redis`` keeps its history in an SQLite store."""


@dataclass(frozen=True, slots=True)
class Store:
    """Where a test's service keeps its data: the SQL store and, if separate, the queue."""

    database_url: str
    queue_url: str | None = None
    queue_prefix: str | None = None

    def settings(self) -> dict[str, Any]:
        """``Settings`` fields for a service on this store."""
        extra = {"queue_url": self.queue_url, "queue_prefix": self.queue_prefix}
        return {"database_url": self.database_url} | {k: v for k, v in extra.items() if v}

    def env(self) -> dict[str, str]:
        """The same as ``EVENTWIRE_*`` variables, for an ``eventwire`` process."""
        return {f"EVENTWIRE_{k.upper()}": str(v) for k, v in self.settings().items()}


async def migrate(engine: AsyncEngine) -> None:
    await upgrade(engine)


@asynccontextmanager
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database of ``backend``, removed afterwards."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}"
    else:
        async with fresh_database() as url:
            yield url


@asynccontextmanager
async def migrated_engine(backend: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with database_url(backend, tmp_path) as url:
        engine = create_engine(url)
        try:
            await migrate(engine)
            yield engine
        finally:
            await engine.dispose()


@asynccontextmanager
async def store_for(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An empty store for queue ``backend`` (one of :data:`QUEUES`), removed afterwards."""
    if backend != "redis":
        async with database_url(backend, tmp_path) as url:
            yield Store(url)
        return
    from tests.support.redis import redis_prefix
    from tests.support.services import REDIS_URL

    async with redis_prefix() as prefix, database_url("sqlite", tmp_path) as url:
        yield Store(url, REDIS_URL, prefix)
