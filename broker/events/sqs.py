"""Lambda's SQS event, field for field, from messages as ``ReceiveMessage`` answers them.

::

    {"Records": [{"messageId", "receiptHandle", "body",
                  "attributes": {"ApproximateReceiveCount", "SentTimestamp", "SenderId",
                                 "ApproximateFirstReceiveTimestamp",
                                 FIFO: "SequenceNumber", "MessageGroupId",
                                 "MessageDeduplicationId"},
                  "messageAttributes": {name: {"stringValue" | "binaryValue" (base64),
                                               "stringListValues": [], "binaryListValues": [],
                                               "dataType"}},
                  "md5OfBody", ["md5OfMessageAttributes"],
                  "eventSource": "aws:sqs", "eventSourceARN", "awsRegion"}]}

Attributes are strings, as SQS sends them; a message attribute's binary value is base64,
as Lambda writes it. A message's group (:func:`message_group`) is its FIFO
``MessageGroupId``, ``""`` on a standard queue.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from broker.events.batches import SQS_EVENT_SOURCE

SYSTEM_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
)
"""The system attributes Lambda passes on, in its order; those a message lacks are left out."""


def _b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return base64.b64encode(raw).decode("ascii")


def message_attribute_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """One message attribute in Lambda's shape (``StringValue`` → ``stringValue`` …)."""
    shaped: dict[str, Any] = {}
    if "StringValue" in value:
        shaped["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shaped["binaryValue"] = _b64(value["BinaryValue"])
    shaped["stringListValues"] = list(value.get("StringListValues", []))
    shaped["binaryListValues"] = [_b64(v) for v in value.get("BinaryListValues", [])]
    shaped["dataType"] = value.get("DataType", "String")
    return shaped


def sqs_record_json(
    message: Mapping[str, Any], *, event_source_arn: str, region: str
) -> dict[str, Any]:
    """One record of Lambda's SQS event for ``message`` (as ``ReceiveMessage`` gave it)."""
    given = message.get("Attributes", {})
    attributes = {name: str(given[name]) for name in SYSTEM_ATTRIBUTES if name in given}
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": attributes,
        "messageAttributes": {
            name: message_attribute_json(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record["eventSource"] = SQS_EVENT_SOURCE
    record["eventSourceARN"] = event_source_arn
    record["awsRegion"] = region
    return record


def sqs_event(
    messages: Sequence[Mapping[str, Any]], *, event_source_arn: str, region: str
) -> dict[str, Any]:
    """Lambda's SQS event for ``messages``, in the order received."""
    return {
        "Records": [
            sqs_record_json(m, event_source_arn=event_source_arn, region=region) for m in messages
        ]
    }


def message_group(message: Mapping[str, Any]) -> str:
    """The FIFO message group of ``message``; ``""`` on a standard queue."""
    return str(message.get("Attributes", {}).get("MessageGroupId", ""))
