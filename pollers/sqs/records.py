"""Received SQS messages as the records a mapping batches.

A record's item is the message's record of Lambda's SQS event, made once on receipt
(the shaper only wraps a batch's records in ``{"Records": [...]}``); its data is the
body, which filters match as a JSON object when it is one, and its metadata the
record's other fields (``attributes``, ``messageAttributes`` …) for filters that look
at them. The partition is the queue's name, or on a FIFO queue the message group.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from broker.events.batches import encode_event
from broker.events.sqs import message_group, sqs_record_json
from broker.observability.tracing import TRACEPARENT, header_traceparent
from pollers.batching import Record, Shaper


def record_of(
    message: Mapping[str, Any], *, partition: str, event_source_arn: str, region: str
) -> Record:
    """The record of a message as ``ReceiveMessage`` gave it."""
    item = sqs_record_json(message, event_source_arn=event_source_arn, region=region)
    sent = item["attributes"].get("SentTimestamp")
    sent_ms = int(sent) if sent and str(sent).isdigit() else int(time.time() * 1000)
    metadata = {key: value for key, value in item.items() if key != "body"}
    return Record(partition, item["messageId"], sent_ms, item["body"], item, metadata=metadata)


def partition_of(message: Mapping[str, Any], queue_name: str, fifo: bool) -> str:
    """A FIFO message's group (a lane of its own order), else the queue's name."""
    return message_group(message) if fifo else queue_name


def shape(items: Sequence[Any]) -> bytes:
    """Lambda's SQS event of a batch whose items are its records."""
    return encode_event({"Records": list(items)})


def shaper(_mapping: object) -> Shaper:
    return shape


def traceparent(item: Mapping[str, Any]) -> str | None:
    """The ``traceparent`` message attribute of an SQS record, if it has one."""
    value = item.get("messageAttributes", {}).get(TRACEPARENT)
    return header_traceparent(value.get("stringValue")) if value else None
