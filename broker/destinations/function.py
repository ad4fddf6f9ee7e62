"""``function:NAME`` — the record becomes the payload of an invocation of NAME."""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker.destinations import FollowOns
from broker.ids import new_id
from broker.models import NewInvocation, Origin

_URI = re.compile(r"^function:([A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")


@dataclass(frozen=True, slots=True)
class FunctionDestination:
    uri: str
    target: str

    @property
    def function(self) -> str | None:
        return self.target

    def plan(self, record: bytes, follow_ons: FollowOns) -> None:
        follow_ons.enqueue.append(
            NewInvocation(
                id=new_id(),
                function=self.target,
                payload=record,
                origin=Origin.DESTINATION,
                # One record per source invocation, even if a settle were replayed.
                idempotency_key=f"destination:{follow_ons.invocation_id}",
                source={"invocation_id": follow_ons.invocation_id},
            )
        )


def parse(uri: str) -> FunctionDestination:
    match = _URI.match(uri)
    if match is None:
        raise ValueError(f"destination {uri!r} should be function:NAME")
    return FunctionDestination(uri=uri, target=match.group(1))
