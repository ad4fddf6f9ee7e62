"""Kafka mappings: a consumer group per mapping, one lane per partition, commit after enqueue.

Each ``serve`` process joins the mapping's consumer group (the mapping's
name unless the URI names one), so partitions spread over processes and move
when one dies. Per partition, records are filtered and batched
(:mod:`pollers.batching`), shaped as Lambda's self-managed Kafka event,
enqueued in the partition's lane (``mapping:NAME:topic-N``: one batch in
flight at a time, in order) and only then is the offset committed — at most
every ``COMMIT_INTERVAL_S``, and before partitions are revoked or the reader
stops: a crash replays what was enqueued since the last commit, and the
batches' idempotency keys keep it from being enqueued twice.

Backpressure: a partition whose lane holds ``MAX_PENDING_BATCHES`` batches
takes no more; once ``READ_AHEAD_BATCHES`` batches' worth of its records wait, the
reader stops taking its records from the consumer (``getmany`` of the other
partitions) until they fit. The consumer then holds at most one fetch of
that partition (``max_partition_fetch_bytes``) and fetches no more of it:
memory stays bounded. (``consumer.pause`` would do the same but throw the
fetched records away, to fetch them again on ``resume``.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from broker.config.mappings import KafkaSource, MappingConfig, SourceKind
from broker.events.batches import KafkaEventWriter
from broker.sources.pollers import PollerContext
from pollers.batching import Record, Shaper, Taken
from pollers.mapping_runner import READ_AHEAD_BATCHES, MappingPoller, MappingRun, SourceError

log = logging.getLogger("eventwire.mappings.kafka")

MAX_RECORDS_PER_FETCH = 5000
TOPIC_CHECK_S = 5.0
LAG_CHECK_S = 1.0
SESSION_TIMEOUT_MS = 6000
ROOM_CHECK_S = 0.005
"""While batches wait for room in their lanes, the reader looks again this often."""
COMMIT_INTERVAL_S = 0.2
"""Offsets of enqueued records are committed at most this often (one round trip each)."""


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}-{tp.partition}"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped in aiokafka
    def __init__(self, reader: KafkaReader, run: MappingRun) -> None:
        self.reader = reader
        self.run = run

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # What was enqueued is committed before the partitions move (the next owner need
        # not replay it); records read but not enqueued are read again by that owner.
        await self.reader.until_enqueued()
        if self.reader.consumer is not None:
            await self.reader.commit(self.reader.consumer, set(revoked))
        self.run.batcher.forget([_name(tp) for tp in revoked])
        for tp in revoked:
            self.reader.committed.pop(tp, None)
            self.reader.enqueued.pop(tp, None)
            self.reader.uncommitted.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        names = sorted(_name(tp) for tp in assigned)
        log.info("mapping %s: assigned %s", self.run.name, ", ".join(names) or "no partitions")
        # Their previous owner may have ended batches early since this run began: the
        # loop loads those cuts before it adds what it reads next (not here, where an
        # await would let records already fetched slip past).
        self.reader.assigned.update(names)
        await self.reader.start_at_timestamp(list(assigned))


class KafkaReader:
    def __init__(self, mapping: MappingConfig, context: PollerContext) -> None:
        source = mapping.parsed_source
        assert isinstance(source, KafkaSource)
        self.mapping = mapping
        self.source = source
        self.servers = ",".join(source.bootstrap_servers)
        self.committed: dict[TopicPartition, int] = {}
        self.enqueued: dict[TopicPartition, int] = {}
        """Per partition, the offset after the last record enqueued (or filtered out)."""
        self.uncommitted: dict[TopicPartition, int] = {}
        """Offsets of :attr:`enqueued` not committed yet."""
        self.consumer: AIOKafkaConsumer | None = None
        self.assigned: set[str] = set()
        """Partitions assigned since the loop last took them over (:meth:`MappingRun.take_over`)."""
        self.partitions: dict[str, TopicPartition] = {}
        """Partitions read from, by name (``topic-N``)."""
        self._enqueuing: asyncio.Task[None] | None = None
        """The enqueue under way: while it waits on the queue, the loop reads on."""

    async def run(self, run: MappingRun) -> None:
        position = self.mapping.starting_position
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            group_id=self.mapping.consumer_group,
            client_id=f"eventwire-{self.mapping.name}",
            enable_auto_commit=False,
            auto_offset_reset="latest" if position == "latest" else "earliest",
            metadata_max_age_ms=int(TOPIC_CHECK_S * 1000),
            fetch_max_wait_ms=100,
            request_timeout_ms=15000,
            # A serve process that dies loses its partitions to the others after this.
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=SESSION_TIMEOUT_MS // 3,
        )
        self.consumer = consumer
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            raise SourceError(f"cannot reach Kafka at {self.servers}: {exc}") from None
        try:
            if self.source.topic not in await consumer.topics():
                raise SourceError(f"topic {self.source.topic!r} does not exist on {self.servers}")
            consumer.subscribe([self.source.topic], listener=_Rebalance(self, run))
            run.connected = True
            log.info("mapping %s: reading %s", self.mapping.name, self.source.uri)
            await self._loop(consumer, run)
        finally:
            run.connected = False
            await self._abandon_enqueue()
            await consumer.stop()

    async def start_at_timestamp(self, assigned: list[TopicPartition]) -> None:
        """With ``at_timestamp``, partitions the group has no offset for start at that time."""
        if self.mapping.starting_position != "at_timestamp" or self.consumer is None:
            return
        assert self.mapping.starting_timestamp is not None
        fresh = [tp for tp in assigned if await self.consumer.committed(tp) is None]
        if fresh:
            await self._seek(self.consumer, fresh, self.mapping.starting_timestamp.timestamp())

    async def _seek(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], at: float) -> None:
        found = await consumer.offsets_for_times({tp: int(at * 1000) for tp in tps})
        for tp in tps:
            hit = found.get(tp)
            if hit is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, hit.offset)

    async def _loop(self, consumer: AIOKafkaConsumer, run: MappingRun) -> None:
        batcher = run.batcher
        topic_checked = lag_checked = committed_at = time.monotonic()
        while not run.stopping.is_set():
            if run.seek_wanted.is_set():
                await self.enqueued_so_far()
                await self._apply_seek(consumer, run)
            # A window that ran out before this step closed its batch, unless the lane had no
            # room: either way there is nothing to do before ROOM_CHECK_S.
            deadline = batcher.next_deadline()
            wait_s = (
                0.1
                if deadline is None
                else min(0.1, max(ROOM_CHECK_S, deadline - time.monotonic()))
            )
            if batcher.held_back():
                wait_s = ROOM_CHECK_S  # batches wait for room: look again soon
            data = await self._read(consumer, run, wait_s)
            if self.assigned:
                assigned, self.assigned = sorted(self.assigned), set()
                await run.take_over(assigned)
            now = time.monotonic()
            for tp, messages in data.items():
                name = _name(tp)
                self.partitions[name] = tp
                batcher.extend(name, _records(name, messages), now)
            # Enqueues go one at a time, in order. The next step's read overlaps one, and
            # so do its take and the shaping of its events: its enqueue starts at once and
            # waits for this one only to send (the lanes' depths count both).
            taken, lanes = await run.take(now)
            previous = self._enqueuing
            if taken.batches or taken.checkpoint:
                self._enqueuing = asyncio.create_task(
                    self._enqueue(run, taken, lanes, after=previous)
                )
            if previous is not None:
                await previous
            if self.uncommitted and now - committed_at >= COMMIT_INTERVAL_S:
                committed_at = now
                await self.commit(consumer)
            if now - lag_checked >= LAG_CHECK_S:
                lag_checked = now
                self._measure(consumer, run)
            if now - topic_checked >= TOPIC_CHECK_S:
                topic_checked = now
                if not consumer.partitions_for_topic(self.source.topic):
                    raise SourceError(f"topic {self.source.topic!r} is gone from {self.servers}")
        await self.enqueued_so_far()
        await self.commit(consumer)  # stopping: what was enqueued need not be read again

    async def _enqueue(
        self,
        run: MappingRun,
        taken: Taken,
        lanes: list[str],
        *,
        after: asyncio.Task[None] | None = None,
    ) -> None:
        """Enqueue what ``taken`` holds, once ``after`` (the enqueue before) has; then its
        records may be committed."""
        await run.enqueue(taken.batches, lanes, after=after)
        for name, records in taken.checkpoint.items():
            offset = int(records[-1].position) + 1
            tp = self.partitions[name]
            self.enqueued[tp] = self.uncommitted[tp] = offset

    async def enqueued_so_far(self) -> None:
        """Wait for the enqueue under way, if any; raise what it raised."""
        enqueuing, self._enqueuing = self._enqueuing, None
        if enqueuing is not None:
            await enqueuing

    async def until_enqueued(self) -> None:
        """Wait for the enqueue under way to end, however it ends (the loop raises its
        error)."""
        if self._enqueuing is not None:
            await asyncio.wait([self._enqueuing])

    async def _abandon_enqueue(self) -> None:
        """The reader ends on an error: let the enqueue under way end too (what it enqueued
        is not committed; read again, the idempotency keys keep it from running twice)."""
        enqueuing, self._enqueuing = self._enqueuing, None
        if enqueuing is not None:
            enqueuing.cancel()
            await asyncio.wait([enqueuing])

    async def commit(
        self, consumer: AIOKafkaConsumer, only: set[TopicPartition] | None = None
    ) -> None:
        """Commit the offsets of what was enqueued (of ``only`` those partitions)."""
        assigned = consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self.uncommitted.items()
            if tp in assigned and (only is None or tp in only)
        }
        if only is None:
            self.uncommitted.clear()  # partitions no longer assigned are another's to commit
        else:
            for tp in only:
                self.uncommitted.pop(tp, None)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved to another consumer: it reads them again from the last
            # commit, and the idempotency keys keep those batches from being enqueued twice.
            log.info("mapping %s: commit not accepted (%s)", self.mapping.name, exc)
            return
        self.committed.update(offsets)

    async def _read(
        self, consumer: AIOKafkaConsumer, run: MappingRun, wait_s: float
    ) -> dict[TopicPartition, list[Any]]:
        """Records of the partitions with room for them, waiting up to ``wait_s`` for some.

        No more than there is room for: the consumer keeps the rest as fetched (undecoded),
        rather than as Python objects waiting in the batcher."""
        limit = READ_AHEAD_BATCHES * run.mapping.batch_size
        assigned = consumer.assignment()
        room = {tp: limit - run.batcher.waiting(_name(tp)) for tp in assigned}
        room = {tp: n for tp, n in room.items() if n > 0}
        timeout_ms = int(wait_s * 1000)
        most = min(MAX_RECORDS_PER_FETCH, max(run.mapping.batch_size, sum(room.values())))
        if len(room) == len(assigned):  # every one (or none yet: getmany waits for them)
            got: dict[TopicPartition, list[Any]] = await consumer.getmany(
                timeout_ms=timeout_ms, max_records=most
            )
            return got
        if not room:
            await asyncio.sleep(wait_s)
            return {}
        got = await consumer.getmany(*room, timeout_ms=timeout_ms, max_records=most)
        return got

    def _measure(self, consumer: AIOKafkaConsumer, run: MappingRun) -> None:
        lag = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            done = self.enqueued.get(tp, self.committed.get(tp))
            if high is not None and done is not None:
                lag += max(0, high - done)
        run.lag = lag
        if lag == 0:
            run.iterator_age_ms = 0

    async def _apply_seek(self, consumer: AIOKafkaConsumer, run: MappingRun) -> None:
        seek = run.take_seek()
        if seek is None:
            return
        assigned = list(consumer.assignment())
        run.batcher.forget([_name(tp) for tp in assigned])
        self.uncommitted.clear()
        await self._seek(consumer, assigned, seek.to.timestamp())
        offsets = {tp: await consumer.position(tp) for tp in assigned}
        if offsets:
            await consumer.commit(offsets)
            self.committed.update(offsets)
            self.enqueued.update(offsets)
        log.info("mapping %s: sought %d partitions to %s", run.name, len(assigned), seek.to)


def _records(partition: str, messages: Sequence[Any]) -> list[Record]:
    """``messages`` (aiokafka's records) as :class:`Record` values; each is its own item
    (:class:`~broker.events.batches.KafkaEventWriter` writes the event from them)."""
    return [Record(partition, str(m.offset), m.timestamp, m.value, m) for m in messages]


def shaper(mapping: MappingConfig) -> Shaper:
    source = mapping.parsed_source
    assert isinstance(source, KafkaSource)
    return KafkaEventWriter(",".join(source.bootstrap_servers)).event


def create(context: PollerContext) -> MappingPoller:
    return MappingPoller(context, SourceKind.KAFKA, KafkaReader, shaper)
