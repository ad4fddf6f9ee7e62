"""One run of a mapping's reading: what it batches with, and the one way it enqueues.

:meth:`MappingRun.enqueue` shapes the batches into events, splits them to fit
the payload limit, records cuts, and enqueues with keys derived from the
records' positions (for an ``object_notifications`` mapping: an invocation per
S3 record, :mod:`pollers.s3.documents`). :meth:`MappingRun.send` runs an
enqueue and then the source's checkpoint of its records, in order, overlapping
the next read where the source allows it. :meth:`MappingRun.take` gives what the
lanes have room for: a lane that holds ``MAX_PENDING_BATCHES`` unfinished
batches takes no more until it drains (backpressure).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from broker.config.mappings import MappingConfig, SourceKind
from broker.dispatch.mapping_batches import MappingPolicy, mapping_source
from broker.ids import new_id
from broker.models import Enqueued, NewInvocation, Origin
from broker.observability.tracing import batch_context
from broker.sources.pollers import PollerContext
from broker.store.dead_letters import add_dead_letters
from broker.store.mappings import Cut, load_cuts, save_cuts
from pollers.batching import Batch, Batcher, Record, Shaper, Taken, TraceOf
from pollers.s3.documents import NotificationDocuments

log = logging.getLogger("eventwire.mappings")

MAX_PENDING_BATCHES = 32
"""Per lane: a reader stops reading a partition while this many of its batches wait.

Enough for a lane of a fast function not to run dry while the reader looks again
(every ``FULL_REFRESH_S`` at most): eight were drained in 8 ms by a no-op function."""
READ_AHEAD_BATCHES = 8
"""Per partition: a reader holds at most this many batches' worth of records that are
not enqueued yet (in the batcher, or unacknowledged from a queue)."""
DEPTH_REFRESH_S = 0.2
FULL_REFRESH_S = 0.01
"""While a lane is full its depth is asked for at most this often, and at least every
``DEPTH_REFRESH_S``: as often as its fastest lane needs (:class:`RefreshPace`)."""


class SourceError(Exception):
    """The source cannot be read; the message is the mapping's ``failing`` reason."""


BeforeEnqueue = Callable[[Sequence[tuple[Batch, list[NewInvocation]]]], Awaitable[None]]
AfterEnqueue = Callable[
    [Sequence[tuple[Batch, list[NewInvocation]]], Sequence[Enqueued]], Awaitable[None]
]
Checkpoint = Callable[[Mapping[str, list[Record]]], Awaitable[None]]
"""A source's checkpoint of records once they are enqueued."""


@dataclass(slots=True)
class Seek:
    generation: int
    to: datetime


