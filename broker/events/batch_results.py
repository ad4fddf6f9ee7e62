"""What a mapping's batch came to: partial batch responses and failure records.

**Partial batch responses** (``report_batch_item_failures``), Lambda's rules:
``{"batchItemFailures": [{"itemIdentifier": …}]}``; an empty or null list, an
empty or null response, or a response without ``batchItemFailures`` is full
success; an identifier that is null, empty, under another key name or not
a record of the batch makes the whole batch a failure. Identifiers:

* Kafka: ``{"partition": "orders-0", "offset": 15}`` (the ``topic-partition``
  key of the event; a bare partition number is accepted when only one topic
  has it), or the text ``"orders-0-15"``;
* Redis Streams: the record's ``kinesis.sequenceNumber`` (the entry id);
* RabbitMQ: the message's ``basicProperties.messageId``;
* SQS: the record's ``messageId``.

Kafka and Redis Streams retry from the lowest failed record of each
partition/stream (everything after it too, to keep order); RabbitMQ and a
standard SQS queue retry exactly the failed messages; an SQS FIFO queue
every message of a failed message's group from it on (Lambda returns the rest of
the group's batch to the queue).

**Failure records** go to a mapping's ``on_failure`` when a batch's retries or
age run out: Lambda's record with the batch's position (``KafkaBatchInfo``,
``KinesisBatchInfo`` for Redis Streams) in place of the records. RabbitMQ
messages are acknowledged once enqueued, so their record carries the event
itself (``payload``) as well.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker.events.batches import Item, encode_event, event_items, event_kind, event_with
from broker.models import FunctionError, Outcome, SystemFault


class BatchOutcome(enum.StrEnum):
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class BatchResponse:
    """A function's answer about its batch, checked against the batch."""

    outcome: BatchOutcome
    retry_event: dict[str, Any] | None = None
    """For ``PARTIAL``: the event holding the records to invoke again."""
    reason: str = ""
    """For ``FAILURE``: why the response made the whole batch fail."""


_SUCCESS = BatchResponse(BatchOutcome.SUCCESS)


def _failure(reason: str) -> BatchResponse:
    return BatchResponse(BatchOutcome.FAILURE, reason=reason)


def parse_batch_response(event: Mapping[str, Any], response: Any) -> BatchResponse:
    """Check ``response`` (the function's result: bytes of JSON, or decoded) against ``event``."""
    if isinstance(response, bytes | bytearray | str):
        try:
            response = json.loads(response) if response else None
        except (ValueError, RecursionError):
            return _SUCCESS  # not a batch response at all: nothing reported as failed
    if not isinstance(response, Mapping):
        return _SUCCESS
    failures = response.get("batchItemFailures")
    if failures is None or failures == []:
        return _SUCCESS
    if not isinstance(failures, list):
        return _failure(f"batchItemFailures is not a list: {_show(failures)}")
    items = event_items(event)
    resolve = _resolver(event, items)
    failed: list[int] = []
    for position, failure in enumerate(failures):
        if not isinstance(failure, Mapping) or "itemIdentifier" not in failure:
            return _failure(f"batchItemFailures[{position}] has no itemIdentifier")
        identifier = failure["itemIdentifier"]
        if identifier is None or identifier == "":
            return _failure(f"batchItemFailures[{position}].itemIdentifier is empty")
        index = resolve(identifier)
        if index is None:
            return _failure(
                f"batchItemFailures[{position}].itemIdentifier {_show(identifier)} "
                "is not a record of this batch"
            )
        failed.append(index)
    retry = _to_retry(event_kind(event), items, failed)
    return BatchResponse(BatchOutcome.PARTIAL, retry_event=event_with(event, retry))


def _to_retry(kind: str, items: list[Item], failed: list[int]) -> list[Item]:
    wanted = set(failed)
    first_failed: dict[str, int] = {}
    for index in failed:
        group = items[index][0]
        first_failed[group] = min(index, first_failed.get(group, index))
    if kind == "amqp":
        return [item for index, item in enumerate(items) if index in wanted]
    if kind == "sqs":  # a standard queue's messages have no group: exactly the failed ones
        return [
            item
            for index, item in enumerate(items)
            if index in wanted or (item[0] and index >= first_failed.get(item[0], len(items)))
        ]
    return [
        item
        for index, item in enumerate(items)
        if item[0] in first_failed and index >= first_failed[item[0]]
    ]


def _resolver(event: Mapping[str, Any], items: list[Item]) -> Callable[[Any], int | None]:
    """A function from an item identifier to the index of its record (None: no such record)."""
    kind = event_kind(event)
    if kind == "kafka":
        by_offset = {(group, int(record["offset"])): i for i, (group, record) in enumerate(items)}
        groups_by_partition: dict[int, set[str]] = {}
        for group, record in items:
            groups_by_partition.setdefault(int(record["partition"]), set()).add(group)
        return lambda identifier: _kafka_index(identifier, by_offset, groups_by_partition)
    if kind == "sqs":
        by_id = {record.get("messageId"): i for i, (_, record) in enumerate(items)}
        return lambda identifier: by_id.get(identifier) if isinstance(identifier, str) else None
    if kind == "redis":
        by_sequence = {
            record["kinesis"]["sequenceNumber"]: i for i, (_, record) in enumerate(items)
        }
        return lambda identifier: (
            by_sequence.get(identifier) if isinstance(identifier, str) else None
        )
    by_message_id = {
        record["basicProperties"]["messageId"]: i
        for i, (_, record) in enumerate(items)
        if record["basicProperties"].get("messageId")
    }
    return lambda identifier: by_message_id.get(identifier) if isinstance(identifier, str) else None


