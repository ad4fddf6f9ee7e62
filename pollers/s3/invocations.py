"""From an S3 notification document to the invocations it asks for: one per matching record.

Shared by every path a document can take (the webhook, a RabbitMQ, Kafka or
Redis Streams mapping), so the same notification makes the same invocation
whichever way it came: Lambda's S3 event ``{"Records": [record]}``, origin
``notification``, and the idempotency key of :func:`~broker.events.s3.dedup_key`
(function, bucket, key, event and sequencer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.events.s3 import (
    LOCAL_ADDRESS,
    S3Filter,
    S3Record,
    dedup_key,
    lambda_event,
    parse_notification,
)
from broker.ids import new_id
from broker.models import NewInvocation, Origin


@dataclass(frozen=True, slots=True)
class Notified:
    """What a document asks for: how many records it held, and the invocations of those
    that pass the filter."""

    records: int
    invocations: list[NewInvocation]


def notified(
    document: bytes | str | Mapping[str, Any],
    *,
    function: str,
    s3_filter: S3Filter,
    region: str,
    source: Mapping[str, Any],
    replay: int = 0,
    sender: str = LOCAL_ADDRESS,
) -> Notified:
    """The invocations of ``document``'s matching records (raises
    :class:`~broker.events.s3.S3DocumentError` naming what is wrong with it).

    ``source`` says where the document came from; each invocation's adds the
    record's event, bucket and key. ``sender`` is the address that sent it (a webhook's
    client), the ``sourceIPAddress`` of records that name none.
    """
    records = parse_notification(document)
    return Notified(
        len(records),
        [
            invocation(
                record,
                function=function,
                region=region,
                source=source,
                replay=replay,
                sender=sender,
            )
            for record in records
            if s3_filter.matches(record)
        ],
    )


def invocation(
    record: S3Record,
    *,
    function: str,
    region: str,
    source: Mapping[str, Any],
    replay: int = 0,
    sender: str = LOCAL_ADDRESS,
) -> NewInvocation:
    """The invocation of ``function`` with Lambda's S3 event for ``record``."""
    event = lambda_event(record, region=region, sender=sender)
    return NewInvocation(
        id=new_id(),
        function=function,
        payload=json.dumps(event, separators=(",", ":")).encode(),
        origin=Origin.OBJECT_NOTIFICATION,
        idempotency_key=dedup_key(function, record, replay=replay),
        source={
            **source,
            "event": record.event_name,
            "bucket": record.bucket,
            "key": record.key,
        },
    )
