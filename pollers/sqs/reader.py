"""An SQS mapping's source, as :func:`pollers.mapping_loop.pump` drives it.

It opens a client (:mod:`broker.aws.clients`: the mapping's ``endpoint_url`` and
``region``, else botocore's chain), looks the queue up (its ARN, its visibility
timeout), and runs beside the loop the pollers (:mod:`.receive`), the visibility
heartbeat (:mod:`.visibility`) and the follower of outcomes (:mod:`.outcomes`).
Unlike the other sources nothing is checkpointed when a batch is enqueued: its
messages stay held until the invocation's outcome deletes them or gives them back;
what the filters leave out is deleted when the loop checkpoints it, as Lambda does.

A crash loses nothing: held messages are only ever deleted after their invocation
succeeded, and the queue gives the others again once their visibility timeout runs
out (what happens to a batch received again: :mod:`.outcomes`). A reader that stops
gives back at once the messages it received and did not enqueue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

from broker.aws import clients
from broker.aws.clients import AWS_ERRORS, MISSING_QUEUE_CODES, Endpoint, describe, error_code
from broker.config.mappings import MappingConfig, SqsSource
from broker.sources.pollers import PollerContext
from pollers.batching import Record
from pollers.mapping_run import READ_AHEAD_BATCHES, MappingRun, SourceError
from pollers.sqs.inflight import Inflight
from pollers.sqs.outcomes import Outcomes
from pollers.sqs.receive import MAX_MESSAGES, Receivers
from pollers.sqs.records import partition_of, record_of
from pollers.sqs.redelivery import Redeliveries
from pollers.sqs.run import SqsRun
from pollers.sqs.visibility import Visibility

log = logging.getLogger("eventwire.mappings.sqs")

DEFAULT_CONCURRENCY = 5
"""Batches of a mapping run at once unless ``max_concurrency`` says: Lambda's SQS
scaling starts with five."""
MAX_POLLERS = 5
LAG_CHECK_S = 1.0


class SqsReader:
    """A mapping's SQS queue: receive, hold, follow, delete."""

    overlap = False  # a batch's invocations are followed before the next take

    def __init__(self, mapping: MappingConfig, context: PollerContext) -> None:
        source = mapping.parsed_source
        assert isinstance(source, SqsSource)
        self.mapping = mapping
        self.context = context
        self.queue = source.queue
        self.fifo = source.queue.fifo
        self.endpoint = Endpoint(mapping.endpoint_url, mapping.region)
        self.concurrency = mapping.max_concurrency or DEFAULT_CONCURRENCY
        self.pollers = min(MAX_POLLERS, self.concurrency)
        self.lanes: list[str] = []
        self.inflight = Inflight()
        self.url = ""
        self.arn = ""
        self.region = ""
        self.blocked: dict[str, float] = {}
        """FIFO groups whose batch failed, and when: their messages received before then
        are given back too."""
        self._stack = AsyncExitStack()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._run: MappingRun | None = None
        self._lag_at = 0.0
        self._client: Any = None
        self.ahead = READ_AHEAD_BATCHES * mapping.batch_size

    async def open(self, run: MappingRun) -> None:
        assert isinstance(run, SqsRun)
        self._run = run
        self.lanes = [run.lane(str(n)) for n in range(self.concurrency)]
        self.region = clients.region_of(self.endpoint, self.queue.region)
        try:
            client = await self._stack.enter_async_context(
                clients.client(
                    "sqs",
                    self.endpoint,
                    named_region=self.queue.region,
                    max_pool_connections=self.pollers + 4,
                )
            )
            self._client = client
            self.url = self.queue.url(client.meta.endpoint_url) or ""
            answer = await client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["QueueArn", "VisibilityTimeout"]
            )
        except AWS_ERRORS as exc:
            await self.close()
            raise SourceError(self._problem(exc)) from None
        attributes = answer.get("Attributes", {})
        self.arn = attributes.get("QueueArn") or self.queue.arn(self.region)
        timeout_s = int(attributes.get("VisibilityTimeout", 30))
        if timeout_s < 1:
            log.warning(
                "mapping %s: queue %s has a visibility timeout of 0: its messages are visible "
                "to other consumers at once, and may run more than once", run.name, self.url,
            )  # fmt: skip
        self.visibility = Visibility(client, self.url, timeout_s, run.name)
        self.ahead = max(READ_AHEAD_BATCHES * run.mapping.batch_size, MAX_MESSAGES * self.pollers)
        self.receivers = Receivers(
            client, self.url, self.inflight, self._group, mapping=run.name, ahead=self.ahead
        )
        self.outcomes = Outcomes(run, self.inflight, self.visibility, self.kept)
        self.redeliveries = Redeliveries(run, self.inflight, self.outcomes, fifo=self.fifo)
        run.inflight, run.fifo = self.inflight, self.fifo
        run.before_enqueue = self.redeliveries.record
        self.outcomes.before_enqueue = self.redeliveries.record_again
        run.after_enqueue = self.outcomes.enqueued
        stopping = self._stopping
        self._tasks = [
            *(
                asyncio.create_task(self.receivers.poll(stopping), name=f"eventwire-sqs-poll-{n}")
                for n in range(self.pollers)
            ),
            asyncio.create_task(
                self.visibility.heartbeat(self.inflight, stopping), name="eventwire-sqs-heartbeat"
            ),
            asyncio.create_task(self.outcomes.follow(stopping), name="eventwire-sqs-outcomes"),
        ]
        log.info(
            "mapping %s: receiving from %s with %d pollers (visibility timeout %ds)",
            run.name, self.url, self.pollers, timeout_s,
        )  # fmt: skip

    def _problem(self, exc: BaseException) -> str:
        where = self.endpoint.endpoint_url or "botocore's endpoint"
        if error_code(exc) in MISSING_QUEUE_CODES:
            return f"queue {self.url or self.mapping.source} does not exist at {where}"
        return f"cannot use SQS queue {self.url or self.mapping.source}: {describe(exc)}"

    def _group(self, message: Mapping[str, Any]) -> str:
        return partition_of(message, self.queue.name, self.fifo)

    async def close(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._tasks = []
        with contextlib.suppress(Exception):
            await self._stack.aclose()

    async def check(self, run: MappingRun, now: float) -> None:
        """The pollers, heartbeat and follower still run; the queue is still there; the lag."""
        for task in self._tasks:
            if task.done():
                error = None if task.cancelled() else task.exception()
                raise SourceError(f"{task.get_name()} stopped: {error or 'cancelled'}")
        if self.receivers.gone:
            raise SourceError(self.receivers.gone)
        await self.redeliveries.tidy(now)
        if now - self._lag_at >= LAG_CHECK_S:
            self._lag_at = now
            await self._measure(run)

    async def _measure(self, run: MappingRun) -> None:
        """The lag: the messages the queue holds visible (``ApproximateNumberOfMessages``)."""
        try:
            answer = await self._client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"]
            )
        except AWS_ERRORS as exc:
            if error_code(exc) in MISSING_QUEUE_CODES:
                raise SourceError(f"queue {self.url} does not exist any more") from None
            log.warning("mapping %s: cannot measure the lag: %s", run.name, describe(exc))
            return
        run.lag = int(answer.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))
        if run.lag == 0 and not self.inflight.held:
            run.iterator_age_ms = 0

    async def read(self, run: MappingRun, wait_s: float) -> dict[str, list[Record]]:
        """What the pollers received, by partition; they pause while every lane is backed
        up or ``READ_AHEAD_BATCHES`` batches' worth of messages wait to be batched."""
        backed_up = len(await run.backed_up(self.lanes)) == len(self.lanes)
        ahead = self.ahead
        if backed_up or self.inflight.waiting() >= ahead:
            self.receivers.room.clear()
        else:
            self.receivers.room.set()
        arrived = await self.receivers.gather(wait_s, ahead)
        claimed = await self.redeliveries.claim([message for _, message in arrived])
        out: dict[str, list[Record]] = {}
        dropped: list[str] = []
        for received_at, message in arrived:
            if message["MessageId"] in claimed:
                continue
            partition = self._group(message)
            blocked_at = self.blocked.get(partition)
            if blocked_at is not None and received_at <= blocked_at:
                dropped.append(message["MessageId"])
                continue
            record = record_of(
                message, partition=partition, event_source_arn=self.arn, region=self.region
            )
            out.setdefault(partition, []).append(record)
        if dropped:  # behind the failed message of their group: back to the queue with it
            await self.visibility.give_back(self.inflight.handles(dropped))
            self.inflight.release(dropped)
        return out

    async def kept(self, groups: set[str]) -> None:
        """A batch of FIFO ``groups`` failed: their messages not invoked yet go back to the
        queue at once (visible, yet behind the failed ones, which the queue gives first
        once their timeout runs out), as Lambda returns the rest of a group's batch."""
        now = time.monotonic()
        for group in groups:
            self.blocked[group] = now
        if self._run is not None:
            self._run.batcher.forget(list(groups))
        later = self.inflight.group_messages(groups, now)
        await self.visibility.give_back(self.inflight.handles(later))
        self.inflight.release(later)

    def assigned(self) -> list[str]:
        return []  # a queue has no partitions to take over

    async def checkpoint(self, done: Mapping[str, list[Record]]) -> None:
        """Delete what the filters left out; the rest is deleted by its outcome."""
        filtered = [
            r.position
            for records in done.values()
            for r in records
            if r.position in self.inflight.held and not self.inflight.invoking(r.position)
        ]
        if filtered:
            await self.visibility.delete(self.inflight.handles(filtered))
            self.inflight.release(filtered)

    async def seek(self, run: MappingRun, to: datetime) -> None:
        """A queue has no position to seek to (``eventwire mappings seek`` refuses)."""

    async def finish(self) -> None:
        """Give back at once what was received and not enqueued."""
        self.receivers.drain()
        waiting = [h.message_id for h in self.inflight.held.values() if h.invocation is None]
        await self.visibility.give_back(self.inflight.handles(waiting))
        self.inflight.release(waiting)
