"""Opening the SQL store: one async engine per database URL, set up per dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from broker.errors import UsageError

SUPPORTED = {
    "sqlite+aiosqlite": "embedded SQLite",
    "postgresql+asyncpg": "PostgreSQL",
}


def dialect_of(url: str) -> str:
    """``"sqlite"`` or ``"postgresql"`` for a supported URL, else a clear error."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(
            f"database URL {url!r} is not a URL; expected e.g. "
            "sqlite+aiosqlite:///eventwire.db or postgresql+asyncpg://user@host/db"
        ) from None
    if parsed.drivername not in SUPPORTED:
        raise UsageError(
            f"database URL scheme {parsed.drivername!r} is not supported; "
            f"expected one of: {', '.join(SUPPORTED)}"
        )
    return parsed.get_backend_name()


def create_engine(url: str, *, pool_size: int = 10, reader: bool = False) -> AsyncEngine:
    """An engine for ``url``, set up for how Eventwire uses that database.

    SQLite: WAL journal, a busy timeout, and ``BEGIN IMMEDIATE`` so that a
    transaction takes the write lock when it starts (leasing reads then writes
    and must not be interleaved with another process's lease). One pooled
    connection: writers queue in asyncio rather than spin on the busy handler.
    A ``reader`` (the CLI's listings) begins deferred instead: in WAL mode it
    reads while a busy ``serve`` writes, rather than queue for the write lock.
    """
    if dialect_of(url) == "sqlite":
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120)
        _setup_sqlite(engine, "BEGIN" if reader else "BEGIN IMMEDIATE")
        return engine
    if "asyncpg" in url:
        _require("asyncpg", "postgres")
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _setup_sqlite(engine: AsyncEngine, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


def _require(module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise UsageError(
            f"this needs the {module} package: pip install 'eventwire[{extra}]'"
        ) from None
