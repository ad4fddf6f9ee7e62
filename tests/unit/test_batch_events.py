"""Mapping events have Lambda's shapes, and batches divide without losing or reordering records."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from broker.events.batches import (
    KAFKA_TIMESTAMP_TYPES,
    AmqpMessage,
    KafkaEventWriter,
    KafkaRecord,
    StreamEntry,
    bisect_event,
    encode_event,
    event_items,
    event_kind,
    event_source_arn,
    event_with,
    kafka_event,
    rabbitmq_event,
    redis_streams_event,
    split_to_fit,
)

ARN = event_source_arn("redis", "clicks")


def test_kafka_event_is_lambdas_self_managed_kafka_event() -> None:
    record = KafkaRecord(
        topic="mytopic",
        partition=0,
        offset=15,
        timestamp_ms=1545084650987,
        key=b"k1",
        value=b"Hello, this is a test.",
        headers=[("headerKey", b"headerValue")],
    )
    event = kafka_event([record], bootstrap_servers="b-1:9092,b-2:9092")
    assert event == {
        "eventSource": "SelfManagedKafka",
        "bootstrapServers": "b-1:9092,b-2:9092",
        "records": {
            "mytopic-0": [
                {
                    "topic": "mytopic",
                    "partition": 0,
                    "offset": 15,
                    "timestamp": 1545084650987,
                    "timestampType": "CREATE_TIME",
                    "key": "azE=",
                    "value": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",  # Lambda's documented example
                    "headers": [
                        {"headerKey": [104, 101, 97, 100, 101, 114, 86, 97, 108, 117, 101]}
                    ],
                }
            ]
        },
    }
    assert event_kind(event) == "kafka"


def test_kafka_null_key_and_value_are_left_out_and_headers_are_java_bytes() -> None:
    record = KafkaRecord("t", 3, 7, 0, headers=[("bin", b"\x00\x7f\x80\xff")])
    (item,) = kafka_event([record], bootstrap_servers="b:9092")["records"]["t-3"]
    assert "key" not in item and "value" not in item
    assert item["headers"] == [{"bin": [0, 127, -128, -1]}]


def test_kafka_records_group_by_topic_partition_in_order() -> None:
    records = [KafkaRecord("a-b", p, o, 0, value=b"x") for p, o in [(0, 1), (1, 5), (0, 2)]]
    event = kafka_event(records, bootstrap_servers="b:9092")
    assert list(event["records"]) == ["a-b-0", "a-b-1"]
    assert [r["offset"] for r in event["records"]["a-b-0"]] == [1, 2]


@dataclass(frozen=True)
class Message:
    """A Kafka record as aiokafka's consumer gives it."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


def _written(records: list[KafkaRecord], servers: str) -> bytes:
    types = {name: code for code, name in KAFKA_TIMESTAMP_TYPES.items()}
    messages = [
        Message(
            r.topic,
            r.partition,
            r.offset,
            r.timestamp_ms,
            types[r.timestamp_type],
            r.key,
            r.value,
            r.headers,
        )
        for r in records
    ]
    return KafkaEventWriter(servers).event(messages)


@pytest.mark.parametrize(
    "records",
    [
        [
            KafkaRecord(
                "mytopic", 0, 15, 1545084650987, b"k1", b"Hello", [("headerKey", b"headerValue")]
            )
        ],
        [KafkaRecord("t", 3, 7, 0, headers=[("bin", b"\x00\x7f\x80\xff"), ('é"\n', b"")])],
        [KafkaRecord("a-b", p, o, 1, value=b"x") for p, o in [(0, 1), (1, 5), (0, 2), (1, 6)]],
        [KafkaRecord("t", 0, 1, 2, key=b"", value=b"", timestamp_type="LOG_APPEND_TIME")],
        [KafkaRecord("t", 0, n, n, value=bytes(range(256)) * 3) for n in range(50)],
        [],
    ],
)
def test_kafka_event_writer_writes_exactly_the_encoded_event(records: list[KafkaRecord]) -> None:
    servers = 'b-1:9092,"b-2":9092'
    expected = encode_event(kafka_event(records, bootstrap_servers=servers))
    assert _written(records, servers) == expected


def test_kafka_event_writer_counts_a_header_without_value_as_empty() -> None:
    message = Message("t", 0, 1, 2, 0, None, None, [("h", None)])  # type: ignore[list-item]
    event = json.loads(KafkaEventWriter("b:9092").event([message]))
    assert event["records"]["t-0"][0]["headers"] == [{"h": []}]


def test_rabbitmq_event_is_lambdas_rmq_event() -> None:
    message = AmqpMessage(
        body=b'{"timeout":0}',
        queue="pizzaQueue",
        vhost="/",
        content_type="text/plain",
        headers={"header1": "value1", "numberInHeader": 10, "raw": b"\x01"},
        delivery_mode=1,
        priority=34,
        expiration="60000",
        timestamp=datetime.fromtimestamp(2021, UTC),
        user_id="AIDACKCEVSQ6C2EXAMPLE",
    )
    event = rabbitmq_event([message], event_source_arn="arn:x")
    assert event["eventSource"] == "aws:rmq"
    assert event["eventSourceArn"] == "arn:x"
    (item,) = event["rmqMessagesByQueue"]["pizzaQueue::/"]
    assert item == {
        "basicProperties": {
            "contentType": "text/plain",
            "contentEncoding": None,
            "headers": {
                "header1": {"bytes": [118, 97, 108, 117, 101, 49]},
                "numberInHeader": 10,
                "raw": {"bytes": [1]},
            },
            "deliveryMode": 1,
            "priority": 34,
            "correlationId": None,
            "replyTo": None,
            "expiration": "60000",
            "messageId": None,
            "timestamp": "Jan 1, 1970, 12:33:41 AM",  # Lambda's documented rendering
            "type": None,
            "userId": "AIDACKCEVSQ6C2EXAMPLE",
            "appId": None,
            "clusterId": None,
            "bodySize": 13,
        },
        "redelivered": False,
        "data": base64.b64encode(b'{"timeout":0}').decode(),
    }
    assert event_kind(event) == "amqp"