def _kafka_index(
    identifier: Any,
    by_offset: dict[tuple[str, int], int],
    groups_by_partition: dict[int, set[str]],
) -> int | None:
    partition: Any
    offset: Any
    if isinstance(identifier, str):
        partition, _, offset = identifier.rpartition("-")
    elif isinstance(identifier, Mapping):
        partition, offset = identifier.get("partition"), identifier.get("offset")
    else:
        return None
    number = _integer(offset)
    if number is None:
        return None
    if isinstance(partition, int) and not isinstance(partition, bool):
        groups = groups_by_partition.get(partition, set())
        if len(groups) != 1:
            return None
        partition = next(iter(groups))
    if not isinstance(partition, str):
        return None
    return by_offset.get((partition, number))


def _integer(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# --- Failure records ---------------------------------------------------------------------


class MappingCondition(enum.StrEnum):
    """Why a mapping gave up on a batch, as in Lambda's on-failure records."""

    RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
    RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
    MAXIMUM_PAYLOAD_SIZE_EXCEEDED = "MaximumPayloadSizeExceeded"
    INVALID_S3_NOTIFICATION = "InvalidS3Notification"
    """A record of an ``object_notifications`` mapping that is no S3 notification document
    (Eventwire's own: it is never invoked)."""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _from_ms(milliseconds: float) -> str:
    return _iso(datetime.fromtimestamp(milliseconds / 1000, UTC))


def batch_info(event: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The key and body describing where ``event``'s records are (``KafkaBatchInfo`` …)."""
    kind = event_kind(event)
    items = event_items(event)
    size = len(encode_event(event))
    if kind == "kafka":
        records_info: dict[str, dict[str, str]] = {}
        for group, record in items:
            info = records_info.setdefault(
                group,
                {
                    "firstRecordOffset": str(record["offset"]),
                    "firstRecordTimestamp": _from_ms(record["timestamp"]),
                },
            )
            info["lastRecordOffset"] = str(record["offset"])
            info["lastRecordTimestamp"] = _from_ms(record["timestamp"])
        body: dict[str, Any] = {"batchSize": len(items)}
        if "eventSourceArn" in event:
            body["eventSourceArn"] = event["eventSourceArn"]
        body.update(
            bootstrapServers=event.get("bootstrapServers", ""),
            payloadSize=size,
            recordsInfo=records_info,
        )
        return "KafkaBatchInfo", body
    if kind == "redis":
        records = [record for _, record in items]
        first, last = records[0], records[-1]
        return "KinesisBatchInfo", {
            "shardId": first["kinesis"]["partitionKey"],
            "startSequenceNumber": first["kinesis"]["sequenceNumber"],
            "endSequenceNumber": last["kinesis"]["sequenceNumber"],
            "approximateArrivalOfFirstRecord": _from_ms(
                first["kinesis"]["approximateArrivalTimestamp"] * 1000
            ),
            "approximateArrivalOfLastRecord": _from_ms(
                last["kinesis"]["approximateArrivalTimestamp"] * 1000
            ),
            "batchSize": len(records),
            "streamArn": first.get("eventSourceARN", ""),
        }
    queues: dict[str, dict[str, Any]] = {}
    for group, record in items:
        message_id = record["basicProperties"].get("messageId")
        queue: dict[str, Any] = queues.setdefault(group, {"messageCount": 0, "messageIds": []})
        queue["messageCount"] += 1
        if message_id:
            queue["messageIds"].append(message_id)
    return "RabbitMQBatchInfo", {
        "batchSize": len(items),
        "eventSourceArn": event.get("eventSourceArn", ""),
        "payloadSize": size,
        "queues": queues,
    }


def _response_context(outcome: Outcome | None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    context: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if isinstance(outcome, FunctionError):
        context["functionError"] = "Unhandled"
    elif isinstance(outcome, SystemFault):
        context["statusCode"] = 500
    return context


def mapping_failure_record(
    event: Mapping[str, Any],
    *,
    condition: MappingCondition,
    function_arn: str,
    request_id: str,
    approximate_invoke_count: int,
    now: datetime,
    outcome: Outcome | None = None,
    include_payload: bool | None = None,
    error_message: str | None = None,
) -> bytes:
    """Lambda's on-failure record for a mapping batch that was given up on.

    ``outcome`` is the last attempt's (None when the batch was never run: too
    old, or too large). ``include_payload`` defaults to True only for RabbitMQ,
    whose messages exist nowhere else once acknowledged. ``error_message`` says
    why when no attempt does (``errorMessage``, beside the batch info).
    """
    key, info = batch_info(event)
    if include_payload is None:
        include_payload = event_kind(event) == "amqp"
    record: dict[str, Any] = {
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition.value,
            "approximateInvokeCount": approximate_invoke_count,
        },
        "responseContext": _response_context(outcome),
        "version": "1.0",
        "timestamp": _iso(now),
        key: info,
    }
    if error_message is not None:
        record["errorMessage"] = error_message
    if include_payload:
        record["payload"] = event
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
