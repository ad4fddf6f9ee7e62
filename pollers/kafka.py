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
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from broker.config.mappings import KafkaSource, MappingConfig, SourceKind
from broker.events.batches import KafkaEventWriter
from broker.observability.tracing import TRACEPARENT, header_traceparent
from broker.sources.pollers import PollerContext
from pollers.batching import Record, Shaper
from pollers.mapping_run import READ_AHEAD_BATCHES, MappingRun, SourceError
from pollers.mapping_runner import MappingPoller

log = logging.getLogger("eventwire.mappings.kafka")

MAX_RECORDS_PER_FETCH = 5000
TOPIC_CHECK_S = 5.0
LAG_CHECK_S = 1.0
SESSION_TIMEOUT_MS = 6000
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
        await self.run.until_sent()
        await self.reader.commit(set(revoked))
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
        self.reader.newly_assigned.update(names)
        await self.reader.start_at_timestamp(list(assigned))


class KafkaReader:
    """A mapping's Kafka consumer, as :func:`pollers.mapping_loop.pump` drives it."""

    lanes = None  # a lane per partition
    overlap = True  # the next fetch goes on while an enqueue waits on the queue

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
        self._consumer: AIOKafkaConsumer | None = None
        self.newly_assigned: set[str] = set()
        """Partitions assigned since the loop last asked (:meth:`assigned`)."""
        self.partitions: dict[str, TopicPartition] = {}
        """Partitions read from, by name (``topic-N``)."""
        self._committed_at = self._lag_checked_at = self._topic_checked_at = time.monotonic()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "the reader is not open"
        return self._consumer

    async def open(self, run: MappingRun) -> None:
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
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            raise SourceError(f"cannot reach Kafka at {self.servers}: {exc}") from None
        self._consumer = consumer
        try:
            if self.source.topic not in await consumer.topics():
                raise SourceError(f"topic {self.source.topic!r} does not exist on {self.servers}")
        except BaseException:
            await self.close()
            raise
        consumer.subscribe([self.source.topic], listener=_Rebalance(self, run))
        log.info("mapping %s: reading %s", self.mapping.name, self.source.uri)

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def check(self, run: MappingRun, now: float) -> None:
        if self.uncommitted and now - self._committed_at >= COMMIT_INTERVAL_S:
            self._committed_at = now
            await self.commit()
        if now - self._lag_checked_at >= LAG_CHECK_S:
            self._lag_checked_at = now
            self._measure(run)
        if now - self._topic_checked_at >= TOPIC_CHECK_S:
            self._topic_checked_at = now
            if not self.consumer.partitions_for_topic(self.source.topic):
                raise SourceError(f"topic {self.source.topic!r} is gone from {self.servers}")

    async def read(self, run: MappingRun, wait_s: float) -> dict[str, list[Record]]:
        """Records of the partitions with room for them, waiting up to ``wait_s`` for some.

        No more than there is room for: the consumer keeps the rest as fetched (undecoded),
        rather than as Python objects waiting in the batcher."""
        consumer = self.consumer
        limit = READ_AHEAD_BATCHES * run.mapping.batch_size
        assigned = consumer.assignment()
        room = {tp: limit - run.batcher.waiting(_name(tp)) for tp in assigned}
        room = {tp: n for tp, n in room.items() if n > 0}
        timeout_ms = int(wait_s * 1000)
        most = min(MAX_RECORDS_PER_FETCH, max(run.mapping.batch_size, sum(room.values())))
        got: dict[TopicPartition, list[Any]]
        if len(room) == len(assigned):  # every one (or none yet: getmany waits for them)
            got = await consumer.getmany(timeout_ms=timeout_ms, max_records=most)
        elif not room:
            await asyncio.sleep(wait_s)
            return {}
        else:
            got = await consumer.getmany(*room, timeout_ms=timeout_ms, max_records=most)
        return self.fetched(got)

    def fetched(self, got: Mapping[TopicPartition, list[Any]]) -> dict[str, list[Record]]:
        """What ``getmany`` gave, as records per partition name."""
        read = {}
        for tp, messages in got.items():
            name = _name(tp)
            self.partitions[name] = tp
            read[name] = _records(name, messages)
        return read

    def assigned(self) -> list[str]:
        assigned, self.newly_assigned = sorted(self.newly_assigned), set()
        return assigned

    async def checkpoint(self, done: Mapping[str, list[Record]]) -> None:
        """Their offsets are committed with the next commit (every ``COMMIT_INTERVAL_S``)."""
        for name, records in done.items():
            offset = int(records[-1].position) + 1
            tp = self.partitions[name]
            self.enqueued[tp] = self.uncommitted[tp] = offset

    async def finish(self) -> None:
        await self.commit()  # stopping: what was enqueued need not be read again

    async def start_at_timestamp(self, assigned: list[TopicPartition]) -> None:
        """With ``at_timestamp``, partitions the group has no offset for start at that time."""
        if self.mapping.starting_position != "at_timestamp" or self._consumer is None:
            return
        assert self.mapping.starting_timestamp is not None
        fresh = [tp for tp in assigned if await self.consumer.committed(tp) is None]
        if fresh:
            await self._seek(fresh, self.mapping.starting_timestamp.timestamp())

    async def _seek(self, tps: list[TopicPartition], at: float) -> None:
        found = await self.consumer.offsets_for_times({tp: int(at * 1000) for tp in tps})
        for tp in tps:
            hit = found.get(tp)
            if hit is None:
                await self.consumer.seek_to_end(tp)
            else:
                self.consumer.seek(tp, hit.offset)

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit the offsets of what was enqueued (of ``only`` those partitions)."""
        assigned = self.consumer.assignment()
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
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved to another consumer: it reads them again from the last
            # commit, and the idempotency keys keep those batches from being enqueued twice.
            log.info("mapping %s: commit not accepted (%s)", self.mapping.name, exc)
            return
        self.committed.update(offsets)

    def _measure(self, run: MappingRun) -> None:
        lags = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            done = self.enqueued.get(tp, self.committed.get(tp))
            if high is not None and done is not None:
                lags[_name(tp)] = max(0, high - done)
        lag = sum(lags.values())
        run.lag = lag
        run.partition_lag = lags
        if lag == 0:
            run.iterator_age_ms = 0

    async def seek(self, run: MappingRun, to: datetime) -> None:
        consumer = self.consumer
        assigned = list(consumer.assignment())
        run.batcher.forget([_name(tp) for tp in assigned])
        self.uncommitted.clear()
        await self._seek(assigned, to.timestamp())
        offsets = {tp: await consumer.position(tp) for tp in assigned}
        if offsets:
            await consumer.commit(offsets)
            self.committed.update(offsets)
            self.enqueued.update(offsets)
        log.info("mapping %s: sought %d partitions to %s", run.name, len(assigned), to)


def _records(partition: str, messages: Sequence[Any]) -> list[Record]:
    """``messages`` (aiokafka's records) as :class:`Record` values; each is its own item
    (:class:`~broker.events.batches.KafkaEventWriter` writes the event from them)."""
    return [Record(partition, str(m.offset), m.timestamp, m.value, m) for m in messages]


def traceparent(record: Any) -> str | None:
    """The ``traceparent`` header of an aiokafka record."""
    for key, value in record.headers or ():
        if key == TRACEPARENT:
            return header_traceparent(value)
    return None


def shaper(mapping: MappingConfig) -> Shaper:
    source = mapping.parsed_source
    assert isinstance(source, KafkaSource)
    return KafkaEventWriter(",".join(source.bootstrap_servers)).event


def create(context: PollerContext) -> MappingPoller:
    return MappingPoller(context, SourceKind.KAFKA, KafkaReader, shaper, traceparent)
