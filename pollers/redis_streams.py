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
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
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
from broker.observability.tracing import TRACEPARENT, header_traceparent
from broker.sources.pollers import PollerContext
from broker.store.mappings import redact
from pollers.batching import Record, Shaper
from pollers.mapping_run import MappingRun, SourceError
from pollers.mapping_runner import MappingPoller

log = logging.getLogger("eventwire.mappings.redis")

MAX_ID_SEQ = 2**64 - 1
IDLE_WAIT_S = 0.1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def before(ms: int) -> str:
    """The stream id just before the first entry written at ``ms``."""
    return "0-0" if ms <= 0 else f"{ms - 1}-{MAX_ID_SEQ}"


class RedisStreamReader:
    """A mapping's stream reader, as :func:`pollers.mapping_loop.pump` drives it."""

    lanes = None  # the stream's own lane
    overlap = False

    def __init__(self, mapping: MappingConfig, context: PollerContext) -> None:
        source = mapping.parsed_source
        assert isinstance(source, RedisStreamSource)
        self.mapping = mapping
        self.source = source
        self.group = mapping.consumer_group or mapping.name
        self.consumer = context.owner
        self.lock = f"eventwire:mapping-lock:{mapping.name}:{source.stream}"
        self.lock_ttl_ms = int(mapping.claim_idle_s * 1000)
        self.renew_s = self.lock_ttl_ms / 3000
        self.where = redact(source.url)
        self._client: aioredis.Redis | None = None
        self.leading = False
        self._renewed = 0.0
        self._claimed: list[Record] = []
        """Entries claimed on taking the lock, for the next read to give."""
        self._taken_over: list[str] = []

    @property
    def client(self) -> aioredis.Redis:
        assert self._client is not None, "the reader is not open"
        return self._client

    @contextlib.contextmanager
    def _talking(self) -> Iterator[None]:
        """Redis failures as the mapping's ``failing`` reason."""
        try:
            yield
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise SourceError(
                    f"stream {self.source.stream!r} or its group {self.group!r} was deleted"
                ) from None
            raise
        except (OSError, aioredis.ConnectionError) as exc:
            raise SourceError(f"lost Redis at {self.where}: {exc}") from None

    async def open(self, run: MappingRun) -> None:
        self._client = aioredis.Redis.from_url(self.source.url, socket_connect_timeout=5)
        try:
            await self.client.ping()
            await self._create_group()
        except (OSError, aioredis.RedisError) as exc:
            await self.close()
            raise SourceError(f"cannot use Redis at {self.where}: {exc}") from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            if _text(await client.get(self.lock) or b"") == self.consumer:
                await client.delete(self.lock)  # the next reader need not wait
        await client.aclose()

    async def _create_group(self) -> None:
        position = self.mapping.starting_position
        start = "$"
        if position == "trim_horizon":
            start = "0"
        elif position == "at_timestamp":
            assert self.mapping.starting_timestamp is not None
            start = before(int(self.mapping.starting_timestamp.timestamp() * 1000))
        try:
            await self.client.xgroup_create(self.source.stream, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def check(self, run: MappingRun, now: float) -> None:
        """Take or keep the stream's read lock, every third of its time to live."""
        if now - self._renewed <= self.renew_s:
            return
        self._renewed = now
        with self._talking():
            held = await self._hold()
            if held and not self.leading:
                log.info("mapping %s: reading %s", run.name, self.source.stream)
                run.batcher.forget([self.source.stream])
                self._taken_over = [self.source.stream]
                self._claimed = await self._claim(run)
            elif self.leading and not held:
                log.warning(
                    "mapping %s: lost the lock on %s to another process",
                    run.name, self.source.stream,
                )  # fmt: skip
        self.leading = held

    async def _hold(self) -> bool:
        me = self.consumer
        if await self.client.set(self.lock, me, nx=True, px=self.lock_ttl_ms):
            return True
        if _text(await self.client.get(self.lock) or b"") == me:
            await self.client.pexpire(self.lock, self.lock_ttl_ms)
            return True
        return False

    async def _claim(self, run: MappingRun) -> list[Record]:
        """What earlier readers read and never acknowledged, in stream order."""
        cursor = "0-0"
        claimed: list[Record] = []
        while True:
            answer = await self.client.xautoclaim(
                self.source.stream, self.group, self.consumer, 0, cursor, count=1000
            )
            cursor, entries = _text(answer[0]), answer[1]
            claimed += self._records(entries)
            if cursor == "0-0" or not entries:
                break
        gone = [
            _text(c["name"])
            for c in await self.client.xinfo_consumers(self.source.stream, self.group)
            if _text(c["name"]) != self.consumer and int(c.get("pending", 0)) == 0
        ]
        for name in gone:
            await self.client.xgroup_delconsumer(self.source.stream, self.group, name)
        if claimed:
            log.info(
                "mapping %s: claimed %d entries of %s left pending by earlier readers",
                run.name, len(claimed), self.source.stream,
            )  # fmt: skip
        return claimed

    def assigned(self) -> list[str]:
        taken_over, self._taken_over = self._taken_over, []
        return taken_over

    def _records(self, entries: Sequence[Any]) -> list[Record]:
        stream = self.source.stream
        records = []
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream while pending
                continue
            entry = StreamEntry(stream, _text(entry_id), fields)
            data = entry_fields(entry)
            records.append(
                Record(stream, entry.entry_id, entry_id_key(entry.entry_id)[0], None, entry, data)
            )
        return records

    async def read(self, run: MappingRun, wait_s: float) -> dict[str, list[Record]]:
        """New entries (``XREADGROUP >``); none while another process holds the lock or
        the stream's lane is backed up."""
        if not self.leading:
            await wait_set(run.stopping, self.renew_s)
            return {}
        if await run.backed_up([run.lane(self.source.stream)]):
            await wait_set(run.stopping, IDLE_WAIT_S)
            return {}
        records, self._claimed = self._claimed, []
        with self._talking():
            read: Any = await self.client.xreadgroup(
                self.group,
                self.consumer,
                {self.source.stream: ">"},
                count=max(run.mapping.batch_size, 100),
                block=int(wait_s * 1000) or None,
            )
            for _stream, entries in read or []:
                records += self._records(entries)
            if not read:
                await self._measure(run)
        return {self.source.stream: records} if records else {}

    async def checkpoint(self, done: Mapping[str, list[Record]]) -> None:
        ids = [r.position for records in done.values() for r in records]
        if ids:
            with self._talking():
                await self.client.xack(self.source.stream, self.group, *ids)

    async def _measure(self, run: MappingRun) -> None:
        for group in await self.client.xinfo_groups(self.source.stream):
            if _text(group.get("name", b"")) == self.group:
                lag = group.get("lag")
                run.lag = int(lag) + int(group.get("pending", 0)) if lag is not None else None
                if run.lag == 0:
                    run.iterator_age_ms = 0

    async def seek(self, run: MappingRun, to: datetime) -> None:
        """The group reads from ``to`` on; only the lock's holder moves it."""
        if not self.leading:
            return
        run.batcher.forget([self.source.stream])
        with self._talking():
            await self.client.xgroup_setid(
                self.source.stream, self.group, before(int(to.timestamp() * 1000))
            )
        log.info("mapping %s: sought %s to %s", run.name, self.source.stream, to)

    async def finish(self) -> None:
        """Nothing to do: entries are acknowledged as they are enqueued."""


def traceparent(entry: StreamEntry) -> str | None:
    """The ``traceparent`` field of a stream entry."""
    fields = entry.fields
    return header_traceparent(fields.get(TRACEPARENT) or fields.get(TRACEPARENT.encode()))


def shaper(mapping: MappingConfig) -> Shaper:
    arn = event_source_arn("redis", mapping.name)

    def shape(items: Sequence[Any]) -> bytes:
        return encode_event(redis_streams_event(items, event_source_arn=arn))

    return shape


def create(context: PollerContext) -> MappingPoller:
    return MappingPoller(context, SourceKind.REDIS, RedisStreamReader, shaper, traceparent)
