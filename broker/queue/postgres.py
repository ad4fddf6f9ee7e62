"""The PostgreSQL queue: ``FOR UPDATE SKIP LOCKED`` leasing and LISTEN/NOTIFY wake-ups.

Enqueues (and settles that make work runnable) ``NOTIFY`` a channel inside
their transaction, so the notification is delivered exactly when the rows
become visible. Each queue holds one extra connection that ``LISTEN``\\s on
it; an idle dispatcher wakes within a millisecond of a commit. If that
connection drops it is re-opened with backoff, and until then dispatchers fall
back to polling (``poll_interval_s``), so nothing waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from broker.queue.sql import SqlQueue
from broker.store.schema import invocations

log = logging.getLogger("eventwire.queue")

CHANNEL = "eventwire_ready"
# Any fixed 64-bit key: the lock serializing leasers while reserved concurrency is counted.
_LIMITS_LOCK = 0x6576_656E_7477_6972


class PostgresQueue(SqlQueue):
    async def start_listening(self) -> None:
        """Open the LISTEN connection; returns once it listens (or after 10 s; it goes on)."""
        await self._wakeup.listen(self._listen, "eventwire-listen")

    async def _listen(self) -> None:
        dsn = (
            make_url(self.engine.url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.2, max=10),
            retry=retry_if_exception_type((OSError, asyncpg.PostgresError)),
        ):
            with attempt:
                connection = await asyncpg.connect(dsn)
                lost = asyncio.Event()
                try:
                    connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                    await connection.add_listener(CHANNEL, self._on_notify)
                    self._wakeup.listening.set()
                    self._wakeup.set()  # work may have arrived while we were not listening
                    await lost.wait()
                    log.warning("queue: LISTEN connection lost; reconnecting")
                    raise OSError("LISTEN connection lost")
                finally:
                    self._wakeup.listening.clear()
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=1)

    def _on_notify(self, *_args: Any) -> None:
        self._wakeup.set()

    async def _notify(self, conn: AsyncConnection) -> None:
        await conn.execute(select(func.pg_notify(CHANNEL, "")))

    async def _lock_for_limits(self, conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LIMITS_LOCK})

    async def _scan_in_seq_order(self, conn: AsyncConnection) -> None:
        # Right after a burst the table's statistics are stale (autovacuum has not analyzed
        # it yet) and the planner would take every unfinished row through a bitmap and sort
        # them on each lease: 4-5 ms with 10,000 pending, against well under one for an
        # index scan in seq order that stops at the batch.
        await conn.execute(text("SELECT set_config('enable_bitmapscan', 'off', true)"))

    def _candidates(self, n: int, *, by_function: bool) -> Any:
        return (
            super()
            ._candidates(n, by_function=by_function)
            .with_for_update(skip_locked=True, of=invocations)
        )

    def _lock_rows(self, stmt: Any) -> Any:
        return stmt.with_for_update()

    async def close(self) -> None:
        await self._wakeup.close()
