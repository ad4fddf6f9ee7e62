"""The run of an SQS mapping: its lanes, and a FIFO group's batches one at a time.

A standard queue's batches go to the emptiest of ``max_concurrency`` parallel lanes
(``mapping:NAME:0`` …), as a RabbitMQ queue's do: at most that many run at once.
On a FIFO queue each message group is a partition of the batcher, and its batches go
to the lane its name hashes to — in order within the group, groups in parallel
across lanes — one batch of a group at a time: the next waits until the one before
has succeeded, and when it fails the group's later messages are given back with it
(:meth:`.reader.SqsReader.kept`), so they are not invoked before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from pollers.mapping_run import MAX_PENDING_BATCHES, MappingRun
from pollers.sqs.inflight import Inflight


def lane_of_group(group: str, lanes: Sequence[str]) -> str:
    """The lane a FIFO message group's batches go to (the same in every process)."""
    digest = hashlib.sha256(group.encode()).digest()
    return lanes[int.from_bytes(digest[:8], "big") % len(lanes)]


class SqsRun(MappingRun):
    """A run of an SQS mapping (the reader sets :attr:`inflight` and :attr:`fifo`)."""

    inflight: Inflight | None = None
    fifo = False

    async def take(self, now: float, lanes: Sequence[str] | None = None) -> tuple[Any, list[str]]:
        if not self.fifo or not lanes or self.inflight is None:
            return await super().take(now, lanes)
        busy = self.inflight.busy_groups()
        depths = await self.depths(lanes)
        budget = {
            group: 0
            if group in busy or depths[lane_of_group(group, lanes)] >= MAX_PENDING_BATCHES
            else 1
            for group in self.batcher.partitions()
        }
        taken = self.batcher.take(now, budget)
        return taken, [lane_of_group(batch.partition, lanes) for batch in taken.batches]