class MappingRun:
    """One run of a mapping's reader: what it reads with, and how it enqueues."""

    def __init__(
        self,
        mapping: MappingConfig,
        context: PollerContext,
        *,
        generation: int,
        cuts: dict[str, Cut],
        shape: Shaper,
        trace_of: TraceOf | None = None,
    ) -> None:
        """``trace_of``: read each record's trace context (when the service traces)."""
        self.mapping = mapping
        self.context = context
        self.generation = generation
        self.shape = shape
        self.trace_of = trace_of
        self.batcher = Batcher(
            batch_size=mapping.batch_size,
            window_s=mapping.batch_window_s,
            record_filter=mapping.record_filter,
            cuts=cuts,
        )
        self.before_enqueue: BeforeEnqueue | None = None
        """Given each batch and its invocations after cuts are recorded, before the enqueue
        (a RabbitMQ reader records them: :mod:`broker.store.unacked`)."""
        self.after_enqueue: AfterEnqueue | None = None
        """Given the same and the queue's answer for each invocation, in order, once they
        are durable and before the checkpoint (an SQS reader follows their outcomes)."""
        self.stopping = asyncio.Event()
        self.seek: Seek | None = None
        self.seek_wanted = asyncio.Event()
        self.connected = False
        self.lag: int | None = None
        self.partition_lag: dict[str, int] | None = None
        """Per partition, for sources that have partitions with offsets (Kafka)."""
        self.iterator_age_ms: int | None = None
        self.enqueued = 0
        self.invocations = 0
        self.figures = context.metrics.mapping(mapping.name)
        self._filtered = 0
        """Of the batcher's records filtered out, those counted in :attr:`figures`."""
        self._policy = MappingPolicy(
            name=mapping.name,
            max_retry_attempts=mapping.max_retry_attempts,
            max_record_age_s=mapping.max_record_age_s,
            bisect_on_error=mapping.bisect_on_error,
            report_batch_item_failures=mapping.report_batch_item_failures,
            on_failure=mapping.on_failure,
            redelivered_by_source=mapping.kind is SourceKind.SQS,
        )
        self._limit = context.config.limits.async_payload_bytes
        self._depths: dict[str, int] = {}
        """Unfinished batches per lane: the queue's count when last asked, plus those
        enqueued since."""
        self._sending: dict[str, int] = {}
        """Batches per lane shaped and counted, not yet in the queue (:meth:`enqueue`)."""
        self._acked: dict[str, int] = {}
        """Batches per lane the queue has taken, in all: those it took while its count was
        asked for are added to the count (which may hold them already: erring toward
        pausing)."""
        self._depths_at = 0.0
        self._pace = RefreshPace()
        self._in_flight: asyncio.Task[None] | None = None
        """The send under way (:meth:`send`): its enqueue, then its checkpoint."""

    def measure_step(self, polled: int) -> None:
        """One step of the loop read ``polled`` records: count them, and what the filters
        left out of them, and whether batches wait for room."""
        figures = self.figures
        if polled:
            figures.polled.inc(polled)
        filtered = self.batcher.filtered
        if filtered != self._filtered:
            figures.filtered.inc(filtered - self._filtered)
            self._filtered = filtered
        figures.paused.set(1 if self.batcher.held_back() else 0)

    def measure_position(self) -> None:
        """The lag and iterator age the source last measured, as gauges."""
        if self.lag is not None:
            self.figures.lag.set(self.lag)
        if self.partition_lag is not None:
            self.context.metrics.set_partition_lag(self.name, self.partition_lag)
        if self.iterator_age_ms is not None:
            self.figures.iterator_age.set(self.iterator_age_ms / 1000)

    def forget_partitions(self) -> None:
        """The reader stopped: it reports the lag of no partition any more."""
        if self.partition_lag is not None:
            self.partition_lag = {}
            self.context.metrics.set_partition_lag(self.name, {})

    @property
    def name(self) -> str:
        return self.mapping.name

    def lane(self, partition: str) -> str:
        return f"mapping:{self.name}:{partition}"

    def take_seek(self) -> Seek | None:
        seek, self.seek = self.seek, None
        self.seek_wanted.clear()
        if seek is not None:
            self.generation = seek.generation
        return seek

    async def take_over(self, partitions: Sequence[str]) -> None:
        """Before reading ``partitions`` (just assigned, or taken over from another process):
        the batches their last reader ended early are followed again, so that replayed
        records form the same batches (:meth:`Batcher.take_over`)."""
        if not partitions:
            return
        cuts = await load_cuts(self.context.engine, self.name)
        self.batcher.take_over(partitions, cuts)

    async def send(
        self, taken: Taken, lanes: Sequence[str], checkpoint: Checkpoint, *, overlap: bool
    ) -> None:
        """Enqueue what ``taken`` holds, then ``checkpoint`` its records; in order, after the
        send under way. With ``overlap`` this returns once the send before it has ended
        (this one goes on while the source reads again); else once this one has."""
        previous = self._in_flight
        if taken.batches or taken.checkpoint:
            self._in_flight = asyncio.create_task(
                self._send(taken, lanes, checkpoint, previous), name=f"eventwire-send-{self.name}"
            )
        if not overlap:
            await self.sent()
        elif previous is not None:
            await previous

    async def _send(
        self,
        taken: Taken,
        lanes: Sequence[str],
        checkpoint: Checkpoint,
        after: asyncio.Task[None] | None,
    ) -> None:
        if after is None:
            await self.enqueue(taken.batches, lanes)
        else:
            await self.enqueue(taken.batches, lanes, after=after)
        if taken.checkpoint:
            await checkpoint(taken.checkpoint)

    async def sent(self) -> None:
        """Wait for the send under way, if any; raise what it raised."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            await in_flight

    async def until_sent(self) -> None:
        """Wait for the send under way to end, however it ends (the loop raises its error)."""
        if self._in_flight is not None:
            await asyncio.wait([self._in_flight])

    async def abandon(self) -> None:
        """The source failed: end the send under way too. What it enqueued is not
        checkpointed; read again, the idempotency keys keep it from running twice."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.cancel()
            await asyncio.wait([in_flight])

    async def enqueue(
        self,
        batches: Sequence[Batch],
        lanes: Sequence[str] | None = None,
        *,
        after: Awaitable[object] | None = None,
    ) -> None:
        """Enqueue ``batches`` (``lanes[i]`` for batch i; else by partition); durable on return.

        ``after``: the enqueue before this one. The events are shaped while it is under way
        (on the queue's round trip, not after it); the invocations go to the queue once it
        has ended, in order. Its batches already count in the lanes' depths.
        """
        if batches:
            await self._enqueue(batches, lanes, after)
        elif after is not None:
            await after

    async def _enqueue(
        self,
        batches: Sequence[Batch],
        lanes: Sequence[str] | None,
        after: Awaitable[object] | None,
    ) -> None:
        items: list[NewInvocation] = []
        shaped: list[tuple[Batch, list[NewInvocation]]] = []
        cuts: dict[str, Cut] = {}
        for index, batch in enumerate(batches):
            if batch.cut and self.mapping.lane_ordered:
                cuts[batch.partition] = Cut(batch.first, batch.last)
            lane = lanes[index] if lanes is not None else self.lane(batch.partition)
            if index:
                await asyncio.sleep(0)  # let what the dispatcher has ready run between batches
            made = self._invocations(batch, lane)
            shaped.append((batch, made))
            items.extend(made)
        lanes_of = [item.lane for item in items if item.lane is not None]
        for lane in lanes_of:  # counted now, so that the next take leaves room for them
            self._sending[lane] = self._sending.get(lane, 0) + 1
        try:
            if after is not None:
                await after
            if cuts:
                await save_cuts(self.context.engine, self.name, cuts, self.context.timer.now())
            if self.before_enqueue is not None:
                await self.before_enqueue(shaped)
            enqueued = await self.context.queue.enqueue(items)
            if self.after_enqueue is not None:
                await self.after_enqueue(shaped, enqueued)
        finally:
            for lane in lanes_of:
                self._sending[lane] -= 1
        for lane in lanes_of:
            self._depths[lane] = self._depths.get(lane, 0) + 1
            self._acked[lane] = self._acked.get(lane, 0) + 1
        self._enqueued(batches, len(items))

    def _enqueued(self, batches: Sequence[Batch], invocations: int) -> None:
        newest = max(r.timestamp_ms for r in batches[-1].records)
        self.iterator_age_ms = max(0, int(time.time() * 1000) - newest)
        records = sum(len(b.records) for b in batches)
        self.enqueued += records
        self.figures.enqueued.inc(records)
        self.invocations += invocations

    def _invocations(self, batch: Batch, lane: str) -> list[NewInvocation]:
        out = []
        for records, payload, fits in _fit(list(batch.records), self.shape, self._limit):
            first, last = records[0].position, records[-1].position
            if not fits:
                # Never run: the dispatcher gives it up at its turn in the lane, and the
                # failure record and dead letter say why; the partition moves on.
                log.warning(
                    "mapping %s: record %s of %s is %d bytes as an event, over the %d-byte "
                    "payload limit; it goes to the failure destination "
                    "(MaximumPayloadSizeExceeded)",
                    self.name, first, batch.partition, len(payload), self._limit,
                )  # fmt: skip
            oldest_ms = min(r.timestamp_ms for r in records)
            policy = replace(self._policy, oldest_record_ms=oldest_ms)
            out.append(
                NewInvocation(
                    id=new_id(),
                    function=self.mapping.function,
                    payload=payload,
                    origin=Origin.MAPPING,
                    lane=lane,
                    idempotency_key=self._key(batch.partition, records),
                    source=self._traced(
                        mapping_source(
                            policy,
                            {"partition": batch.partition, "first": first, "last": last},
                            records=len(records),
                            oversized=None if fits else len(payload),
                        ),
                        records,
                    ),
                )
            )
        return out

    def _traced(self, source: dict[str, Any], records: Sequence[Record]) -> dict[str, Any]:
        """``source`` with the trace context of its records: the one they share as the
        parent of its spans, or links to each."""
        if self.trace_of is None:
            return source
        return source | batch_context([self.trace_of(record.item) for record in records])

    def _key(self, partition: str, records: Sequence[Record]) -> str:
        """Ordered sources: the first and last position. A queue's messages have no position:
        a digest of their ids (a batch redelivered whole is still one invocation)."""
        prefix = f"mapping:{self.name}:{self.generation}:{partition}"
        if self.mapping.lane_ordered:
            return f"{prefix}:{records[0].position}-{records[-1].position}"
        digest = hashlib.sha256("\n".join(r.position for r in records).encode()).hexdigest()
        return f"{prefix}:{digest[:40]}"

    async def take(self, now: float, lanes: Sequence[str] | None = None) -> tuple[Any, list[str]]:
        """The batches ready now, within what the lanes have room for, and the lane of each.

        Ordered sources: a partition's lane takes up to ``MAX_PENDING_BATCHES``
        unfinished batches. ``lanes`` (a queue's parallel lanes): batches go to
        the emptiest, within the same bound each.
        """
        if lanes is None:
            by_partition = {p: self.lane(p) for p in self.batcher.partitions()}
            depths = await self.depths(list(by_partition.values()))
            budget = {p: MAX_PENDING_BATCHES - depths[lane] for p, lane in by_partition.items()}
            taken = self.batcher.take(now, budget)
            return taken, [self.lane(b.partition) for b in taken.batches]
        depths = await self.depths(lanes)
        room = {lane: MAX_PENDING_BATCHES - depths[lane] for lane in lanes}
        budget = {p: sum(max(0, r) for r in room.values()) for p in self.batcher.partitions()}
        taken = self.batcher.take(now, budget)
        chosen = []
        for _ in taken.batches:
            lane = max(room, key=lambda name: room[name])
            room[lane] -= 1
            chosen.append(lane)
        return taken, chosen

    async def depths(self, lanes: Sequence[str]) -> dict[str, int]:
        """Unfinished batches per lane, asked of the queue every ``DEPTH_REFRESH_S`` (more
        often while a lane is full, to resume as soon as it drains: see ``FULL_REFRESH_S``);
        in between, batches enqueued since are added, so the answer errs toward pausing."""
        now = time.monotonic()
        full = any(self._depths.get(lane, 0) >= MAX_PENDING_BATCHES for lane in lanes)
        due = self._pace.interval_s if full else DEPTH_REFRESH_S
        if now - self._depths_at >= due or any(lane not in self._depths for lane in lanes):
            acked = dict(self._acked)
            fresh = await self.context.queue.lane_depths(list(lanes))
            for lane in fresh:
                fresh[lane] += self._acked.get(lane, 0) - acked.get(lane, 0)
            if full:
                self._pace.observe(self._depths, fresh)
            self._depths, self._depths_at = fresh, now
        return {lane: self._depths.get(lane, 0) + self._sending.get(lane, 0) for lane in lanes}

    async def backed_up(self, lanes: Sequence[str]) -> set[str]:
        """Lanes holding ``MAX_PENDING_BATCHES`` or more unfinished batches.

        Counts come from the queue at most every ``refresh_s``; in between,
        batches enqueued since are added, so the answer errs toward pausing.
        """
        depths = await self.depths(lanes)
        return {lane for lane in lanes if depths[lane] >= MAX_PENDING_BATCHES}


