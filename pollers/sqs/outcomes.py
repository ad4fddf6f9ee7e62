"""Following the invocations of an SQS mapping to their outcomes, and batches seen before.

Once a batch is enqueued its invocation is followed (:class:`~.inflight.Followed`):
every ``POLL_S`` one query asks which of the followed invocations have finished
(:func:`broker.functions.invoking.finished_of`, the lookup the synchronous Invoke API
waits with); a finished one deletes the messages its outcome does not keep, and gives
the others back.

A batch's idempotency key is a digest of its message ids. The queue gives the same
messages again when an earlier receive's invocation failed (their visibility timeout
ran out), or when a reader died before deleting them (``kill -9``): then the enqueue
answers the earlier invocation, and

* if it is still pending or running, it is followed in place of a new one: the
  messages run once, however many readers died meanwhile;
* if it succeeded, its messages are deleted without running again;
* if it failed, the batch is enqueued again under the next key (``…:again-N``), so
  that a batch that fails runs once per receive, as Lambda runs it.

Messages that come back in another grouping are looked up by message id first
(:mod:`.redelivery`); what escapes both runs again: delivery is at least once, as with
Lambda, and each duplicate carries the same ``messageId``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from broker.aio.waits import wait_set
from broker.functions.invoking import Finished, finished_of
from broker.ids import new_id
from broker.models import Enqueued, NewInvocation
from pollers.batching import Batch
from pollers.mapping_run import MappingRun
from pollers.sqs.inflight import Followed, Inflight, kept
from pollers.sqs.visibility import Visibility

log = logging.getLogger("eventwire.mappings.sqs")

POLL_S = 0.05
"""How often the outcomes of followed invocations are asked for."""
AGAIN = ":again-"
MAX_AGAIN = 1000
"""A batch that failed this many times under the same messages stops being keyed anew
(its messages run again as a new batch once the queue regroups them)."""

OnKept = Callable[[set[str]], Awaitable[None]]
"""Told the FIFO groups of messages an outcome kept (their later messages must wait)."""


def messages_of(batch: Batch, invocation: NewInvocation) -> tuple[list[str], list[str]]:
    """The message ids and groups of the records ``invocation`` holds (a run of the batch)."""
    position = invocation.source.get("position", {})
    ids = [record.position for record in batch.records]
    start = ids.index(position.get("first", ids[0]))
    end = ids.index(position.get("last", ids[-1]), start)
    records = batch.records[start : end + 1]
    groups = [str(r.item["attributes"].get("MessageGroupId", "")) for r in records]
    return [r.position for r in records], groups


class Outcomes:
    """What an SQS reader's invocations came to, and what that deletes."""

    def __init__(
        self, run: MappingRun, inflight: Inflight, visibility: Visibility, on_kept: OnKept
    ) -> None:
        self.run = run
        self.inflight = inflight
        self.visibility = visibility
        self.on_kept = on_kept
        self.report = run.mapping.report_batch_item_failures
        self.engine = run.context.engine
        self.before_enqueue: Callable[[Sequence[Followed]], Awaitable[None]] | None = None
        """Given the batches about to be enqueued again under their next key."""
        self._settled: list[str] = []
        """Idempotency keys of invocations settled since :meth:`take_settled`."""

    async def enqueued(
        self, shaped: Sequence[tuple[Batch, list[NewInvocation]]], answers: Sequence[Enqueued]
    ) -> None:
        """After an enqueue (``run.after_enqueue``): follow each invocation."""
        seen_before: list[Followed] = []
        answer = iter(answers)
        for batch, invocations in shaped:
            for invocation in invocations:
                enqueued = next(answer)
                ids, groups = messages_of(batch, invocation)
                followed = Followed(enqueued.id, ids, groups, invocation)
                if enqueued.created:
                    self.inflight.follow(followed)
                else:
                    seen_before.append(followed)
        while seen_before:
            seen_before = await self._seen_before(seen_before)

    async def _seen_before(self, items: list[Followed]) -> list[Followed]:
        """Follow, delete or enqueue again batches whose key was enqueued before; answers
        those whose next key was enqueued before too."""
        finished = await finished_of(self.engine, [f.invocation_id for f in items])
        again: list[Followed] = []
        for followed in items:
            done = finished.get(followed.invocation_id)
            if done is None:
                log.info(
                    "mapping %s: %d messages received again are in invocation %s, which "
                    "has not finished; following it",
                    self.run.name, len(followed.message_ids), followed.invocation_id,
                )  # fmt: skip
                self.inflight.follow(followed)
            elif not kept(followed, done, self.report):
                await self.delete(followed.message_ids)
            elif followed.probes < MAX_AGAIN:
                again.append(followed)
            else:  # back to the queue, to come again in another grouping
                self.inflight.release(followed.message_ids)
        if not again:
            return []
        fresh = [self._again(f) for f in again]
        if self.before_enqueue is not None:
            await self.before_enqueue(fresh)
        answers = await self.run.context.queue.enqueue([f.new for f in fresh])
        out = []
        for followed, enqueued in zip(fresh, answers, strict=True):
            followed.invocation_id = enqueued.id
            if enqueued.created:
                self.inflight.follow(followed)
            else:
                out.append(followed)
        return out

    def _again(self, followed: Followed) -> Followed:
        base = (followed.new.idempotency_key or "").partition(AGAIN)[0]
        probes = followed.probes + 1
        new = replace(followed.new, id=new_id(), idempotency_key=f"{base}{AGAIN}{probes}")
        return replace(followed, invocation_id=new.id, new=new, probes=probes)

    async def follow(self, stopping: asyncio.Event) -> None:
        """Until ``stopping`` is set: settle followed invocations as they finish."""
        failures = 0
        while not stopping.is_set():
            await wait_set(stopping, POLL_S * 2 ** min(failures, 6))
            try:
                await self.check_once()
                failures = 0
            except Exception as exc:  # the store or the queue: asked again, a little later
                failures += 1
                log.warning(
                    "mapping %s: cannot learn the outcomes of its invocations (%s)",
                    self.run.name, exc,
                )  # fmt: skip

    async def check_once(self) -> None:
        followed = self.inflight.followed
        if not followed:
            return
        finished = await finished_of(self.engine, list(followed))
        for invocation_id, done in finished.items():
            item = followed.pop(invocation_id, None)
            if item is not None:
                await self._settle(item, done)

    def take_settled(self) -> list[str]:
        settled, self._settled = self._settled, []
        return settled

    async def _settle(self, followed: Followed, done: Finished) -> None:
        keep = kept(followed, done, self.report)
        keeping = set(keep)
        await self.delete([m for m in followed.message_ids if m not in keeping])
        self._settled.append(followed.new.idempotency_key or "")
        if keep:
            # A FIFO group's first kept message comes back after its timeout; the rest of
            # the group's batch goes back at once, behind it (Lambda returns it so).
            kept_groups: set[str] = set()
            behind = []
            for message, group in zip(followed.message_ids, followed.groups, strict=True):
                if message in keeping and group:
                    if group in kept_groups:
                        behind.append(message)
                    kept_groups.add(group)
            if behind:
                await self.visibility.give_back(self.inflight.handles(behind))
            self.inflight.release(keep)  # no longer extended: back after the timeout
            if kept_groups:
                await self.on_kept(kept_groups)
            log.info(
                "mapping %s: invocation %s %s; %d of %d messages stay in the queue",
                self.run.name, followed.invocation_id, done.state.value,
                len(keep), len(followed.message_ids),
            )  # fmt: skip

    async def delete(self, message_ids: Sequence[str]) -> None:
        """Delete those of ``message_ids`` that are held."""
        if message_ids:
            await self.visibility.delete(self.inflight.handles(message_ids))
            self.inflight.release(message_ids)
