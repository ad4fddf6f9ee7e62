"""MinIO and Ceph notification documents through RabbitMQ, Kafka and Redis Streams mappings.

Each test runs a whole service (SQLite store, handlers from
``tests.mapping_handlers``) on a mapping with ``object_notifications``,
publishes the published sample documents (and a duplicate, documents the
filter leaves out, and bodies that are no documents) to the real source, and
checks that the function got exactly Lambda's S3 events of the matching
records, once each; that the bad bodies are dead letters with their reason
and failure records on ``on_failure``; and that the source was checkpointed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from broker.events.s3 import lambda_event, parse_notification
from broker.models import State
from broker.store.engine import create_engine
from broker.store.history import list_invocations
from broker.store.schema import dead_letters
from tests import mapping_handlers as handlers
from tests.s3_samples import (
    CEPH_EVENT_RECORD,
    CEPH_UNPREFIXED,
    MINIO_GUIDE,
    MINIO_WEBHOOK_DELETE,
    MINIO_WEBHOOK_PUT,
)
from tests.support.kafka import create_topic, kafka_bootstrap, unique_topic  # noqa: F401
from tests.support.mappings import mapping_service
from tests.support.rabbitmq import RabbitQueue, rabbitmq_queue  # noqa: F401
from tests.support.redis_streams import RedisStream, redis_stream  # noqa: F401
from tests.support.stores import Store, store_for
from tests.support.waiting import eventually

NOT_JSON = b"<Event>not a notification</Event>"
NO_KEY = json.dumps(
    {"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}]}
).encode()
OTHER_PREFIX = MINIO_GUIDE.replace('"key":"myphoto.jpg"', '"key":"yourphoto.jpg"')
TEST_EVENT = b'{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"images"}'

DOCUMENTS = [
    MINIO_GUIDE.encode(),  # images/myphoto.jpg: invoked
    MINIO_WEBHOOK_PUT.encode(),  # .mtl: not the suffix
    NOT_JSON,
    CEPH_EVENT_RECORD.encode(),  # mybucket1/myimage1.jpg: invoked
    MINIO_WEBHOOK_DELETE.encode(),  # ObjectRemoved: not the events
    MINIO_GUIDE.encode(),  # sent twice: one invocation
    CEPH_UNPREFIXED.encode(),  # the same Ceph event, named without "s3:": one invocation
    OTHER_PREFIX.encode(),  # not the prefix
    TEST_EVENT,  # no records
    NO_KEY,
]
EXPECTED = [MINIO_GUIDE, CEPH_EVENT_RECORD]
INVALID = {
    NOT_JSON: "is not an S3 notification document: not JSON",
    NO_KEY: "is not an S3 notification document: Records[0].s3.object: expected an object",
}


@dataclass
class Side:
    kind: str
    uri: str
    target: Any
    options: dict[str, Any]


@pytest.fixture(params=["rabbitmq", "kafka", "redis"])
def side(request: pytest.FixtureRequest) -> Side:
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        topic = unique_topic()
        target = (bootstrap, topic)
        return Side(
            "kafka", f"kafka://{bootstrap}/{topic}", target, {"starting_position": "trim_horizon"}
        )
    if request.param == "redis":
        stream: RedisStream = request.getfixturevalue("redis_stream")
        return Side("redis", stream.source_uri(), stream, {"starting_position": "trim_horizon"})
    queue: RabbitQueue = request.getfixturevalue("rabbitmq_queue")
    return Side("rabbitmq", queue.source_uri, queue, {})


async def publish(side: Side, bodies: list[bytes]) -> None:
    """Publish as MinIO and Ceph do: the document as the message body (no message id), the
    Kafka record's value; a stream entry holds it in its ``body`` field."""
    if side.kind == "kafka":
        from aiokafka import AIOKafkaProducer

        bootstrap, topic = side.target
        await create_topic(bootstrap, topic)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for body in bodies:
                await producer.send(topic, body, key=b"images/myphoto.jpg", partition=0)
            await producer.flush()
        finally:
            await producer.stop()
    elif side.kind == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url(side.target.url)
        try:
            for body in bodies:
                await client.xadd(side.target.key, {"body": body})
        finally:
            await client.aclose()
    else:
        import aio_pika

        connection = await aio_pika.connect(side.target.url)
        try:
            channel = await connection.channel()
            for body in bodies:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, content_type="application/json"),
                    routing_key=side.target.name,
                )
        finally:
            await connection.close()