class DocumentsRun(MappingRun):
    """A run of an ``object_notifications`` mapping: each record read is an S3 notification
    document, invoked once per matching S3 record in it — in no lane (every record read is
    ready) and with no cuts (its keys are the notifications', not positions)."""

    @functools.cached_property
    def documents(self) -> NotificationDocuments:
        return NotificationDocuments(self.mapping, self.context.settings, self.shape)

    async def _enqueue(
        self,
        batches: Sequence[Batch],
        lanes: Sequence[str] | None,
        after: Awaitable[object] | None,
    ) -> None:
        """An invocation per matching S3 record, a dead letter per record that is no
        document."""
        planned = self.documents.plan(batches, self.generation, self.context.timer.now())
        if after is not None:
            await after
        if planned.dead_letters:
            await add_dead_letters(self.context.engine, planned.dead_letters)
            for letter in planned.dead_letters:
                log.warning("%s; kept as dead letter %s", letter.error_message, letter.id)
        if planned.invocations:
            await self.context.queue.enqueue(planned.invocations)
        self._enqueued(batches, len(planned.invocations))

    async def take(self, now: float, lanes: Sequence[str] | None = None) -> tuple[Any, list[str]]:
        return self.batcher.take(now), []

    async def depths(self, lanes: Sequence[str]) -> dict[str, int]:
        return dict.fromkeys(lanes, 0)  # its invocations are in no lane


