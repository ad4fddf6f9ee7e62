"""``dlq`` — the built-in dead-letter queue, in the SQL store."""

from __future__ import annotations

from dataclasses import dataclass

from broker.destinations import FollowOns


@dataclass(frozen=True, slots=True)
class DeadLetterQueue:
    uri: str = "dlq"

    @property
    def function(self) -> str | None:
        return None

    def plan(self, record: bytes, follow_ons: FollowOns) -> None:
        follow_ons.dead_letter = True


def parse(uri: str) -> DeadLetterQueue:
    if uri != "dlq":
        raise ValueError(f"destination {uri!r} should be just `dlq`")
    return DeadLetterQueue()
