"""Messages received again after a reader died: which invocation they already belong to.

A reader that dies (``kill -9``) leaves its messages in the queue, their batches perhaps
enqueued: the queue gives them again once their visibility timeout runs out, to this
process or another, which would batch them differently — a second invocation of the
same messages. So each invocation is recorded with its message ids before it is
enqueued (:mod:`broker.store.unacked`, as for RabbitMQ) and forgotten once its outcome
is settled. A message received again (``ApproximateReceiveCount`` above 1) is looked up
there first; found in an invocation that

* has not finished: it is followed with it (not batched again), and deleted when it
  succeeds;
* succeeded (or succeeded for this message, by a partial batch response): it is
  deleted, not run again;
* failed: it is batched as any message (this is the queue's retry of it).

What escapes this — a message whose first reader died between receiving it and
recording its batch, or rows gone after the idempotency window — runs again:
at least once, as Lambda, with the same ``messageId``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from broker.functions.invoking import finished_of
from broker.models import NewInvocation
from broker.store.unacked import Unacked, drop_unacked, find_unacked, prune_unacked, record_unacked
from pollers.batching import Batch
from pollers.mapping_run import MappingRun
from pollers.sqs.inflight import Followed, Inflight, kept
from pollers.sqs.outcomes import Outcomes, messages_of

log = logging.getLogger("eventwire.mappings.sqs")

PRUNE_EVERY_S = 600.0


class Redeliveries:
    """An SQS reader's record of what it enqueued, for messages received again."""

    def __init__(
        self, run: MappingRun, inflight: Inflight, outcomes: Outcomes, *, fifo: bool
    ) -> None:
        self.run = run
        self.fifo = fifo
        self.inflight = inflight
        self.outcomes = outcomes
        self.engine = run.context.engine
        self._pruned_at = 0.0

    async def record(self, shaped: Sequence[tuple[Batch, list[NewInvocation]]]) -> None:
        """Before an enqueue (``run.before_enqueue``): each invocation and its messages."""
        entries = [
            Unacked(invocation, tuple(messages_of(batch, invocation)[0]))
            for batch, invocations in shaped
            for invocation in invocations
        ]
        await record_unacked(self.engine, self.run.name, entries, self.run.context.timer.now())

    async def record_again(self, batches: Sequence[Followed]) -> None:
        """Before batches are enqueued again under their next key (:mod:`.outcomes`)."""
        entries = [Unacked(f.new, tuple(f.message_ids)) for f in batches]
        await record_unacked(self.engine, self.run.name, entries, self.run.context.timer.now())

    async def claim(self, messages: Sequence[Mapping[str, Any]]) -> set[str]:
        """Of ``messages`` (just received), the ids of those an earlier invocation holds:
        followed with it, or deleted when it succeeded; the others are batched."""
        again = [m["MessageId"] for m in messages if _receives(m) > 1]
        found = await find_unacked(self.engine, self.run.name, again) if again else []
        if not found:
            return set()
        answers = await self.run.context.queue.enqueue([entry.invocation for entry in found])
        finished = await finished_of(self.engine, [a.id for a in answers])
        wanted = set(again)
        claimed: set[str] = set()
        done_keys: list[str] = []
        for entry, answer in zip(found, answers, strict=True):
            present = wanted.intersection(entry.messages) - claimed
            partition = str(entry.invocation.source.get("position", {}).get("partition", ""))
            group = partition if self.fifo else ""
            followed = Followed(
                answer.id, list(entry.messages), [group] * len(entry.messages), entry.invocation
            )
            outcome = finished.get(answer.id)
            if outcome is None:
                self.inflight.follow(followed)
                claimed |= present
            else:  # what it ran and did not keep is done; what it kept runs again
                succeeded = present - set(kept(followed, outcome, self.outcomes.report))
                await self.outcomes.delete(sorted(succeeded))
                claimed |= succeeded
                if succeeded != present:
                    done_keys.append(entry.invocation.idempotency_key or "")
        if done_keys:
            await drop_unacked(self.engine, self.run.name, done_keys)
        if claimed:
            log.info(
                "mapping %s: %d messages received again belong to invocations enqueued "
                "before; not batched again", self.run.name, len(claimed),
            )  # fmt: skip
        return claimed

    async def tidy(self, now: float) -> None:
        """Forget what settled; now and then, what readers long gone recorded."""
        keys = self.outcomes.take_settled()
        if keys:
            await drop_unacked(self.engine, self.run.name, keys)
        if now - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = now
            window = timedelta(seconds=self.run.context.settings.idempotency_window_s)
            before = self.run.context.timer.now() - window
            await prune_unacked(self.engine, self.run.name, before)


def _receives(message: Mapping[str, Any]) -> int:
    count = str(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
    return int(count) if count.isdigit() else 1
