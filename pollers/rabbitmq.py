"""RabbitMQ mappings: competing consumers, batches in parallel lanes, ack after enqueue.

Every ``serve`` process consumes the queue (RabbitMQ spreads messages over
them). Messages are filtered and batched, shaped as Lambda's RabbitMQ event
and enqueued in one of ``max_concurrency`` lanes (``mapping:NAME:0`` …), so
at most that many batches of the mapping run at once, in no particular
order. A message is acknowledged only once its batch is enqueued. When every
lane holds ``MAX_PENDING_BATCHES`` batches nothing more is taken: unacked
messages reach the channel's prefetch limit and RabbitMQ stops delivering.

A batch's idempotency key is a digest of its messages' ``message_id``\\ s, so
a batch redelivered whole after a crash is not enqueued twice; messages
without an id (or redelivered into different batches) are delivered at least
once, as with Lambda.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelClosed

from broker.batch_events import AmqpMessage, encode_event, event_source_arn, rabbitmq_event
from broker.mapping_config import AmqpSource, MappingConfig, SourceKind
from broker.poller import PollerContext
from broker.store.mappings import redact
from broker.waits import wait_set
from pollers.batching import Record, Shaper
from pollers.mapping_runner import MAX_PENDING_BATCHES, MappingPoller, MappingRun, SourceError

log = logging.getLogger("eventwire.mappings.rabbitmq")

DEFAULT_CONCURRENCY = 5
IDLE_WAIT_S = 0.1
QUEUE_CHECK_S = 2.0


class RabbitReader:
    def __init__(self, mapping: MappingConfig, context: PollerContext) -> None:
        source = mapping.parsed_source
        assert isinstance(source, AmqpSource)
        self.mapping = mapping
        self.source = source
        self.concurrency = mapping.max_concurrency or DEFAULT_CONCURRENCY
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.unacked: dict[str, AbstractIncomingMessage] = {}
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.channel: Any = None

    async def run(self, run: MappingRun) -> None:
        where = redact(self.source.url)
        try:
            connection = await aio_pika.connect(self.source.url, timeout=10)
        except (OSError, AMQPError, TimeoutError) as exc:
            raise SourceError(
                f"cannot use RabbitMQ at {where}: {exc or type(exc).__name__}"
            ) from None
        try:
            channel = await connection.channel()
            channel.close_callbacks.add(self._on_close)
            await channel.set_qos(
                prefetch_count=self.mapping.batch_size * (MAX_PENDING_BATCHES + 1)
            )
            try:
                queue = await channel.get_queue(self.source.queue, ensure=True)
            except ChannelClosed:
                raise SourceError(
                    f"queue {self.source.queue!r} does not exist in vhost "
                    f"{self.source.vhost!r} at {where}"
                ) from None
            await queue.consume(self.inbox.put)
            run.connected = True
            log.info("mapping %s: consuming %s", run.name, self.source.queue)
            self.channel = channel
            await self._loop(run)
        finally:
            run.connected = False
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await connection.close()

    def _on_close(self, _channel: Any, exc: BaseException | None = None) -> None:
        self.close_reason = str(exc) if exc else "closed"
        self.closed.set()

    async def _check_queue(self) -> None:
        """RabbitMQ cancels the consumer of a deleted queue without a word: ask after it."""
        try:
            async with asyncio.timeout(10):
                await self.channel.get_queue(self.source.queue, ensure=True)
        except TimeoutError:
            raise SourceError(
                f"RabbitMQ did not answer about queue {self.source.queue!r}"
            ) from None
        except (ChannelClosed, AMQPError):
            raise SourceError(
                f"queue {self.source.queue!r} does not exist in vhost {self.source.vhost!r} "
                "any more"
            ) from None

    async def _loop(self, run: MappingRun) -> None:
        lanes = [run.lane(str(n)) for n in range(self.concurrency)]
        checked = time.monotonic()
        while not run.stopping.is_set():
            if time.monotonic() - checked > QUEUE_CHECK_S:
                checked = time.monotonic()
                await self._check_queue()
            if self.closed.is_set():
                raise SourceError(
                    f"the channel to queue {self.source.queue!r} closed: {self.close_reason}"
                )
            full = await run.backed_up(lanes)
            free = [lane for lane in lanes if lane not in full]
            deadline = run.batcher.next_deadline()
            wait_s = IDLE_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())
            if free:
                await self._gather(run, min(wait_s, IDLE_WAIT_S))
            else:
                await wait_set(run.stopping, IDLE_WAIT_S)
                continue
            taken, chosen = await run.take(time.monotonic(), lanes)
            await run.enqueue(taken.batches, chosen)
            for records in taken.checkpoint.values():
                for record in records:
                    message = self.unacked.pop(record.position, None)
                    if message is not None:
                        await message.ack()
            run.lag = self.inbox.qsize() + len(self.unacked)

    async def _gather(self, run: MappingRun, wait_s: float) -> None:
        """Take what has arrived, waiting up to ``wait_s`` for the first message."""
        first = None
        if wait_s > 0:
            try:
                async with asyncio.timeout(wait_s):  # not wait_for: see broker.waits
                    first = await self.inbox.get()
            except TimeoutError:
                return
        now = time.monotonic()
        if first is not None:
            self._add(run, first, now)
        limit = run.mapping.batch_size * 4
        while not self.inbox.empty() and limit > 0:
            self._add(run, self.inbox.get_nowait(), now)
            limit -= 1

    def _add(self, run: MappingRun, message: AbstractIncomingMessage, now: float) -> None:
        position = message.message_id or f"~{uuid.uuid4().hex}"
        while position in self.unacked:  # the same id twice in flight: keep both
            position += "+"
        self.unacked[position] = message
        item = _message(message, self.source)
        stamp = message.timestamp
        ms = int(stamp.timestamp() * 1000) if stamp else int(time.time() * 1000)
        run.batcher.add(Record(self.source.queue, position, ms, message.body, item), now)


def _message(m: AbstractIncomingMessage, source: AmqpSource) -> AmqpMessage:
    stamp = m.timestamp
    return AmqpMessage(
        body=m.body,
        queue=source.queue,
        vhost=source.vhost,
        redelivered=bool(m.redelivered),
        content_type=m.content_type,
        content_encoding=m.content_encoding,
        headers=dict(m.headers or {}),
        delivery_mode=int(m.delivery_mode) if m.delivery_mode else None,
        priority=m.priority,
        correlation_id=m.correlation_id,
        reply_to=m.reply_to,
        expiration=str(m.expiration) if m.expiration else None,
        message_id=m.message_id,
        timestamp=stamp.astimezone(UTC) if stamp and stamp.tzinfo else stamp,
        type=m.type,
        user_id=m.user_id,
        app_id=m.app_id,
        cluster_id=m.cluster_id,
    )


def shaper(mapping: MappingConfig) -> Shaper:
    arn = event_source_arn("amqp", mapping.name)

    def shape(items: Sequence[Any]) -> bytes:
        return encode_event(rabbitmq_event(items, event_source_arn=arn))

    return shape


def create(context: PollerContext) -> MappingPoller:
    return MappingPoller(context, SourceKind.AMQP, RabbitReader, shaper)
