"""The messages an SQS reader holds, the invocations they are in, and what an outcome deletes.

A message is *held* from its receipt until it is deleted or given back: the heartbeat
(:mod:`.visibility`) keeps every held message invisible to other consumers. Once its
batch is enqueued the message is *followed* with the batch's invocation; the
invocation's outcome says which of its messages are deleted (:func:`kept`): none when
it failed, all when it succeeded, all but the reported ones with a partial batch
response — on a FIFO queue, all but a failed message's group from that message on.
Messages kept are given back: no longer extended, they come back once their
visibility timeout runs out, and the queue's redrive policy counts the receive
(on a FIFO queue, the messages of a group behind its first kept one go back at
once: the queue holds them behind it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.events.batch_results import BatchOutcome, parse_batch_response
from broker.events.batches import SQS_EVENT_SOURCE, event_items
from broker.functions.invoking import Finished
from broker.models import NewInvocation, State


@dataclass(slots=True)
class Held:
    """A received message not yet deleted nor given back."""

    message_id: str
    receipt_handle: str
    group: str
    received_at: float
    invocation: str | None = None
    """The invocation it is in, once its batch is enqueued."""


@dataclass(slots=True)
class Followed:
    """An enqueued invocation whose outcome says what becomes of its messages."""

    invocation_id: str
    message_ids: list[str]
    groups: list[str]
    new: NewInvocation
    """What was enqueued (its key, for a batch that comes back whole: :mod:`.outcomes`)."""
    probes: int = 0


@dataclass(slots=True)
class Inflight:
    """What one reader holds and follows."""

    held: dict[str, Held] = field(default_factory=dict)
    followed: dict[str, Followed] = field(default_factory=dict)

    def hold(self, messages: Iterable[Mapping[str, Any]], group_of: Any, now: float) -> list[Any]:
        """Hold ``messages`` just received; answers those not held already (a message
        received again while held gets its new receipt handle, not a second record)."""
        new = []
        for message in messages:
            message_id = message["MessageId"]
            known = self.held.get(message_id)
            if known is not None:
                known.receipt_handle = message["ReceiptHandle"]
                continue
            self.held[message_id] = Held(
                message_id, message["ReceiptHandle"], group_of(message), now
            )
            new.append(message)
        return new

    def follow(self, followed: Followed) -> None:
        self.followed[followed.invocation_id] = followed
        for message_id in followed.message_ids:
            held = self.held.get(message_id)
            if held is not None:
                held.invocation = followed.invocation_id

    def invoking(self, message_id: str) -> bool:
        held = self.held.get(message_id)
        return held is not None and held.invocation is not None

    def busy_groups(self) -> set[str]:
        """FIFO groups with an invocation whose outcome is not known yet."""
        return {group for f in self.followed.values() for group in f.groups}

    def waiting(self) -> int:
        """Held messages in no invocation yet (in the batcher, or on their way to it)."""
        return sum(1 for held in self.held.values() if held.invocation is None)

    def handles(self, message_ids: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """``(message id, receipt handle)`` of ``message_ids`` that are held (all: None)."""
        if message_ids is None:
            return [(h.message_id, h.receipt_handle) for h in self.held.values()]
        return [
            (held.message_id, held.receipt_handle)
            for message_id in message_ids
            if (held := self.held.get(message_id)) is not None
        ]

    def unchanged(self, entries: Iterable[tuple[str, str]]) -> list[str]:
        """Of ``(message id, receipt handle)`` entries, the ids still held by that handle."""
        return [
            message_id
            for message_id, handle in entries
            if (held := self.held.get(message_id)) is not None and held.receipt_handle == handle
        ]

    def release(self, message_ids: Iterable[str]) -> None:
        """No longer hold ``message_ids`` (deleted, or given back)."""
        for message_id in message_ids:
            self.held.pop(message_id, None)

    def group_messages(self, groups: set[str], before: float) -> list[str]:
        """Held messages of ``groups`` in no invocation, received before ``before``."""
        return [
            h.message_id
            for h in self.held.values()
            if h.group in groups and h.invocation is None and h.received_at <= before
        ]


def kept(followed: Followed, finished: Finished, report_batch_item_failures: bool) -> list[str]:
    """The messages of ``followed`` that stay in the queue after ``finished``, in order."""
    if finished.state is not State.SUCCEEDED:
        return list(followed.message_ids)
    if not report_batch_item_failures or not finished.result:
        return []
    event = _lite_event(followed.message_ids, followed.groups)
    response = parse_batch_response(event, finished.result)
    if response.outcome is BatchOutcome.SUCCESS:
        return []
    if response.outcome is BatchOutcome.FAILURE or response.retry_event is None:
        return list(followed.message_ids)
    return [record["messageId"] for _, record in event_items(response.retry_event)]


def _lite_event(message_ids: Sequence[str], groups: Sequence[str]) -> dict[str, Any]:
    """Of an SQS batch, what a partial batch response is checked against."""
    return {
        "Records": [
            {
                "messageId": message_id,
                "eventSource": SQS_EVENT_SOURCE,
                "attributes": {"MessageGroupId": group} if group else {},
            }
            for message_id, group in zip(message_ids, groups, strict=True)
        ]
    }
