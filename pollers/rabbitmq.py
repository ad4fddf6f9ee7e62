"""RabbitMQ mappings: competing consumers, batches in parallel lanes, ack after enqueue.

Every ``serve`` process consumes the queue (RabbitMQ spreads messages over
them). Messages are filtered and batched, shaped as Lambda's RabbitMQ event
and enqueued in one of ``max_concurrency`` lanes (``mapping:NAME:0`` …), so
at most that many batches of the mapping run at once, in no particular
order. A message is acknowledged only once its batch is enqueued. When every
lane holds ``MAX_PENDING_BATCHES`` batches nothing more is taken: unacked
messages reach the channel's prefetch limit (``READ_AHEAD_BATCHES`` batches'
worth) and RabbitMQ stops delivering.

A batch's idempotency key is a digest of its messages' ``message_id``\\ s.
A consumer that dies after enqueuing a batch and before RabbitMQ has its
acknowledgements gets the batch's messages redelivered to another consumer,
which would batch them differently; so each batch is recorded before it is
enqueued and forgotten once RabbitMQ has confirmed its acknowledgements
(:mod:`broker.store.unacked`), and a redelivered message found there is
acknowledged after its recorded batch is enqueued again (a no-op if it was).
Messages without a ``message_id`` are delivered at least once, as with Lambda.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelClosed

from broker.aio.waits import close_within, wait_set
from broker.config.mappings import AmqpSource, MappingConfig, SourceKind
from broker.events.batches import AmqpMessage, encode_event, event_source_arn, rabbitmq_event
from broker.models import NewInvocation
from broker.observability.tracing import TRACEPARENT, header_traceparent
from broker.sources.pollers import PollerContext
from broker.store.mappings import redact
from broker.store.unacked import (
    Unacked,
    drop_unacked,
    find_unacked,
    prune_unacked,
    record_unacked,
)
from pollers.batching import Batch, Record, Shaper
from pollers.mapping_run import READ_AHEAD_BATCHES, MappingRun, SourceError
from pollers.mapping_runner import MappingPoller

log = logging.getLogger("eventwire.mappings.rabbitmq")

DEFAULT_CONCURRENCY = 5
IDLE_WAIT_S = 0.1
QUEUE_CHECK_S = 2.0
PRUNE_EVERY_S = 600.0


def message_key(message: AbstractIncomingMessage) -> str | None:
    """What a redelivered message is known by: its id and a digest of its body (None
    without an id: such a message is delivered at least once)."""
    if not message.message_id:
        return None
    return f"{message.message_id}:{hashlib.sha256(message.body).hexdigest()[:16]}"


class RabbitReader:
    """A mapping's RabbitMQ consumer, as :func:`pollers.mapping_loop.pump` drives it."""

    overlap = False  # a batch's messages are recorded, enqueued and acknowledged in turn

    def __init__(self, mapping: MappingConfig, context: PollerContext) -> None:
        source = mapping.parsed_source
        assert isinstance(source, AmqpSource)
        self.mapping = mapping
        self.source = source
        self.concurrency = mapping.max_concurrency or DEFAULT_CONCURRENCY
        self.lanes: list[str] = []
        """The queue's parallel lanes (``run.lane("0")`` …), known once opened."""
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.unacked: dict[str, AbstractIncomingMessage] = {}
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.connection: Any = None
        self.channel: Any = None
        self.context = context
        self.keys: dict[str, str] = {}
        """Message keys (:func:`message_key`) of what is unacknowledged, by position."""
        self.recorded: list[str] = []
        """Idempotency keys of invocations recorded as unacknowledged, acks not confirmed."""
        self._checked_at = time.monotonic()
        self._pruned_at = 0.0

    async def open(self, run: MappingRun) -> None:
        self.lanes = [run.lane(str(n)) for n in range(self.concurrency)]
        where = redact(self.source.url)
        try:
            self.connection = await aio_pika.connect(self.source.url, timeout=10)
        except (OSError, AMQPError, TimeoutError) as exc:
            raise SourceError(
                f"cannot use RabbitMQ at {where}: {exc or type(exc).__name__}"
            ) from None
        try:
            channel = await self.connection.channel()
            channel.close_callbacks.add(self._on_close)
            await channel.set_qos(prefetch_count=self.mapping.batch_size * (READ_AHEAD_BATCHES + 1))
            try:
                queue = await channel.get_queue(self.source.queue, ensure=True)
            except ChannelClosed:
                raise SourceError(
                    f"queue {self.source.queue!r} does not exist in vhost "
                    f"{self.source.vhost!r} at {where}"
                ) from None
            await queue.consume(self.inbox.put)
        except BaseException:
            await self.close()
            raise
        run.before_enqueue = self._record
        log.info("mapping %s: consuming %s", run.name, self.source.queue)
        self.channel = channel

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and not await close_within(connection.close(), 5):
            log.warning("mapping %s: the connection did not close in 5s; left", self.mapping.name)

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

    async def check(self, run: MappingRun, now: float) -> None:
        run.lag = self.inbox.qsize() + len(self.unacked)
        if now - self._checked_at > QUEUE_CHECK_S:
            self._checked_at = now
            await self._check_queue()
        if now - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = now
            await self._prune(run)
        if self.closed.is_set():
            raise SourceError(
                f"the channel to queue {self.source.queue!r} closed: {self.close_reason}"
            )

    async def read(self, run: MappingRun, wait_s: float) -> dict[str, list[Record]]:
        """What has arrived, waiting up to ``wait_s`` for the first message; nothing while
        every lane is backed up."""
        if len(await run.backed_up(self.lanes)) == len(self.lanes):
            await wait_set(run.stopping, IDLE_WAIT_S)
            return {}
        records = await self._gather(run, wait_s)
        return {self.source.queue: records} if records else {}

    def assigned(self) -> list[str]:
        return []  # a queue has no partitions to take over

    async def checkpoint(self, done: Mapping[str, list[Record]]) -> None:
        """Acknowledge the messages, then forget the record of their batches."""
        for records in done.values():
            for record in records:
                self.keys.pop(record.position, None)
                message = self.unacked.pop(record.position, None)
                if message is not None:
                    await message.ack()
        if self.recorded:
            # The queue answers on the channel after it has taken the acks before.
            await self._check_queue()
            await drop_unacked(self.context.engine, self.mapping.name, self.recorded)
            self.recorded = []

    async def seek(self, run: MappingRun, to: datetime) -> None:
        """A queue has no position to seek to (``eventwire mappings seek`` refuses)."""

    async def finish(self) -> None:
        """Nothing to do: messages are acknowledged as they are enqueued."""

    async def _record(self, shaped: Sequence[tuple[Batch, list[NewInvocation]]]) -> None:
        """Record the invocations about to be enqueued with their messages' keys."""
        entries = []
        for batch, invocations in shaped:
            keys = tuple(k for r in batch.records if (k := self.keys.get(r.position)))
            entries += [Unacked(inv, keys) for inv in invocations if keys]
        if entries:
            now = self.context.timer.now()
            await record_unacked(self.context.engine, self.mapping.name, entries, now)
            self.recorded += [e.invocation.idempotency_key or "" for e in entries]

    async def _prune(self, run: MappingRun) -> None:
        """Forget batches recorded by consumers that died, once past the idempotency window."""
        window = timedelta(seconds=self.context.settings.idempotency_window_s)
        before = self.context.timer.now() - window
        gone = await prune_unacked(self.context.engine, run.name, before)
        if gone:
            log.info("mapping %s: forgot %d batches of consumers long gone", run.name, gone)

    async def _gather(self, run: MappingRun, wait_s: float) -> list[Record]:
        """Take what has arrived, waiting up to ``wait_s`` for the first message."""
        first = None
        if wait_s > 0:
            try:
                async with asyncio.timeout(wait_s):  # not wait_for: see broker.aio.waits
                    first = await self.inbox.get()
            except TimeoutError:
                return []
        arrived = [first] if first is not None else []
        limit = run.mapping.batch_size * 4
        while not self.inbox.empty() and limit > 0:
            arrived.append(self.inbox.get_nowait())
            limit -= 1
        if any(m.redelivered for m in arrived):
            arrived = await self._already_enqueued(run, arrived)
        return [self._record_of(message) for message in arrived]

    async def _already_enqueued(
        self, run: MappingRun, arrived: list[AbstractIncomingMessage]
    ) -> list[AbstractIncomingMessage]:
        """Acknowledge redelivered messages whose batch a dead consumer recorded, once that
        batch is enqueued (again: a no-op if it was); answers the others."""
        keys = {id(m): message_key(m) for m in arrived if m.redelivered}
        found = await find_unacked(
            self.context.engine, run.name, {k for k in keys.values() if k is not None}
        )
        if not found:
            return arrived
        await self.context.queue.enqueue([entry.invocation for entry in found])
        known = {key for entry in found for key in entry.messages}
        rest = []
        for message in arrived:
            if keys.get(id(message)) in known:
                await message.ack()
            else:
                rest.append(message)
        log.info(
            "mapping %s: %d redelivered messages were in batches already taken; not again",
            run.name, len(arrived) - len(rest),
        )  # fmt: skip
        return rest

    def _record_of(self, message: AbstractIncomingMessage) -> Record:
        position = message.message_id or f"~{uuid.uuid4().hex}"
        while position in self.unacked:  # the same id twice in flight: keep both
            position += "+"
        self.unacked[position] = message
        key = message_key(message)
        if key is not None:
            self.keys[position] = key
        item = _message(message, self.source)
        stamp = message.timestamp
        ms = int(stamp.timestamp() * 1000) if stamp else int(time.time() * 1000)
        return Record(self.source.queue, position, ms, message.body, item)


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


def traceparent(message: AmqpMessage) -> str | None:
    """The ``traceparent`` header of an AMQP message."""
    return header_traceparent(message.headers.get(TRACEPARENT))


def shaper(mapping: MappingConfig) -> Shaper:
    arn = event_source_arn("amqp", mapping.name)

    def shape(items: Sequence[Any]) -> bytes:
        return encode_event(rabbitmq_event(items, event_source_arn=arn))

    return shape


def create(context: PollerContext) -> MappingPoller:
    return MappingPoller(context, SourceKind.AMQP, RabbitReader, shaper, traceparent)
