"""The test fixtures give real Kafka, RabbitMQ and Redis Streams: a round trip through each."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.config.mappings import AmqpSource, RedisStreamSource, parse_source
from tests.support.kafka import create_topic, kafka_bootstrap, unique_topic  # noqa: F401
from tests.support.rabbitmq import RabbitQueue, rabbitmq_queue  # noqa: F401
from tests.support.redis_streams import RedisStream, redis_stream  # noqa: F401


async def test_kafka_round_trip(kafka_bootstrap: str) -> None:  # noqa: F811
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = unique_topic()
    await create_topic(kafka_bootstrap, topic, partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(
                topic, f"v{n}".encode(), key=b"k", partition=1, headers=[("h", b"x")]
            )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partition = TopicPartition(topic, 1)
        consumer.assign([partition])
        received: list[Any] = []
        async with asyncio.timeout(10):
            while len(received) < 3:
                batch = await consumer.getmany(partition, timeout_ms=500)
                received.extend(batch.get(partition, []))
    finally:
        await consumer.stop()
    assert [(r.offset, r.key, r.value, r.headers) for r in received] == [
        (n, b"k", f"v{n}".encode(), (("h", b"x"),)) for n in range(3)
    ]


async def test_rabbitmq_round_trip(rabbitmq_queue: RabbitQueue) -> None:  # noqa: F811
    import aio_pika

    source = parse_source(rabbitmq_queue.source_uri)
    assert isinstance(source, AmqpSource)
    assert (source.queue, source.vhost) == (rabbitmq_queue.name, "/")
    connection = await aio_pika.connect_robust(source.url)
    try:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"n": 1}', message_id="m-1"), routing_key=source.queue
        )
        queue = await channel.get_queue(source.queue)
        async with asyncio.timeout(10):
            message = None
            while message is None:
                message = await queue.get(fail=False, timeout=5)
        await message.ack()
    finally:
        await connection.close()
    assert (message.body, message.message_id) == (b'{"n": 1}', "m-1")


async def test_redis_stream_round_trip(redis_stream: RedisStream) -> None:  # noqa: F811
    from redis.asyncio import Redis

    source = parse_source(redis_stream.source_uri("g1"))
    assert isinstance(source, RedisStreamSource)
    client = Redis.from_url(source.url)
    try:
        await client.xgroup_create(source.stream, "g1", id="0", mkstream=True)
        entry_id = await client.xadd(source.stream, {"page": "/home"})
        read = await client.xreadgroup("g1", "c1", {source.stream: ">"}, count=10, block=1000)
        assert await client.xack(source.stream, "g1", entry_id) == 1
    finally:
        await client.aclose()
    assert read == [[source.stream.encode(), [(entry_id, {b"page": b"/home"})]]]
