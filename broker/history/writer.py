"""Copying the Redis queue's history stream into the SQL store, in batches.

One writer at a time (a lease in Redis that every ``serve`` process competes
for) reads the stream in order from its cursor, writes each batch in one SQL
transaction, then moves the cursor and trims what it wrote. Every write is
idempotent (:mod:`broker.store.history_writes`), so a writer that dies between
its commit and the cursor leaves nothing for the next writer to get wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.aio.waits import wait_set
from broker.queue import redis_lua
from broker.queue.redis import read_payloads
from broker.store.engine import first_line
from broker.store.history_rows import Rows, loads
from broker.store.history_writes import add_throttles, write_rows

log = logging.getLogger("eventwire.history")

BATCH_EVENTS = 5000
"""A batch (one SQL transaction) stops reading entries once it holds this many events."""
ENTRIES_PER_READ = 32
GATHER_S = 0.1
"""After a batch that was not full, the next one starts this long after it: a steady
trickle of events goes in a few transactions a second, not one per event, each of
which costs as much as many events."""
LEAD_TTL_MS = 10_000


class HistoryWriter:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        engine: AsyncEngine,
        *,
        owner: str,
        keep_succeeded_payloads: bool = True,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.engine = engine
        self.owner = owner
        self.keep_succeeded_payloads = keep_succeeded_payloads
        self._lead = client.register_script(redis_lua.LEAD)
        self._resign = client.register_script(redis_lua.RESIGN)
        self._advance = client.register_script(redis_lua.ADVANCE_HISTORY)
        self._take_throttles = client.register_script(redis_lua.TAKE_THROTTLES)
        self._stopping = asyncio.Event()
        self._full = False
        self.written = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Write history while this process leads; on ``stop()``, drain what is there first."""
        failures = 0
        leading = False
        while True:
            began = time.monotonic()
            try:
                leading = await self.lead()
                wrote = await self.write_batch(block_ms=500) if leading else 0
                failures = 0
                rest = GATHER_S - (time.monotonic() - began)
                if wrote and not self._full and rest > 0:
                    await self._pause(rest)
            except (RedisError, OSError, OperationalError, DBAPIError) as exc:
                failures += 1
                delay = min(0.1 * 2**failures, 5.0)
                log.warning("history: %s; retrying in %.1fs", first_line(exc), delay)
                wrote = 0
                await self._pause(delay)
            except Exception:
                # Not a connection problem: say so loudly, and keep the queue running.
                failures += 1
                log.exception("history: writing failed; retrying in 5s")
                wrote = 0
                await self._pause(5.0)
            if self._stopping.is_set() and wrote == 0:
                if leading:  # let another process take over at once, not after the lease
                    with contextlib.suppress(RedisError, OSError):
                        await self._resign(args=[self.prefix, self.owner])
                return
            if not leading and not self._stopping.is_set():
                await self._pause(LEAD_TTL_MS / 4000)

    async def lead(self) -> bool:
        """Take or keep the writer's lease; True while this writer leads."""
        return bool(await self._lead(args=[self.prefix, self.owner, LEAD_TTL_MS]))

    async def _pause(self, seconds: float) -> None:
        await wait_set(self._stopping, seconds)

    async def write_batch(self, *, block_ms: int = 0) -> int:
        """Write the next events after the cursor; answers how many stream entries.

        A batch stops growing at :data:`BATCH_EVENTS` events (an entry holds one
        script call's events, up to a whole enqueue batch), so memory stays bounded
        however much history waits.
        """
        stream = self.prefix + "h"
        cursor = cast(bytes | None, await self.client.get(self.prefix + "hc"))
        rows = Rows()
        events = entries = 0
        last: bytes | None = None
        while events < BATCH_EVENTS:
            after = last or cursor
            start = b"(" + after if after else b"-"
            chunk = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                await self.client.xrange(stream, min=start, max="+", count=ENTRIES_PER_READ),
            )
            for entry_id, fields in chunk:
                for event in loads(fields[b"e"]):
                    rows.add(event)
                    events += 1
                apart = fields.get(b"x")
                if apart:
                    rows.finished_apart(apart.decode().split())
                last = entry_id
            entries += len(chunk)
            if len(chunk) < ENTRIES_PER_READ:
                break
        self._full = events >= BATCH_EVENTS
        if last is None:
            if block_ms and not self._stopping.is_set():
                await self.client.xread({stream: cursor or b"0-0"}, count=1, block=block_ms)
                return await self.write_batch()
            return 0
        if not self.keep_succeeded_payloads:
            rows.drop_succeeded_payloads()
        rows.defer_unfinished_payloads()
        if rows.out_of_line:
            ids = sorted(rows.out_of_line)
            rows.fill_payloads(await read_payloads(self.client, self.prefix, ids))
        taken = await self._take_throttles(args=[self.prefix])
        throttles = {taken[j].decode(): int(taken[j + 1]) for j in range(0, len(taken), 2)}
        async with self.engine.begin() as conn:
            await write_rows(conn, rows)
            await add_throttles(conn, throttles)
        written = last.decode()
        await self._advance(
            args=[self.prefix, self.owner, written, _after(written), *rows.finished]
        )
        self.written += entries
        return entries


def _after(entry_id: str) -> str:
    """The smallest stream id greater than ``entry_id``."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq) + 1}"
