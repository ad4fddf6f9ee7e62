"""A mapping's records read as S3 notification documents: invocations, dead letters, failure
records, and the keys that make reading a record again change nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from broker.config.mappings import MappingConfig
from broker.config.settings import Settings
from broker.events.batches import (
    AmqpMessage,
    KafkaRecord,
    StreamEntry,
    encode_event,
    entry_fields,
    kafka_event,
    rabbitmq_event,
    redis_streams_event,
)
from broker.loading import parse_config
from broker.models import Origin
from pollers.batching import Batch, Record
from pollers.s3.documents import NotificationDocuments, Planned
from pollers.s3.invocations import notified
from tests.s3_samples import CEPH_EVENT_RECORD, MINIO_GUIDE, MINIO_WEBHOOK_PUT

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def mapping(source: str, **options: Any) -> MappingConfig:
    config = parse_config(
        {
            "functions": {"thumbs": {"handler": "m:f"}, "audit": {"handler": "m:g"}},
            "mappings": [
                {
                    "name": "uploads",
                    "source": source,
                    "function": "thumbs",
                    "object_notifications": {"suffix": ".jpg"},
                    **options,
                }
            ],
        }
    )
    return config.mappings[0]


def kafka_record(offset: int, value: bytes | None) -> Record:
    item = KafkaRecord("events", 0, offset, 1_700_000_000_000, None, value)
    return Record("events-0", str(offset), 1_700_000_000_000, value, item)


def plan(documents: NotificationDocuments, *records: Record, generation: int = 0) -> Planned:
    batch = Batch(records[0].partition, tuple(records), cut=True)
    return documents.plan([batch], generation, NOW)


def kafka_documents(**options: Any) -> NotificationDocuments:
    config = mapping("kafka://k:9092/events", **options)
    return NotificationDocuments(
        config,
        Settings(),
        lambda items: encode_event(kafka_event(items, bootstrap_servers="k:9092")),
    )


def test_each_matching_record_is_the_webhooks_invocation() -> None:
    planned = plan(
        kafka_documents(),
        kafka_record(0, MINIO_GUIDE.encode()),
        kafka_record(1, MINIO_WEBHOOK_PUT.encode()),  # .mtl: filtered out
        kafka_record(2, CEPH_EVENT_RECORD.encode()),
    )
    assert (planned.documents, planned.s3_records, planned.dead_letters) == (3, 3, [])
    webhook = notified(
        MINIO_GUIDE,
        function="thumbs",
        s3_filter=kafka_documents().notifications.filter,
        region="local",
        source={"notification": "uploads"},
    ).invocations
    first = planned.invocations[0]
    assert (first.payload, first.idempotency_key, first.origin) == (
        webhook[0].payload,
        webhook[0].idempotency_key,
        Origin.OBJECT_NOTIFICATION,
    )
    assert first.lane is None  # run in parallel, as webhook notifications
    assert first.source == {
        "mapping": {"name": "uploads"},
        "position": {"partition": "events-0", "first": "0", "last": "0"},
        "event": "s3:ObjectCreated:Put",
        "bucket": "images",
        "key": "myphoto.jpg",
    }
    assert [
        json.loads(i.payload)["Records"][0]["s3"]["object"]["key"] for i in planned.invocations
    ] == [
        "myphoto.jpg",
        "myimage1.jpg",
    ]


def test_after_a_seek_records_are_invoked_again() -> None:
    documents = kafka_documents()
    before = plan(documents, kafka_record(0, MINIO_GUIDE.encode()))
    again = plan(documents, kafka_record(0, MINIO_GUIDE.encode()))
    replayed = plan(documents, kafka_record(0, MINIO_GUIDE.encode()), generation=1)
    assert before.invocations[0].idempotency_key == again.invocations[0].idempotency_key
    assert replayed.invocations[0].idempotency_key != before.invocations[0].idempotency_key


def test_a_record_that_is_no_document_is_one_dead_letter_however_often_read() -> None:
    documents = kafka_documents()
    first = plan(documents, kafka_record(7, b"{oops"), kafka_record(8, None))
    [bad_json, no_value] = first.dead_letters
    assert first.invocations == []
    assert bad_json.function == "thumbs" and bad_json.payload == b"{oops"
    assert bad_json.error_type == "InvalidS3Notification" and bad_json.attempts == 0
    assert bad_json.error_message == (
        "mapping uploads: the record at offset 7 of events-0 is not an S3 notification "
        "document: not JSON: Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1)"
    )
    assert no_value.error_message is not None
    assert no_value.error_message.endswith(
        "is not an S3 notification document: the record has no value"
    )
    assert bad_json.source == {
        "mapping": {"name": "uploads"},
        "position": {"partition": "events-0", "first": "7", "last": "7"},
    }
    again = plan(documents, kafka_record(7, b"{oops"))
    assert again.dead_letters[0].id == bad_json.id  # read again after a crash: the same letter
    assert (
        plan(documents, kafka_record(7, b"{oops"), generation=1).dead_letters[0].id != bad_json.id
    )


def test_on_failure_gets_lambdas_failure_record_with_the_reason() -> None:
    documents = kafka_documents(on_failure="function:audit")
    planned = plan(documents, kafka_record(7, b'{"Records": "no"}'))
    [letter] = planned.dead_letters
    [record] = planned.invocations
    assert record.function == "audit" and record.idempotency_key == f"destination:{letter.id}"
    body = json.loads(record.payload)
    assert body["requestContext"] == {
        "requestId": letter.id,
        "functionArn": "arn:aws:lambda:local:000000000000:function:thumbs",
        "condition": "InvalidS3Notification",
        "approximateInvokeCount": 0,
    }
    assert body["errorMessage"] == letter.error_message
    assert "Records: expected a list, got a string" in body["errorMessage"]
    assert body["KafkaBatchInfo"]["recordsInfo"]["events-0"]["firstRecordOffset"] == "7"
    assert body["payload"]["records"]["events-0"][0]["offset"] == 7

    # `dlq` as on_failure: the dead letter is all there is.
    dlq = kafka_documents(on_failure="dlq")
    assert plan(dlq, kafka_record(7, b"[]")).invocations == []


def test_a_stream_entry_holds_its_document_in_a_field() -> None:
    config = mapping("redis://r:6379/0?stream=s3")
    documents = NotificationDocuments(
        config,
        Settings(),
        lambda items: encode_event(redis_streams_event(items, event_source_arn="arn")),
    )

    def entry(entry_id: str, fields: dict[str | bytes, str | bytes]) -> Record:
        item = StreamEntry("s3", entry_id, fields)
        return Record("s3", entry_id, 1, None, item, entry_fields(item))

    planned = plan(
        documents,
        entry("1-0", {b"body": MINIO_GUIDE.encode()}),
        entry("2-0", {b"data": MINIO_GUIDE.encode(), b"from": b"bridge"}),
    )
    assert len(planned.invocations) == 1
    [letter] = planned.dead_letters
    assert letter.error_message == (
        "mapping uploads: entry 2-0 of stream s3 is not an S3 notification document: the entry "
        "has no field 'body' (object_notifications.field names the one holding the document); "
        "its fields: data, from"
    )
    assert json.loads(letter.payload) == {"data": MINIO_GUIDE, "from": "bridge"}


def test_a_queue_message_without_an_id_is_known_by_its_body() -> None:
    config = mapping("amqp://h:5672/%2F?queue=minio")
    documents = NotificationDocuments(
        config,
        Settings(),
        lambda items: encode_event(rabbitmq_event(items, event_source_arn="arn")),
    )

    def message(position: str, body: bytes) -> Record:
        item = AmqpMessage(body=body, queue="minio", vhost="/")
        return Record("minio", position, 1, body, item)

    one = plan(documents, message("~a1", b"nope"))
    redelivered = plan(documents, message("~b2", b"nope"))  # no message_id: a new position
    other = plan(documents, message("~c3", b"nope!"))
    assert one.dead_letters[0].id == redelivered.dead_letters[0].id != other.dead_letters[0].id
    assert one.dead_letters[0].error_message is not None
    assert one.dead_letters[0].error_message.startswith(
        "mapping uploads: a message of queue minio "
    )
    with_id = plan(documents, message("m-1", b"nope")).dead_letters[0]
    assert with_id.error_message is not None
    assert with_id.error_message.startswith("mapping uploads: message m-1 of queue minio ")
