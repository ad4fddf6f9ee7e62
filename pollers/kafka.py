"""Kafka mappings: a consumer group per mapping, one lane per partition, commit after enqueue.

Each ``serve`` process joins the mapping's consumer group (the mapping's
name unless the URI names one), so partitions spread over processes and move
when one dies. Per partition, records are filtered and batched
(:mod:`pollers.batching`), shaped as Lambda's self-managed Kafka event,
enqueued in the partition's lane (``mapping:NAME:topic-N``: one batch in
flight at a time, in order) and only then is the offset committed. A
partition whose lane holds ``MAX_PENDING_BATCHES`` batches takes no more;
once enough of its records wait to fill the lane again, the partition is
paused (``consumer.pause``) until they fit: memory stays bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from broker.batch_events import KAFKA_TIMESTAMP_TYPES, KafkaRecord, kafka_event
from broker.mapping_config import KafkaSource, MappingConfig, SourceKind
from broker.poller import PollerContext
from pollers.batching import Record
from pollers.mapping_runner import MAX_PENDING_BATCHES, MappingPoller, MappingRun, SourceError

log = logging.getLogger("eventwire.mappings.kafka")

MAX_RECORDS_PER_FETCH = 5000
TOPIC_CHECK_S = 5.0
LAG_CHECK_S = 1.0
SESSION_TIMEOUT_MS = 6000


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}-{tp.partition}"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped in aiokafka
    def __init__(self, reader: KafkaReader, run: MappingRun) -> None:
        self.reader = reader
        self.run = run

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Records read but not enqueued are read again by the partition's next owner.
        self.run.batcher.forget([_name(tp) for tp in revoked])
        for tp in revoked:
            self.reader.paused.discard(tp)
            self.reader.committed.pop(tp, None)

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
        self.paused: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.assigned: set[str] = set()
        """Partitions assigned since the loop last took them over (:meth:`MappingRun.take_over`)."""

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
        topic_checked = lag_checked = time.monotonic()
        while not run.stopping.is_set():
            if run.seek_wanted.is_set():
                await self._apply_seek(consumer, run)
            deadline = batcher.next_deadline()
            wait_s = 0.1 if deadline is None else min(0.1, max(0.0, deadline - time.monotonic()))
            if batcher.held_back():
                wait_s = min(wait_s, 0.005)  # batches wait for room: look again soon
            data = await consumer.getmany(
                timeout_ms=int(wait_s * 1000), max_records=MAX_RECORDS_PER_FETCH
            )
            if self.assigned:
                assigned, self.assigned = sorted(self.assigned), set()
                await run.take_over(assigned)
            now = time.monotonic()
            for tp, messages in data.items():
                name = _name(tp)
                for m in messages:
                    batcher.add(_record(name, m), now)
            taken, lanes = await run.take(now)
            await run.enqueue(taken.batches, lanes)
            if taken.checkpoint:
                await self._commit(consumer, taken.checkpoint)
            await self._backpressure(consumer, run)
            if now - lag_checked >= LAG_CHECK_S:
                lag_checked = now
                self._measure(consumer, run)
            if now - topic_checked >= TOPIC_CHECK_S:
                topic_checked = now
                if not consumer.partitions_for_topic(self.source.topic):
                    raise SourceError(f"topic {self.source.topic!r} is gone from {self.servers}")

    async def _commit(self, consumer: AIOKafkaConsumer, done: dict[str, list[Record]]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for records in done.values():
            last = records[-1].item
            offsets[TopicPartition(last.topic, last.partition)] = last.offset + 1
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
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

    async def _backpressure(self, consumer: AIOKafkaConsumer, run: MappingRun) -> None:
        """Stop fetching a partition while its lane is full and enough of its records wait
        to fill that lane again; fetch again once they fit."""
        limit = MAX_PENDING_BATCHES * run.mapping.batch_size
        full = {tp for tp in consumer.assignment() if run.batcher.waiting(_name(tp)) >= limit}
        pause = full - self.paused
        resume = self.paused - full
        if pause:
            consumer.pause(*pause)
            log.debug("mapping %s: pausing %s", self.mapping.name, sorted(map(_name, pause)))
        if resume:
            consumer.resume(*resume)
        self.paused = full

    def _measure(self, consumer: AIOKafkaConsumer, run: MappingRun) -> None:
        lag = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            done = self.committed.get(tp)
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
        await self._seek(consumer, assigned, seek.to.timestamp())
        offsets = {tp: await consumer.position(tp) for tp in assigned}
        if offsets:
            await consumer.commit(offsets)
            self.committed.update(offsets)
        log.info("mapping %s: sought %d partitions to %s", run.name, len(assigned), seek.to)


def _record(partition: str, m: Any) -> Record:
    headers = tuple((k, v if isinstance(v, bytes) else b"") for k, v in (m.headers or ()))
    item = KafkaRecord(
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        timestamp_ms=m.timestamp,
        key=m.key,
        value=m.value,
        headers=headers,
        timestamp_type=KAFKA_TIMESTAMP_TYPES.get(m.timestamp_type, "CREATE_TIME"),
    )
    return Record(partition, str(m.offset), m.timestamp, m.value, item)


def shaper(mapping: MappingConfig) -> Any:
    source = mapping.parsed_source
    assert isinstance(source, KafkaSource)
    servers = ",".join(source.bootstrap_servers)

    def shape(items: Sequence[Any]) -> dict[str, Any]:
        return kafka_event(items, bootstrap_servers=servers)

    return shape


def create(context: PollerContext) -> MappingPoller:
    return MappingPoller(context, SourceKind.KAFKA, KafkaReader, shaper)
