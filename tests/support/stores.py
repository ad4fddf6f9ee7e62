"""Migrated stores for tests: an SQLite file or a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.store.engine import create_engine
from broker.store.migrate import upgrade
from tests.support.postgres import fresh_database

BACKENDS = ["sqlite", "postgres"]


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
