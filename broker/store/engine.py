"""Opening the SQL store: one async engine per database URL, set up per dialect."""

from __future__ import annotations

import contextlib
import sqlite3
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from broker.errors import UsageError
from broker.extras import require

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


UNREACHABLE = (DBAPIError, OSError)
"""What opening or first using the store raises when it cannot be reached or used."""


def redacted(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def first_line(exc: BaseException) -> str:
    """The driver's own reason for ``exc``, on one line (no SQLAlchemy preamble or footer)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unusable(url: str, exc: BaseException) -> UsageError:
    """The one-line error for a store at ``url`` that could not be reached or used."""
    return UsageError(f"cannot use the database at {redacted(url)}: {first_line(exc)}")


def create_engine(url: str, *, pool_size: int = 10, reader: bool = False) -> AsyncEngine:
    """An engine for ``url``, set up for how Eventwire uses that database.

    SQLite: WAL journal, a busy timeout, and ``BEGIN IMMEDIATE`` so that a
    transaction takes the write lock when it starts (leasing reads then writes
    and must not be interleaved with another process's lease). One pooled
    connection: writers queue in asyncio rather than spin on the busy handler.
    A ``reader`` (the CLI's listings) begins deferred instead: in WAL mode it
    reads while a busy ``serve`` writes, rather than queue for the write lock.
    Its connections end their transaction when closed (:class:`ClosingConnection`).
    """
    if dialect_of(url) == "sqlite":
        engine = create_async_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
            connect_args={"factory": ClosingConnection},
        )
        _setup_sqlite(engine, "BEGIN" if reader else "BEGIN IMMEDIATE")
        return engine
    if "asyncpg" in url:
        require("asyncpg", "postgres", "a PostgreSQL store (postgresql+asyncpg://)")
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


class ClosingConnection(sqlite3.Connection):
    """An SQLite connection whose ``close()`` ends its transaction and releases its statements.

    A task cancelled in the middle of a query (a stopping dispatcher's idle poll, a
    reader cancelled at shutdown) has its connection closed by SQLAlchemy while the
    cursor that ran the query is still referenced from the cancelled frames, which
    live until the garbage collector breaks their cycle. ``sqlite3`` closes with
    ``sqlite3_close_v2``, which leaves a connection with unfinalized statements
    open as a "zombie" holding its transaction — and with ``BEGIN IMMEDIATE``
    that is the database's write lock: every other connection, in this process or
    another, then waits out its busy timeout and fails with "database is locked".
    So the transaction is rolled back and the cursors closed before the close.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cursors: weakref.WeakSet[sqlite3.Cursor] = weakref.WeakSet()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        cursor = super().cursor(*args, **kwargs)
        self._cursors.add(cursor)
        return cursor

    def close(self) -> None:
        # Each step on its own: whatever fails here, closing is all that is left to do.
        with contextlib.suppress(sqlite3.Error):
            if self.in_transaction:
                self.rollback()
        for cursor in list(self._cursors):
            with contextlib.suppress(sqlite3.Error):
                cursor.close()
        super().close()


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
