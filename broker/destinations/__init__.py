"""Destinations: where an invocation record goes on success or failure.

A destination is addressed by URI. Each scheme is a module in this package
registered in :data:`SCHEMES`; it parses its URIs and says how a record
reaches it by adding to a :class:`FollowOns` plan, which the queue applies in
the same transaction as the settle. Queues, topics, streams and webhooks are
delivered by built-in functions (:mod:`broker.destinations.external`); their
transport libraries are imported only when a delivery first needs them.

May import config, http, aio and the domain model; the functions that deliver
(:mod:`broker.functions.delivery`) build on this package.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol

from broker.models import NewInvocation

SCHEMES: dict[str, str] = {
    "function": "broker.destinations.function",
    "dlq": "broker.destinations.dlq",
    "amqp": "broker.destinations.amqp",
    "amqps": "broker.destinations.amqp",
    "kafka": "broker.destinations.kafka",
    "redis": "broker.destinations.redis_stream",
    "rediss": "broker.destinations.redis_stream",
    "http": "broker.destinations.webhook",
    "https": "broker.destinations.webhook",
    "sqs": "broker.destinations.sqs_sns",
    "sns": "broker.destinations.sqs_sns",
    "arn": "broker.destinations.sqs_sns",
}


@dataclass(slots=True)
class FollowOns:
    """What settling one invocation sets off, besides its own state change."""

    invocation_id: str
    function: str = ""
    """The function of the invocation being settled (whose event a dead letter carries; a
    FIFO destination's message group)."""
    enqueue: list[NewInvocation] = field(default_factory=list)
    dead_letter: bool = False


class Destination(Protocol):
    uri: str

    @property
    def function(self) -> str | None:
        """The function this destination invokes, if it invokes one (for config checks)."""
        ...

    def plan(self, record: bytes, follow_ons: FollowOns) -> None:
        """Add what delivering ``record`` (invocation-record JSON) takes to ``follow_ons``."""
        ...


class DestinationModule(Protocol):
    def parse(self, uri: str) -> Destination: ...


_FORMS = {"dlq": "dlq", "function": "function:NAME", "arn": "arn:aws:sqs:…/arn:aws:sns:…"} | {
    s: f"{s}://…"
    for s in ("amqp", "amqps", "kafka", "redis", "rediss", "http", "https", "sqs", "sns")
}


def parse_destination(uri: str) -> Destination:
    """The destination for ``uri``; ``ValueError`` saying what is wrong and what was expected."""
    scheme = uri.split(":", 1)[0] if ":" in uri else uri
    module_name = SCHEMES.get(scheme)
    if module_name is None:
        known = ", ".join(_FORMS.get(s, f"{s}:…") for s in SCHEMES)
        raise ValueError(f"unknown destination {uri!r}; expected one of: {known}")
    module: DestinationModule = importlib.import_module(module_name)
    return module.parse(uri)
