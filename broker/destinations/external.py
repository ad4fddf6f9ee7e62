"""External destinations (queues, topics, streams, webhooks): delivery is itself an invocation.

Sending a record to RabbitMQ, Kafka, a Redis stream, an SQS queue, an SNS topic
or a webhook is planned like ``function:NAME``: an invocation of a built-in *delivery function* is
enqueued in the same transaction as the settle. Its name is
``destination:<12 hex digits of the URI's SHA-1>``; the dispatcher runs it
with the ``deliver`` invoker (:mod:`broker.functions.delivery`), which
publishes the message to the target. A target that is down makes the
delivery fail, and it is retried with the destination's own retry policy;
after its limit the delivery lands in the built-in DLQ with the reason.

A delivery invocation's payload is the message it sends, wrapped so that
headers travel with it (and survive a redrive from the DLQ)::

    {"body": <the message, as JSON>, "headers": {"RequestID": "…"}, "group": "fn"}

(``body_base64`` instead of ``body`` for a message that is not JSON; ``group``, the
function whose record or event it carries, only for targets that order messages by
group: FIFO queues and topics).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from broker.destinations import FollowOns
from broker.ids import new_id
from broker.models import NewInvocation, Origin, Outcome, SystemFault

DELIVERY_PREFIX = "destination:"
"""Delivery functions are named ``destination:<hash>``; no configured function can be."""

DEAD_LETTER_OF = "dead_letter_of"
"""The key, in a dead-letter delivery's source, of the function whose event it carries."""

ERROR_MESSAGE_LIMIT = 1024
"""A dead-letter message's ``ErrorMessage`` is the first 1 KB of the error, as in Lambda."""


def delivery_function(uri: str) -> str:
    """The name of the built-in function that delivers to ``uri``."""
    return DELIVERY_PREFIX + hashlib.sha1(uri.encode()).hexdigest()[:12]


def redacted(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for logs, errors and listings)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def require_module(module: str, extra: str, kind: str) -> None:
    """Raise ``ValueError`` naming the extra to install when ``module`` is not installed.

    Only looks: the transport library is imported by its own module, when a
    delivery first needs it.
    """
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{kind} destinations need {module}: pip install 'eventwire[{extra}]'")


class DeliveryFailed(Exception):
    """The target refused or could not take the message; retried by the destination's policy."""

    def __init__(self, error_type: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Message:
    """What a delivery sends: a body, headers (attributes / stream fields), its id (the same
    on every retry of one delivery), and its group (for FIFO targets; else empty)."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    id: str = ""
    group: str = ""


def wrap(body: bytes, headers: Mapping[str, str] | None = None, group: str = "") -> bytes:
    """The payload of a delivery invocation that sends ``body`` with ``headers``."""
    envelope: dict[str, Any] = {}
    try:
        envelope["body"] = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        envelope["body_base64"] = base64.b64encode(body).decode()
    if headers:
        envelope["headers"] = dict(headers)
    if group:
        envelope["group"] = group
    return json.dumps(envelope, separators=(",", ":")).encode()


def unwrap(payload: bytes, id: str = "") -> Message:
    """The message a delivery invocation sends; ``ValueError`` if ``payload`` is not one."""
    try:
        envelope = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError("a delivery payload must be a JSON object") from None
    if not isinstance(envelope, dict) or not ({"body", "body_base64"} & envelope.keys()):
        raise ValueError('a delivery payload must be {"body": …, "headers": {…}}')
    if "body_base64" in envelope:
        body = base64.b64decode(str(envelope["body_base64"]))
    else:
        body = json.dumps(envelope["body"], separators=(",", ":")).encode()
    headers = envelope.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("a delivery payload's headers must be an object of strings")
    group = str(envelope.get("group") or "")
    return Message(body, {str(k): str(v) for k, v in headers.items()}, id, group)


def first_kilobyte(text: str) -> str:
    """The first :data:`ERROR_MESSAGE_LIMIT` bytes of ``text`` in UTF-8, cut between characters."""
    data = text.encode()
    if len(data) <= ERROR_MESSAGE_LIMIT:
        return text
    return data[:ERROR_MESSAGE_LIMIT].decode(errors="ignore")


def error_code(outcome: Outcome | None) -> int:
    """The status code Lambda reports for a failed event (``ErrorCode``).

    200 when the function ran and failed (or never ran: the event expired);
    429 when it was throttled, 500 when it could not be run.
    """
    if isinstance(outcome, SystemFault):
        return 429 if outcome.error_type == "Throttled" else 500
    return 200


def dead_letter_headers(request_id: str, error_code: int, error_message: str) -> dict[str, str]:
    """The attributes Lambda sets on a dead-letter message."""
    return {
        "RequestID": request_id,
        "ErrorCode": str(error_code),
        "ErrorMessage": first_kilobyte(error_message),
    }


@dataclass(frozen=True, slots=True)
class ExternalDestination:
    """A queue, topic, stream or webhook, addressed by ``uri``.

    ``kind`` is the registry scheme family (``amqp``, ``kafka``, ``redis``,
    ``http``, ``sqs``, ``sns``); ``options`` what its module parsed out of the URI.
    ``grouped`` targets (FIFO queues and topics) get each message with the name of the
    function it comes from as its group.
    """

    uri: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    grouped: bool = False

    @property
    def function(self) -> str | None:
        return None

    @property
    def delivery_function(self) -> str:
        return delivery_function(self.uri)

    def plan(self, record: bytes, follow_ons: FollowOns) -> None:
        self._deliver(record, {}, f"destination:{follow_ons.invocation_id}", follow_ons)

    def plan_dead_letter(
        self, event: bytes, headers: Mapping[str, str], follow_ons: FollowOns
    ) -> None:
        """Send the original ``event`` with Lambda's dead-letter ``headers``; the delivery's
        source says whose (``dead_letter_of``), for ``eventwire_dead_letter_errors_total``."""
        self._deliver(
            event,
            headers,
            f"dead-letter:{follow_ons.invocation_id}",
            follow_ons,
            {DEAD_LETTER_OF: follow_ons.function},
        )

    def _deliver(
        self,
        body: bytes,
        headers: Mapping[str, str],
        key: str,
        follow_ons: FollowOns,
        about: Mapping[str, str] | None = None,
    ) -> None:
        payload = wrap(body, headers, follow_ons.function if self.grouped else "")
        follow_ons.enqueue.append(
            NewInvocation(
                id=new_id(),
                function=self.delivery_function,
                payload=payload,
                origin=Origin.DESTINATION,
                # One delivery per source invocation, even if a settle were replayed.
                idempotency_key=key,
                source={
                    "invocation_id": follow_ons.invocation_id,
                    "destination": redacted(self.uri),
                    **(about or {}),
                },
            )
        )
