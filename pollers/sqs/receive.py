"""The pollers of an SQS mapping: long-polling ``ReceiveMessage`` tasks feeding the loop.

The mapping loop reads at most ``IDLE_WAIT_S`` at a time, so long polls (up to
``WAIT_S``, 20 s, as Lambda's) run in tasks of their own, one per poller, each
receiving up to ten messages a call (SQS's most) into an inbox the loop drains.
A message is held (:mod:`.inflight`) — and so kept invisible — from the moment it is
received. A poller receives only while the reader has ``room`` (the loop clears it
while the mapping's lanes are backed up or enough messages wait to be batched:
backpressure); a failed receive is logged and tried again after a backoff, and a
queue that is gone is the mapping's ``failing`` reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from broker.aio.waits import wait_set
from broker.aws.clients import AWS_ERRORS, MISSING_QUEUE_CODES, describe, error_code
from pollers.sqs.inflight import Inflight

log = logging.getLogger("eventwire.mappings.sqs")

WAIT_S = 20
"""``WaitTimeSeconds`` of a receive: SQS's longest poll."""
MAX_MESSAGES = 10
"""``MaxNumberOfMessages``: SQS's most per receive."""
RETRY_S = (0.5, 10.0)
"""A failed receive is tried again after 0.5 s, doubling up to 10 s."""

Received = tuple[float, Mapping[str, Any]]
"""A message and when it was received (monotonic)."""


class Receivers:
    """A mapping's pollers and the inbox they fill."""

    def __init__(
        self,
        client: Any,
        url: str,
        inflight: Inflight,
        group_of: Callable[[Mapping[str, Any]], str],
        *,
        mapping: str,
        wait_s: int = WAIT_S,
        ahead: int = 100,
    ) -> None:
        """``ahead``: how many received messages may wait to be batched; a poller that
        brings the count there stops until the loop gives it room again."""
        self.client = client
        self.url = url
        self.inflight = inflight
        self.group_of = group_of
        self.mapping = mapping
        self.wait_s = wait_s
        self.ahead = ahead
        self.inbox: asyncio.Queue[Received] = asyncio.Queue()
        self.room = asyncio.Event()
        self.room.set()
        self.gone: str | None = None
        """Why the queue cannot be read any more (it was deleted …), once known."""
        self.receives = 0

    async def poll(self, stopping: asyncio.Event) -> None:
        """One poller: receive while there is room, until ``stopping``."""
        failures = 0
        while not stopping.is_set():
            if not self.room.is_set():
                await _either(self.room, stopping)
                continue
            try:
                answer = await self.client.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=MAX_MESSAGES,
                    WaitTimeSeconds=self.wait_s,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except AWS_ERRORS as exc:
                failures += 1
                if error_code(exc) in MISSING_QUEUE_CODES:
                    self.gone = f"queue {self.url} does not exist any more"
                delay = min(RETRY_S[1], RETRY_S[0] * 2 ** (failures - 1))
                log.warning(
                    "mapping %s: cannot receive from %s (%s); again in %.1fs",
                    self.mapping, self.url, describe(exc), delay,
                )  # fmt: skip
                await wait_set(stopping, delay)
                continue
            failures = 0
            self.receives += 1
            messages = answer.get("Messages", [])
            if messages:
                now = time.monotonic()
                for message in self.inflight.hold(messages, self.group_of, now):
                    self.inbox.put_nowait((now, message))
                if self.inflight.waiting() >= self.ahead:
                    self.room.clear()

    async def gather(self, wait_s: float, limit: int) -> list[Received]:
        """What has arrived, waiting up to ``wait_s`` for the first; at most ``limit``."""
        arrived: list[Received] = []
        if self.inbox.empty() and wait_s > 0:
            try:
                async with asyncio.timeout(wait_s):  # not wait_for: see broker.aio.waits
                    arrived.append(await self.inbox.get())
            except TimeoutError:
                return []
        while not self.inbox.empty() and len(arrived) < limit:
            arrived.append(self.inbox.get_nowait())
        return arrived

    def drain(self) -> list[Received]:
        """Everything in the inbox (the reader stops)."""
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait())
        return out


async def _either(event: asyncio.Event, stopping: asyncio.Event) -> None:
    """Until ``event`` or ``stopping`` is set."""
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopping.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