async def unfinished(side: Side, group: str) -> int:
    """Records the mapping has not checkpointed (Kafka: not committed; RabbitMQ: still in
    the queue, ready or unacked; Redis: not delivered to the group, or not XACKed)."""
    if side.kind == "kafka":
        from aiokafka import AIOKafkaConsumer, TopicPartition

        bootstrap, topic = side.target
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
        await consumer.start()
        try:
            committed = await consumer.committed(TopicPartition(topic, 0))
            return len(DOCUMENTS) - (committed or 0)  # offsets 0 … len - 1 were written
        finally:
            await consumer.stop()
    if side.kind == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url(side.target.url)
        try:
            [info] = await client.xinfo_groups(side.target.key)
            return int(info["pending"]) + int(info["lag"])
        finally:
            await client.aclose()
    import aio_pika

    connection = await aio_pika.connect(side.target.url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(side.target.name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}")


async def test_documents_become_one_invocation_per_matching_record(
    side: Side, store: Store
) -> None:
    await check_documents(side, store)


@pytest.mark.parametrize("backend", ["postgres", "redis"])
async def test_every_queue_backend_keeps_them(
    backend: str,
    rabbitmq_queue: RabbitQueue,  # noqa: F811
    tmp_path: Path,
) -> None:
    side = Side("rabbitmq", rabbitmq_queue.source_uri, rabbitmq_queue, {})
    async with store_for(backend, tmp_path) as store:
        await check_documents(side, store)


async def check_documents(side: Side, store: Store) -> None:
    f = f"thumbs{uuid.uuid4().hex[:8]}"
    audit = f"audit{uuid.uuid4().hex[:8]}"
    config = {
        "functions": {
            f: {"handler": "tests.mapping_handlers:record"},
            audit: {"handler": "tests.mapping_handlers:record"},
        },
        "mappings": [
            {
                "name": f,
                "source": side.uri,
                "function": f,
                "on_failure": f"function:{audit}",
                "object_notifications": {
                    "events": ["s3:ObjectCreated:*"],
                    "prefix": "my",
                    "suffix": ".jpg",
                },
                **side.options,
            }
        ],
    }
    await publish(side, DOCUMENTS)
    engine = create_engine(store.database_url, reader=True)
    try:
        async with mapping_service(store, config):

            async def done() -> bool:
                # NO_KEY comes last: once it is a dead letter every document was read.
                if len(handlers.CALLS[audit]) < len(INVALID):
                    return False
                rows = await list_invocations(engine, function=f)
                return all(row.state is State.SUCCEEDED for row in rows)

            await eventually(done, 30, "every document read, and its invocations run")
        rows = await list_invocations(engine, function=f)
        async with engine.connect() as conn:
            letters = list((await conn.execute(select(dead_letters))).all())
    finally:
        await engine.dispose()
    # Checkpointed: committed, acked (an unacked message is back in the queue once the
    # service is gone), XACKed.
    assert await unfinished(side, side_group(side, f)) == 0

    # Exactly Lambda's S3 event of each matching record, once: as the webhook invokes it.
    wanted = [lambda_event(parse_notification(doc)[0]) for doc in EXPECTED]
    assert sorted(handlers.CALLS[f], key=json.dumps) == sorted(wanted, key=json.dumps)
    keys = sorted(event["Records"][0]["s3"]["object"]["key"] for event in handlers.CALLS[f])
    assert keys == ["myimage1.jpg", "myphoto.jpg"]
    for event in handlers.CALLS[f]:
        [record] = event["Records"]
        assert record["eventSource"] == "aws:s3" and record["eventName"] == "ObjectCreated:Put"
    assert len(rows) == len(EXPECTED)  # the duplicates were not enqueued again
    assert {row.origin.value for row in rows} == {"notification"}
    assert all(row.source["mapping"] == {"name": f} for row in rows)

    # Bodies that are no documents: dead letters of the function, with where and why.
    by_payload = {letter.payload: letter for letter in letters}
    assert sorted(by_payload) == sorted(INVALID)
    for body, reason in INVALID.items():
        letter = by_payload[body]
        assert letter.function == f and letter.error_type == "InvalidS3Notification"
        assert f"mapping {f}: " in letter.error_message and reason in letter.error_message
        assert letter.origin == "notification" and letter.attempts == 0
    # …and Lambda's failure record on on_failure, with the reason and the record.
    conditions = {r["requestContext"]["condition"] for r in handlers.CALLS[audit]}
    assert conditions == {"InvalidS3Notification"}
    assert {r["requestContext"]["requestId"] for r in handlers.CALLS[audit]} == {
        letter.id for letter in letters
    }
    assert all(
        "is not an S3 notification document" in r["errorMessage"] for r in handlers.CALLS[audit]
    )


def side_group(side: Side, mapping: str) -> str:
    """The consumer group the mapping reads with."""
    return "eventwire" if side.kind == "redis" else mapping
