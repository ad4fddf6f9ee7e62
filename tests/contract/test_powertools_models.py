"""Every event Eventwire makes validates against aws-lambda-powertools' parser models, so a
handler using ``@event_parser`` (or ``parse(event, model=...)``) runs unchanged.

The events are Eventwire's own output: the S3 events a running service gives its function
for documents POSTed to a webhook notification and for files in a watched directory, the
Kafka event the poller writes for the records it read (:class:`KafkaEventWriter`, whose
bytes ``tests/unit/test_batch_events.py`` holds equal to ``kafka_event``'s), the Scheduled
Event a schedule fires, and the ``kinesis`` part of each record of the Kinesis-shaped
Redis Streams event (its ``eventSource`` and ``eventName`` are Eventwire's own, not
``aws:kinesis``, so the whole event is no ``KinesisDataStreamModel``). Powertools has no
model for RabbitMQ (Amazon MQ) events nor for the invocation records of destinations.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import (
    EventBridgeModel,
    KafkaSelfManagedEventModel,
    S3Model,
)
from aws_lambda_powertools.utilities.parser.models.kinesis import KinesisDataStreamRecordPayload

from broker.config.models import ScheduleConfig
from broker.config.settings import Settings
from broker.events.batches import (
    KafkaEventWriter,
    StreamEntry,
    event_source_arn,
    redis_streams_event,
)
from pollers.schedule.source import Source
from tests import pipeline_handlers as handlers
from tests import s3_samples
from tests.support.service import running_service
from tests.support.services import free_port
from tests.support.waiting import eventually
from tests.unit.test_batch_events import Message

TOKEN = "contract-token"
DOCUMENTS = {
    "minio-guide": s3_samples.MINIO_GUIDE,
    "minio-put": s3_samples.MINIO_WEBHOOK_PUT,
    "minio-delete": s3_samples.MINIO_WEBHOOK_DELETE,
    "ceph": s3_samples.CEPH_EVENT_RECORD,
}


@pytest.fixture
async def s3_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What a running service's function received: one event per document POSTed to a
    webhook notification, then one for a file written to a watched directory and one
    for its removal."""
    monkeypatch.setenv("CONTRACT_TOKEN", TOKEN)
    watched = tmp_path / "dropbox"
    watched.mkdir()
    port = free_port()
    functions = {"seen": {"handler": "tests.pipeline_handlers:echo"}}
    webhook = {"name": "posted", "source": "webhook", "token_env": "CONTRACT_TOKEN"}
    directory = {"name": "dropbox", "source": f"dir://{watched}", "settle": "50ms"}
    config = {
        "object_notifications": [{**webhook, "function": "seen"}, {**directory, "function": "seen"}]
    }
    handlers.reset()
    database = f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}"
    async with running_service(database, functions, config=config, http_listen=f"127.0.0.1:{port}"):
        for document in DOCUMENTS.values():
            await asyncio.to_thread(post, port, document)
        posted = len(DOCUMENTS)
        await eventually(lambda: len(handlers.calls) == posted, 20, "the S3 events")
        (watched / "report.csv").write_text("a,b\n1,2\n")
        await eventually(lambda: len(handlers.calls) == posted + 1, 20, "a new file's event")
        (watched / "report.csv").unlink()
        await eventually(lambda: len(handlers.calls) == posted + 2, 20, "its removal's event")
    return list(handlers.calls)


def post(port: int, document: str) -> None:
    """POST ``document`` from 127.0.0.2, an address of the host's own that is not the
    listener's, so that the events show which address stands in for a missing one."""
    connection = http.client.HTTPConnection("127.0.0.1", port, 10, ("127.0.0.2", 0))
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        connection.request("POST", "/notifications/posted", document.encode(), headers)
        answer = connection.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["enqueued"] == 1
    finally:
        connection.close()


def test_s3_events_validate_against_s3model(s3_events: list[Any]) -> None:
    for event in s3_events:
        parsed = parse(event=event, model=S3Model)
        [record] = parsed.Records
        assert record.eventSource == "aws:s3"
    addresses = [event["Records"][0]["requestParameters"]["sourceIPAddress"] for event in s3_events]
    # As sent (MinIO's guide gives host:port), else the webhook's client, else the local host.
    assert addresses[:4] == ["192.168.1.80", "192.168.65.1", "127.0.0.1", "127.0.0.2"]
    assert addresses[4:] == ["127.0.0.1", "127.0.0.1"]
    created, removed = s3_events[4:]
    assert created["Records"][0]["eventName"] == "ObjectCreated:Put"
    assert removed["Records"][0]["eventName"] == "ObjectRemoved:Delete"


def test_the_kafka_event_validates_against_the_self_managed_kafka_model() -> None:
    read = [
        Message("orders", 0, 41, 1_700_000_000_000, 0, b"k1", b'{"n": 1}', []),
        Message("orders", 0, 42, 1_700_000_000_001, 1, None, b'{"n": 2}', [("h", b"\xff")]),
        Message("orders", 3, 7, 1_700_000_000_002, 0, b"k3", b"plain", [("t", b"")]),
    ]
    event = json.loads(KafkaEventWriter("k1:9092,k2:9092").event(read))
    parsed = parse(event=event, model=KafkaSelfManagedEventModel)
    assert parsed.bootstrapServers == ["k1:9092", "k2:9092"]
    first, second = parsed.records["orders-0"]
    assert (first.key, first.value, second.key) == (b"k1", '{"n": 1}', None)
    assert second.headers == [{"h": b"\xff"}]  # sent as Java's signed bytes, read back whole
    assert second.timestampType == "LOG_APPEND_TIME"
    [third] = parsed.records["orders-3"]
    assert (third.value, third.headers) == ("plain", [{"t": b""}])


@pytest.mark.parametrize("event_source", ["aws.events", "eventwire.scheduler"])
def test_the_scheduled_event_validates_against_the_eventbridge_model(event_source: str) -> None:
    schedule = ScheduleConfig(
        expression="rate(5 minutes)",
        function="report",
        payload={"report": "daily"},
        event_source=event_source,
    )
    slot = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)
    invocation = Source().invocation("nightly", schedule, Settings(), slot)
    parsed = parse(event=json.loads(invocation.payload), model=EventBridgeModel)
    assert parsed.detail_type == "Scheduled Event"
    assert parsed.time == slot
    assert parsed.detail == {"report": "daily"}


def test_redis_stream_records_carry_a_kinesis_payload_powertools_reads() -> None:
    entries = [
        StreamEntry("orders", "1700000000000-0", {"n": "1"}),
        StreamEntry("orders", "1700000000000-1", {b"n": b"2", "note": "\u00e9"}),
    ]
    event = redis_streams_event(entries, event_source_arn=event_source_arn("redis", "orders"))
    payloads = [
        KinesisDataStreamRecordPayload.model_validate(record["kinesis"])
        for record in event["Records"]
    ]
    assert [p.data for p in payloads] == [b'{"n":"1"}', '{"n":"2","note":"é"}'.encode()]
    assert [p.sequenceNumber for p in payloads] == ["1700000000000-0", "1700000000000-1"]
    assert payloads[0].approximateArrivalTimestamp == 1_700_000_000.0
