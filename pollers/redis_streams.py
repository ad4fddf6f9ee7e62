"""Redis Streams mappings: a consumer group, one reader per stream at a time, XACK after enqueue.

The mapping's consumer group (``group=`` in the URI, else the mapping's name)
is created at the starting position if it does not exist. Order matters
within a stream, so one ``serve`` process reads it at a time: it holds a
lock (``eventwire:mapping-lock:NAME:STREAM``) that lapses after the mapping's
``claim_idle`` (5 s unless set) and that it renews three times as often while
it reads; the others stand by. When a reader falls silent (its process died,
or hung for that long) another takes the lock and first claims
(``XAUTOCLAIM``) every entry a previous reader left pending — read, perhaps
enqueued, never acknowledged — following the batches that reader ended early,
then reads new ones (``XREADGROUP >``). Batches go into the stream's lane
(``mapping:NAME:STREAM``); entries are acknowledged only once enqueued;
nothing is read while the lane holds ``MAX_PENDING_BATCHES`` batches.

The lock, not the entries' idle time, says when a reader is gone: a live
reader's entries may wait unacknowledged for as long as its lane is backed up.
So the new holder claims whatever is pending, however recently it was read,
and then removes the consumers left with nothing pending (one per past process).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from broker.aio.waits import wait_set
from broker.config.mappings import MappingConfig, RedisStreamSource, SourceKind
from broker.events.batches import (
    StreamEntry,
    encode_event,
    entry_fields,
    entry_id_key,
    event_source_arn,
    redis_streams_event,
)
from broker.sources.pollers import PollerContext
from broker.store.mappings import redact
from pollers.batching import Record, Shaper
from pollers.mapping_runner import MappingPoller, MappingRun, SourceError

log = logging.getLogger("eventwire.mappings.redis")

MAX_ID_SEQ = 2**64 - 1
IDLE_WAIT_S = 0.1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def before(ms: int) -> str:
    """The stream id just before the first entry written at ``ms``."""
    return "0-0" if ms <= 0 else f"{ms - 1}-{MAX_ID_SEQ}"


class RedisStreamReader:
    def __init__(self, mapping: MappingConfig, context: PollerContext) -> None:
        source = mapping.parsed_source
        assert isinstance(source, RedisStreamSource)
        self.mapping = mapping
        self.source = source
        self.group = mapping.consumer_group or mapping.name
        self.consumer = context.owner
        self.lock = f"eventwire:mapping-lock:{mapping.name}:{source.stream}"
        self.lock_ttl_ms = int(mapping.claim_idle_s * 1000)

    async def run(self, run: MappingRun) -> None:
        client = aioredis.Redis.from_url(self.source.url, socket_connect_timeout=5)
        where = redact(self.source.url)
        try:
            try:
                await client.ping()
                await self._create_group(client)
            except (OSError, aioredis.RedisError) as exc:
                raise SourceError(f"cannot use Redis at {where}: {exc}") from None
            run.connected = True
            try:
                await self._lead_and_read(client, run)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    raise SourceError(
                        f"stream {self.source.stream!r} or its group {self.group!r} was deleted"
                    ) from None
                raise
            except (OSError, aioredis.ConnectionError) as exc:
                raise SourceError(f"lost Redis at {where}: {exc}") from None
        finally:
            run.connected = False
            with contextlib.suppress(Exception):
                if _text(await client.get(self.lock) or b"") == self.consumer:
                    await client.delete(self.lock)  # the next reader need not wait
            await client.aclose()

    async def _create_group(self, client: aioredis.Redis) -> None:
        position = self.mapping.starting_position
        start = "$"
        if position == "trim_horizon":
            start = "0"
        elif position == "at_timestamp":
            assert self.mapping.starting_timestamp is not None
            start = before(int(self.mapping.starting_timestamp.timestamp() * 1000))
        try:
            await client.xgroup_create(self.source.stream, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _hold(self, client: aioredis.Redis) -> bool:
        """Take or keep the stream's read lock."""
        me = self.consumer
        if await client.set(self.lock, me, nx=True, px=self.lock_ttl_ms):
            return True
        if _text(await client.get(self.lock) or b"") == me:
            await client.pexpire(self.lock, self.lock_ttl_ms)
            return True
        return False

    async def _lead_and_read(self, client: aioredis.Redis, run: MappingRun) -> None:
        leading = False
        renewed = 0.0
        renew_s = self.lock_ttl_ms / 3000
        while not run.stopping.is_set():
            now = time.monotonic()
            if now - renewed > renew_s:
                held = await self._hold(client)
                renewed = now
                if held and not leading:
                    log.info("mapping %s: reading %s", run.name, self.source.stream)
                    run.batcher.forget([self.source.stream])
                    await run.take_over([self.source.stream])
                    await self._claim(client, run)
                elif leading and not held:
                    log.warning(
                        "mapping %s: lost the lock on %s to another process",
                        run.name, self.source.stream,
                    )  # fmt: skip
                leading = held
            if not leading:
                await wait_set(run.stopping, renew_s)
                continue
            if run.seek_wanted.is_set():
                await self._seek(client, run)
            await self._step(client, run)

    async def _claim(self, client: aioredis.Redis, run: MappingRun) -> None:
        """Take over what earlier readers read and never acknowledged, in stream order."""
        cursor = "0-0"
        claimed = 0
        while True:
            answer = await client.xautoclaim(
                self.source.stream, self.group, self.consumer, 0, cursor, count=1000
            )
            cursor, entries = _text(answer[0]), answer[1]
            self._add(run, entries)
            claimed += len(entries)
            if cursor == "0-0" or not entries:
                break
        gone = [
            _text(c["name"])
            for c in await client.xinfo_consumers(self.source.stream, self.group)
            if _text(c["name"]) != self.consumer and int(c.get("pending", 0)) == 0
        ]
        for name in gone:
            await client.xgroup_delconsumer(self.source.stream, self.group, name)
        if claimed:
            log.info(
                "mapping %s: claimed %d entries of %s left pending by earlier readers",
                run.name, claimed, self.source.stream,
            )  # fmt: skip

    def _add(self, run: MappingRun, entries: Sequence[Any]) -> None:
        now = time.monotonic()
        stream = self.source.stream
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream while pending
                continue
            entry = StreamEntry(stream, _text(entry_id), fields)
            data = entry_fields(entry)
            run.batcher.add(
                Record(stream, entry.entry_id, entry_id_key(entry.entry_id)[0], None, entry, data),
                now,
            )

    async def _step(self, client: aioredis.Redis, run: MappingRun) -> None:
        batcher = run.batcher
        lane = run.lane(self.source.stream)
        if await run.backed_up([lane]):
            await self._deliver(client, run)
            await wait_set(run.stopping, IDLE_WAIT_S)
            return
        deadline = batcher.next_deadline()
        wait_s = IDLE_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())
        block_ms = int(min(wait_s, IDLE_WAIT_S) * 1000)
        read: Any = await client.xreadgroup(
            self.group,
            self.consumer,
            {self.source.stream: ">"},
            count=max(run.mapping.batch_size, 100),
            block=block_ms or None,
        )
        for _stream, entries in read or []:
            self._add(run, entries)
        await self._deliver(client, run)
        if not read:
            await self._measure(client, run)

    async def _deliver(self, client: aioredis.Redis, run: MappingRun) -> None:
        taken, lanes = await run.take(time.monotonic())
        await run.enqueue(taken.batches, lanes)
        ids = [r.position for records in taken.checkpoint.values() for r in records]
        if ids:
            await client.xack(self.source.stream, self.group, *ids)

    async def _measure(self, client: aioredis.Redis, run: MappingRun) -> None:
        for group in await client.xinfo_groups(self.source.stream):
            if _text(group.get("name", b"")) == self.group:
                lag = group.get("lag")
                run.lag = int(lag) + int(group.get("pending", 0)) if lag is not None else None
                if run.lag == 0:
                    run.iterator_age_ms = 0

    async def _seek(self, client: aioredis.Redis, run: MappingRun) -> None:
        seek = run.take_seek()
        if seek is None:
            return
        run.batcher.forget([self.source.stream])
        ms = int(seek.to.timestamp() * 1000)
        await client.xgroup_setid(self.source.stream, self.group, before(ms))
        log.info("mapping %s: sought %s to %s", run.name, self.source.stream, seek.to)


def shaper(mapping: MappingConfig) -> Shaper:
    arn = event_source_arn("redis", mapping.name)

    def shape(items: Sequence[Any]) -> bytes:
        return encode_event(redis_streams_event(items, event_source_arn=arn))

    return shape


def create(context: PollerContext) -> MappingPoller:
    return MappingPoller(context, SourceKind.REDIS, RedisStreamReader, shaper)
