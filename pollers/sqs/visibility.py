"""Keeping held messages invisible while their batch waits or runs, and deleting them.

Every ``interval_s`` (a third of the queue's visibility timeout) the heartbeat sets
the visibility timeout of every held message back to the queue's own
(``ChangeMessageVisibilityBatch``, ten at a time), so that a batch that waits in its
lane or runs longer than the timeout is not delivered to another consumer meanwhile.
A message the queue no longer holds for this reader (its handle expired: it was given
to another consumer) is dropped, and logged: it may run twice (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from broker.aio.waits import wait_set
from broker.aws.clients import AWS_ERRORS, describe
from pollers.sqs.inflight import Inflight

log = logging.getLogger("eventwire.mappings.sqs")

MAX_ENTRIES = 10
"""SQS takes at most ten entries per batch call."""
MIN_HEARTBEAT_S = 0.2


def chunks(entries: Sequence[tuple[str, str]]) -> list[Sequence[tuple[str, str]]]:
    return [entries[i : i + MAX_ENTRIES] for i in range(0, len(entries), MAX_ENTRIES)]


def _entries(chunk: Sequence[tuple[str, str]], **extra: Any) -> list[dict[str, Any]]:
    return [
        {"Id": str(index), "ReceiptHandle": handle, **extra}
        for index, (_message_id, handle) in enumerate(chunk)
    ]


class Visibility:
    """The SQS calls about held messages: extend, delete, give back."""

    def __init__(self, client: Any, url: str, timeout_s: int, mapping: str) -> None:
        self.client = client
        self.url = url
        self.timeout_s = timeout_s
        self.mapping = mapping
        self.interval_s = max(MIN_HEARTBEAT_S, timeout_s / 3)
        self.deleted = 0
        self.extended = 0

    async def heartbeat(self, inflight: Inflight, stopping: asyncio.Event) -> None:
        """Extend every held message's visibility, every ``interval_s``, until ``stopping``."""
        while not stopping.is_set():
            await wait_set(stopping, self.interval_s)
            if stopping.is_set():
                return
            failed = await self.change(inflight.handles(), self.timeout_s)
            lost = inflight.unchanged(failed)  # not those received again meanwhile
            if lost:
                log.warning(
                    "mapping %s: %d messages could not be kept invisible (their receipt "
                    "expired); they may run again", self.mapping, len(lost),
                )  # fmt: skip
                inflight.release(lost)

    async def change(
        self, entries: Sequence[tuple[str, str]], timeout_s: int
    ) -> list[tuple[str, str]]:
        """Set the visibility timeout of ``entries`` (ten a call, the calls at once); answers
        the entries that failed."""
        answers = await asyncio.gather(*(self._change(c, timeout_s) for c in chunks(entries)))
        return [entry for failed in answers for entry in failed]

    async def _change(
        self, chunk: Sequence[tuple[str, str]], timeout_s: int
    ) -> list[tuple[str, str]]:
        try:
            answer = await self.client.change_message_visibility_batch(
                QueueUrl=self.url, Entries=_entries(chunk, VisibilityTimeout=timeout_s)
            )
        except AWS_ERRORS as exc:
            log.warning("mapping %s: cannot extend visibility: %s", self.mapping, describe(exc))
            return []  # tried again at the next beat
        failures = answer.get("Failed", [])
        self.extended += len(chunk) - len(failures)
        return [chunk[int(f["Id"])] for f in failures]

    async def delete(self, entries: Sequence[tuple[str, str]]) -> int:
        """Delete ``entries`` (ten a call, the calls at once); answers how many the queue
        deleted (the others come back)."""
        done = sum(await asyncio.gather(*(self._delete(c) for c in chunks(entries))))
        self.deleted += done
        return done

    async def _delete(self, chunk: Sequence[tuple[str, str]]) -> int:
        try:
            answer = await self.client.delete_message_batch(
                QueueUrl=self.url, Entries=_entries(chunk)
            )
        except AWS_ERRORS as exc:
            log.warning(
                "mapping %s: cannot delete %d messages (%s); they will run again",
                self.mapping, len(chunk), describe(exc),
            )  # fmt: skip
            return 0
        failures = answer.get("Failed", [])
        if failures:
            log.warning(
                "mapping %s: %d messages not deleted (%s); they will run again",
                self.mapping, len(failures), failures[0].get("Code", "?"),
            )  # fmt: skip
        return len(chunk) - len(failures)

    async def give_back(self, entries: Sequence[tuple[str, str]]) -> None:
        """Make ``entries`` visible again now (a reader that stops with messages it has
        not invoked: the next reader need not wait for their timeout)."""
        await self.change(entries, 0)
