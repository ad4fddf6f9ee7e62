"""Partial batch responses follow Lambda's rules; failure records carry batch positions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from broker.events.batch_results import (
    BatchOutcome,
    MappingCondition,
    mapping_failure_record,
    parse_batch_response,
)
from broker.events.batches import (
    AmqpMessage,
    KafkaRecord,
    StreamEntry,
    event_items,
    event_source_arn,
    kafka_event,
    rabbitmq_event,
    redis_streams_event,
)
from broker.models import FunctionError, Success

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ARN = "arn:eventwire:function:f"


def kafka() -> dict[str, Any]:
    records = [
        KafkaRecord("orders", p, o, 1_700_000_000_000 + o, value=b"{}")
        for p, o in [(0, 10), (0, 11), (0, 12), (0, 13), (1, 20), (1, 21)]
    ]
    return kafka_event(records, bootstrap_servers="b:9092")


def streams() -> dict[str, Any]:
    entries = [StreamEntry("clicks", f"1700000000000-{n}", {"n": str(n)}) for n in range(4)]
    return redis_streams_event(entries, event_source_arn=event_source_arn("redis", "clicks"))


def rabbit() -> dict[str, Any]:
    messages = [AmqpMessage(b"m", "q", message_id=f"id-{n}") for n in range(3)]
    messages.append(AmqpMessage(b"anonymous", "q"))
    return rabbitmq_event(messages, event_source_arn="arn:mq")


def positions(event: dict[str, Any] | None) -> list[Any]:
    assert event is not None
    result = []
    for group, record in event_items(event):
        if "offset" in record:
            result.append(f"{group}@{record['offset']}")
        elif "kinesis" in record:
            result.append(record["kinesis"]["sequenceNumber"])
        else:
            result.append(record["basicProperties"]["messageId"])
    return result


@pytest.mark.parametrize(
    "response",
    [
        None,
        b"",
        b"null",
        {},
        {"batchItemFailures": []},
        {"batchItemFailures": None},
        b'"done"',
        b"not json",
        [1, 2],
        {"other": 1},
    ],
)
def test_full_success(response: Any) -> None:
    result = parse_batch_response(kafka(), response)
    assert result.outcome is BatchOutcome.SUCCESS
    assert result.retry_event is None


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, "itemIdentifier is empty"),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, "itemIdentifier is empty"),
        ({"batchItemFailures": [{"itemIdentifer": "orders-0-10"}]}, "has no itemIdentifier"),
        ({"batchItemFailures": ["orders-0-10"]}, "batchItemFailures[0] has no itemIdentifier"),
        ({"batchItemFailures": {"itemIdentifier": "x"}}, "batchItemFailures is not a list"),
        ({"batchItemFailures": [{"itemIdentifier": "orders-0-99"}]}, "is not a record of this"),
        (
            {"batchItemFailures": [{"itemIdentifier": {"partition": "orders-7", "offset": 10}}]},
            "is not a record of this batch",
        ),
        (
            {"batchItemFailures": [{"itemIdentifier": {"partition": "orders-0"}}]},
            "is not a record of this batch",
        ),
        ({"batchItemFailures": [{"itemIdentifier": 10}]}, "is not a record of this batch"),
    ],
)
def test_invalid_identifiers_fail_the_whole_batch(response: Any, reason: str) -> None:
    result = parse_batch_response(kafka(), response)
    assert result.outcome is BatchOutcome.FAILURE
    assert reason in result.reason


def test_kafka_retries_from_the_lowest_failed_offset_of_each_partition() -> None:
    response = {
        "batchItemFailures": [
            {"itemIdentifier": {"partition": "orders-0", "offset": 13}},
            {"itemIdentifier": {"partition": "orders-0", "offset": "11"}},
        ]
    }
    result = parse_batch_response(kafka(), json.dumps(response).encode())
    assert result.outcome is BatchOutcome.PARTIAL
    assert positions(result.retry_event) == ["orders-0@11", "orders-0@12", "orders-0@13"]
    assert result.retry_event is not None
    assert result.retry_event["bootstrapServers"] == "b:9092"


def test_kafka_identifier_forms() -> None:
    text = parse_batch_response(kafka(), {"batchItemFailures": [{"itemIdentifier": "orders-1-21"}]})
    assert positions(text.retry_event) == ["orders-1@21"]
    number = parse_batch_response(
        kafka(), {"batchItemFailures": [{"itemIdentifier": {"partition": 1, "offset": 20}}]}
    )
    assert positions(number.retry_event) == ["orders-1@20", "orders-1@21"]


def test_streams_retry_from_the_lowest_failed_entry() -> None:
    response = {
        "batchItemFailures": [
            {"itemIdentifier": "1700000000000-3"},
            {"itemIdentifier": "1700000000000-1"},
        ]
    }
    result = parse_batch_response(streams(), response)
    assert positions(result.retry_event) == [f"1700000000000-{n}" for n in (1, 2, 3)]
    bad = parse_batch_response(streams(), {"batchItemFailures": [{"itemIdentifier": "9-9"}]})
    assert bad.outcome is BatchOutcome.FAILURE


def test_rabbitmq_retries_exactly_the_failed_messages() -> None:
    response = {"batchItemFailures": [{"itemIdentifier": "id-2"}, {"itemIdentifier": "id-0"}]}
    result = parse_batch_response(rabbit(), response)
    assert positions(result.retry_event) == ["id-0", "id-2"]


def test_kafka_failure_record_describes_the_batch_position() -> None:
    record = json.loads(
        mapping_failure_record(
            kafka(),
            condition=MappingCondition.RETRY_ATTEMPTS_EXHAUSTED,
            function_arn=ARN,
            request_id="req-1",
            approximate_invoke_count=3,
            now=NOW,
            outcome=FunctionError("ValueError", "bad"),
        )
    )
    info = record.pop("KafkaBatchInfo")
    assert record == {
        "requestContext": {
            "requestId": "req-1",
            "functionArn": ARN,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "version": "1.0",
        "timestamp": "2026-03-01T12:00:00.000Z",
    }
    assert info["batchSize"] == 6 and info["bootstrapServers"] == "b:9092"
    assert info["payloadSize"] > 0
    assert info["recordsInfo"] == {
        "orders-0": {
            "firstRecordOffset": "10",
            "firstRecordTimestamp": "2023-11-14T22:13:20.010Z",
            "lastRecordOffset": "13",
            "lastRecordTimestamp": "2023-11-14T22:13:20.013Z",
        },
        "orders-1": {
            "firstRecordOffset": "20",
            "firstRecordTimestamp": "2023-11-14T22:13:20.020Z",
            "lastRecordOffset": "21",
            "lastRecordTimestamp": "2023-11-14T22:13:20.021Z",
        },
    }


def test_streams_failure_record_is_kinesis_batch_info_without_the_records() -> None:
    record = json.loads(
        mapping_failure_record(
            streams(),
            condition=MappingCondition.RECORD_AGE_EXCEEDED,
            function_arn=ARN,
            request_id="req-2",
            approximate_invoke_count=0,
            now=NOW,
        )
    )
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["responseContext"] is None
    assert "payload" not in record
    assert record["KinesisBatchInfo"] == {
        "shardId": "clicks",
        "startSequenceNumber": "1700000000000-0",
        "endSequenceNumber": "1700000000000-3",
        "approximateArrivalOfFirstRecord": "2023-11-14T22:13:20.000Z",
        "approximateArrivalOfLastRecord": "2023-11-14T22:13:20.000Z",
        "batchSize": 4,
        "streamArn": "arn:eventwire:redis-streams:local:000000000000:mapping/clicks",
    }


def test_rabbitmq_failure_record_keeps_the_messages() -> None:
    event = rabbit()
    record = json.loads(
        mapping_failure_record(
            event,
            condition=MappingCondition.RETRY_ATTEMPTS_EXHAUSTED,
            function_arn=ARN,
            request_id="req-3",
            approximate_invoke_count=1,
            now=NOW,
            outcome=Success(b'{"batchItemFailures": [{"itemIdentifier": "id-1"}]}'),
        )
    )
    assert record["payload"] == event
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["RabbitMQBatchInfo"]["queues"] == {
        "q::/": {"messageCount": 4, "messageIds": ["id-0", "id-1", "id-2"]}
    }