class RefreshPace:
    """How often to ask for the depths of lanes while one is full: about as often as its
    fastest lane finishes an eighth to a quarter of ``MAX_PENDING_BATCHES``, so that none
    runs dry before the reader refills it, and no more often. Adjusted from what each
    refresh finds."""

    def __init__(self) -> None:
        self.interval_s = FULL_REFRESH_S

    def observe(self, before: Mapping[str, int], after: Mapping[str, int]) -> None:
        """Depths ``before`` (with the batches enqueued since) and ``after`` a refresh."""
        ran_low = any(
            after.get(lane, 0) <= MAX_PENDING_BATCHES // 4
            for lane, depth in before.items()
            if depth >= MAX_PENDING_BATCHES
        )
        drained = max((depth - after.get(lane, 0) for lane, depth in before.items()), default=0)
        if ran_low:  # a full lane nearly ran dry before it was looked at again
            self.interval_s = FULL_REFRESH_S
        elif drained > MAX_PENDING_BATCHES // 4:
            self.interval_s = max(FULL_REFRESH_S, self.interval_s / 2)
        elif drained < max(1, MAX_PENDING_BATCHES // 8):
            self.interval_s = min(DEPTH_REFRESH_S, self.interval_s * 1.5)


def _fit(records: list[Any], shape: Shaper, limit: int) -> list[tuple[list[Any], bytes, bool]]:
    """Consecutive runs of ``records`` with their events, each within ``limit`` (the flag
    False: one record whose event is over the limit on its own)."""
    payload = shape([r.item for r in records])
    if len(payload) <= limit:
        return [(records, payload, True)]
    if len(records) == 1:
        return [(records, payload, False)]
    middle = len(records) // 2
    return _fit(records[:middle], shape, limit) + _fit(records[middle:], shape, limit)
