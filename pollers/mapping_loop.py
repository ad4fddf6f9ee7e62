"""The loop every mapping reads through, and the :class:`Source` protocol it drives.

A source adapter (:mod:`pollers.kafka`, :mod:`pollers.rabbitmq`,
:mod:`pollers.redis_streams`) connects, reads records of the partitions that
have room, checkpoints records once they are enqueued (Kafka commits offsets,
RabbitMQ acknowledges, Redis XACKs), seeks, and says which partitions it was
given. The loop owns the rest: how long a read may wait (batch windows, lanes
waiting for room), batching, taking what the lanes have room for
(backpressure), and enqueueing before checkpointing — overlapped with the next
read where the source allows it, in order either way. A crash between an
enqueue and its checkpoint reads the records again, and the batches'
idempotency keys keep them from being enqueued twice.

An SQS queue (:mod:`pollers.sqs`) is read through the same loop, but what it
checkpoints is only what the filters leave out (deleted): its messages stay in
the queue until their invocation's outcome, which its reader follows beside the
loop, deletes them or gives them back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from pollers.batching import Batcher, Record
from pollers.mapping_run import MappingRun

IDLE_WAIT_S = 0.1
"""A read waits at most this long for records, so that the loop looks around (seeks,
stops, checks on the source) at least this often."""
ROOM_CHECK_S = 0.005
"""While batches wait for room in their lanes, the loop looks again this often."""


class Source(Protocol):
    """A mapping's source as the loop drives it: it reads, checkpoints and seeks."""

    @property
    def lanes(self) -> Sequence[str] | None:
        """The lanes batches go to: ``None`` for one lane per partition (ordered sources),
        else a queue's parallel lanes (each batch to the emptiest)."""
        ...

    @property
    def overlap(self) -> bool:
        """Whether the next read may go on while an enqueue is under way."""
        ...

    async def open(self, run: MappingRun) -> None:
        """Connect and subscribe; raise :class:`SourceError` when the source cannot be read."""
        ...

    async def close(self) -> None:
        """Disconnect, whatever happened before."""
        ...

    async def check(self, run: MappingRun, now: float) -> None:
        """Once a step, before reading: what is due (a commit, the lag, whether the topic
        or queue is still there); raise :class:`SourceError` when it is gone."""
        ...

    async def read(self, run: MappingRun, wait_s: float) -> Mapping[str, Sequence[Record]]:
        """Records per partition, of the partitions with room, waiting up to ``wait_s``."""
        ...

    def assigned(self) -> list[str]:
        """Partitions given to this reader since last asked (assigned, or taken over)."""
        ...

    async def checkpoint(self, done: Mapping[str, list[Record]]) -> None:
        """``done`` (per partition, in order) is enqueued: commit or acknowledge it."""
        ...

    async def seek(self, run: MappingRun, to: datetime) -> None:
        """Read from time ``to`` on (``eventwire mappings seek``)."""
        ...

    async def finish(self) -> None:
        """The mapping stops: checkpoint what is enqueued, not to read it again."""
        ...


async def pump(run: MappingRun, source: Source) -> None:
    """Read ``source`` into the queue until ``run.stopping`` is set; raise when it fails."""
    await source.open(run)
    run.connected = True
    try:
        await _read_until_stopped(run, source)
    finally:
        run.connected = False
        run.forget_partitions()
        await run.abandon()
        await source.close()


async def _read_until_stopped(run: MappingRun, source: Source) -> None:
    batcher = run.batcher
    while not run.stopping.is_set():
        await source.check(run, time.monotonic())
        if run.seek_wanted.is_set():
            await run.sent()
            seek = run.take_seek()
            if seek is not None:
                await source.seek(run, seek.to)
        read = await source.read(run, _wait_s(batcher))
        await run.take_over(source.assigned())
        now = time.monotonic()
        polled = 0
        for partition, records in read.items():
            batcher.extend(partition, records, now)
            polled += len(records)
        run.measure_step(polled)
        # The next step's read overlaps this enqueue where the source allows it, and so do
        # its take and the shaping of its events: its enqueue waits for this one only to
        # send (the lanes' depths count both).
        taken, lanes = await run.take(now, source.lanes)
        await run.send(taken, lanes, source.checkpoint, overlap=source.overlap)
    await run.sent()
    await source.finish()


def _wait_s(batcher: Batcher) -> float:
    """Until the next batch window closes, within ``[ROOM_CHECK_S, IDLE_WAIT_S]``; a window
    that ran out closed its batch, unless its lane had no room: then look again soon."""
    if batcher.held_back():
        return ROOM_CHECK_S
    deadline = batcher.next_deadline()
    if deadline is None:
        return IDLE_WAIT_S
    return min(IDLE_WAIT_S, max(ROOM_CHECK_S, deadline - time.monotonic()))