def test_redis_streams_event_is_shaped_like_kinesis() -> None:
    entry = StreamEntry("clicks", "1700000000123-4", {b"page": b"/home", "user": "u1"})
    event = redis_streams_event([entry], event_source_arn=ARN)
    (record,) = event["Records"]
    kinesis = record.pop("kinesis")
    assert json.loads(base64.b64decode(kinesis.pop("data"))) == {"page": "/home", "user": "u1"}
    assert kinesis == {
        "kinesisSchemaVersion": "1.0",
        "partitionKey": "clicks",
        "sequenceNumber": "1700000000123-4",
        "approximateArrivalTimestamp": 1700000000.123,
    }
    assert record == {
        "eventSource": "eventwire:redis-streams",
        "eventVersion": "1.0",
        "eventID": "clicks:1700000000123-4",
        "eventName": "eventwire:redis-streams:record",
        "invokeIdentityArn": "",
        "awsRegion": "local",
        "eventSourceARN": "arn:eventwire:redis-streams:local:000000000000:mapping/clicks",
    }
    assert event_kind(event) == "redis"


def test_event_kind_rejects_other_payloads() -> None:
    with pytest.raises(ValueError, match="not a Kafka, RabbitMQ, Redis Streams or SQS mapping"):
        event_kind({"hello": "world"})


def kafka_batch(count: int, partitions: int = 1, size: int = 10) -> dict[str, Any]:
    records = [
        KafkaRecord("t", n % partitions, n, 1_700_000_000_000 + n, value=bytes([65]) * size)
        for n in range(count)
    ]
    return kafka_event(records, bootstrap_servers="b:9092")


def offsets(event: dict[str, Any]) -> list[int]:
    return [record["offset"] for _, record in event_items(event)]


def test_event_with_keeps_the_envelope() -> None:
    event = kafka_batch(4, partitions=2)
    items = event_items(event)
    subset = event_with(event, items[1:3])
    assert subset["bootstrapServers"] == "b:9092" and subset["eventSource"] == "SelfManagedKafka"
    assert offsets(subset) == [2, 1]  # items are listed partition by partition


def test_bisect_splits_in_two_halves_in_order() -> None:
    first, second = bisect_event(kafka_batch(5))
    assert (offsets(first), offsets(second)) == ([0, 1, 2], [3, 4])
    entries = [StreamEntry("s", f"1-{n}", {"n": str(n)}) for n in range(2)]
    left, right = bisect_event(redis_streams_event(entries, event_source_arn=ARN))
    assert [r["kinesis"]["sequenceNumber"] for r in left["Records"] + right["Records"]] == [
        "1-0",
        "1-1",
    ]
    with pytest.raises(ValueError, match="fewer than two records"):
        bisect_event(kafka_batch(1))


@pytest.mark.parametrize("limit", [300, 700, 2_000, 10_000])
@pytest.mark.parametrize("partitions", [1, 3])
def test_split_to_fit_respects_the_limit_and_keeps_every_record_in_order(
    limit: int, partitions: int
) -> None:
    event = kafka_batch(40, partitions=partitions, size=30)
    split = split_to_fit(event, limit)
    assert not split.oversized
    assert all(len(encode_event(part)) <= limit for part in split.events)
    assert [item for part in split.events for item in event_items(part)] == event_items(event)
    if len(encode_event(event)) <= limit:
        assert split.events == [event]
    else:
        # Parts are as full as they can be: the next record would not fit.
        for left, right in zip(split.events, split.events[1:], strict=False):
            merged = event_with(event, event_items(left) + event_items(right)[:1])
            assert len(encode_event(merged)) > limit


def test_split_to_fit_sets_apart_a_record_too_large_for_any_event() -> None:
    records = [
        KafkaRecord("t", 0, 0, 0, value=b"a" * 10),
        KafkaRecord("t", 0, 1, 0, value=b"b" * 5000),
        KafkaRecord("t", 0, 2, 0, value=b"c" * 10),
    ]
    split = split_to_fit(kafka_event(records, bootstrap_servers="b:9092"), 1000)
    assert [offsets(part) for part in split.events] == [[0], [2]]
    assert [offsets(part) for part in split.oversized] == [[1]]


def test_split_to_fit_works_for_rabbitmq_and_streams() -> None:
    messages = [AmqpMessage(body=b"x" * 100, queue="q") for _ in range(20)]
    rmq = split_to_fit(rabbitmq_event(messages, event_source_arn="arn"), 1500)
    assert len(rmq.events) > 1
    assert sum(len(event_items(part)) for part in rmq.events) == 20
    entries = [StreamEntry("s", f"1-{n}", {"v": "y" * 100}) for n in range(20)]
    streams = split_to_fit(redis_streams_event(entries, event_source_arn=ARN), 2000)
    assert all(len(encode_event(part)) <= 2000 for part in streams.events)
    assert sum(len(part["Records"]) for part in streams.events) == 20
