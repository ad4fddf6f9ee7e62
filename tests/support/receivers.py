"""What receives destination messages in tests: one kind per transport, one interface.

A :class:`Receiver` names a destination URI per *channel* (``success``,
``failure``, ``dead``: a routing key, topic, stream, queue or path of its own) and
answers what each channel has received so far, as ``(body, headers)``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from tests.support.moto import REGION, MotoServer, SqsQueue, make_queue
from tests.support.services import free_port

Received = tuple[Any, dict[str, str]]


class Receiver(Protocol):
    def uri(self, channel: str) -> str: ...

    async def received(self, channel: str) -> list[Received]: ...


# ---------------------------------------------------------------- webhook


@dataclass
class WebhookReceiver:
    """A local HTTP server; ``answer`` decides each request's status (200 by default)."""

    port: int = field(default_factory=free_port)
    requests: dict[str, list[tuple[bytes, dict[str, str]]]] = field(default_factory=dict)
    answer: Callable[[str, int], tuple[int, dict[str, str]]] = lambda _c, _n: (200, {})
    attempts: dict[str, int] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    def uri(self, channel: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{channel}"

    async def received(self, channel: str) -> list[Received]:
        return [(json.loads(body), headers) for body, headers in self.requests.get(channel, [])]

    async def _handle(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        number = self.attempts[channel] = self.attempts.get(channel, 0) + 1
        status, headers = self.answer(channel, number)
        body = await request.read()
        if status < 300:
            self.requests.setdefault(channel, []).append((body, dict(request.headers)))
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "no")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/{channel}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@asynccontextmanager
async def webhook_receiver(start: bool = True) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    if start:
        await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


# ---------------------------------------------------------------- RabbitMQ


@dataclass
class AmqpReceiver:
    """An exchange of the test's own, with one queue bound per channel (its routing key)."""

    url: str
    exchange: str
    channel: Any
    queues: dict[str, Any] = field(default_factory=dict)
    got: dict[str, list[Received]] = field(default_factory=dict)

    def uri(self, channel: str) -> str:
        return f"{self.url.rstrip('/')}/%2F?exchange={self.exchange}&routing_key={channel}"

    async def bind(self, channel: str) -> None:
        queue = await self.channel.declare_queue(f"{self.exchange}-{channel}", auto_delete=True)
        await queue.bind(self.exchange, routing_key=channel)
        self.queues[channel] = queue

    async def received(self, channel: str) -> list[Received]:
        got = self.got.setdefault(channel, [])
        queue = self.queues[channel]
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            headers = {k: _text(v) for k, v in (message.headers or {}).items()}
            got.append((json.loads(message.body), headers))
        return list(got)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@asynccontextmanager
async def amqp_receiver(
    url: str, channels: tuple[str, ...], *, declare: bool = True
) -> AsyncIterator[AmqpReceiver]:
    """``declare=False`` leaves the exchange to the test (:func:`declare_exchange`)."""
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        receiver = AmqpReceiver(url, f"ewtest-{uuid.uuid4().hex[:12]}", channel)
        if declare:
            await declare_exchange(receiver, channels)
        try:
            yield receiver
        finally:
            channel = await connection.channel()
            await channel.exchange_delete(receiver.exchange)
    finally:
        await connection.close()


async def declare_exchange(receiver: AmqpReceiver, channels: tuple[str, ...]) -> None:
    import aio_pika

    await receiver.channel.declare_exchange(receiver.exchange, aio_pika.ExchangeType.DIRECT)
    for name in channels:
        await receiver.bind(name)


# ---------------------------------------------------------------- Kafka


@dataclass
class KafkaReceiver:
    """A topic per channel; ``?idempotent=false`` because the test broker gives no producer ids."""

    bootstrap: str
    prefix: str = field(default_factory=lambda: f"ewtest-{uuid.uuid4().hex[:12]}")
    got: dict[str, list[Received]] = field(default_factory=dict)
    consumers: dict[str, Any] = field(default_factory=dict)

    def topic(self, channel: str) -> str:
        return f"{self.prefix}-{channel}"

    def uri(self, channel: str) -> str:
        return f"kafka://{self.bootstrap}/{self.topic(channel)}?idempotent=false"

    async def received(self, channel: str) -> list[Received]:
        from aiokafka import AIOKafkaConsumer

        consumer = self.consumers.get(channel)
        if consumer is None:
            consumer = AIOKafkaConsumer(
                self.topic(channel),
                bootstrap_servers=self.bootstrap,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
            )
            await consumer.start()
            self.consumers[channel] = consumer
        got = self.got.setdefault(channel, [])
        batches = await consumer.getmany(timeout_ms=50)
        for records in batches.values():
            for record in records:
                headers = {k: v.decode() for k, v in record.headers}
                got.append((json.loads(record.value), headers))
        return list(got)

    async def close(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.consumers.values()))


@asynccontextmanager
async def kafka_receiver(bootstrap: str, channels: tuple[str, ...]) -> AsyncIterator[KafkaReceiver]:
    from tests.support.kafka import create_topic

    receiver = KafkaReceiver(bootstrap)
    for channel in channels:
        await create_topic(bootstrap, receiver.topic(channel))
    try:
        yield receiver
    finally:
        await receiver.close()


# ---------------------------------------------------------------- Redis streams


@dataclass
class RedisReceiver:
    """A stream per channel, under a key prefix of the test's own."""

    url: str
    prefix: str
    client: Any

    def uri(self, channel: str) -> str:
        return f"{self.url}?stream={self.prefix}{channel}&maxlen=1000"

    async def received(self, channel: str) -> list[Received]:
        entries = await self.client.xrange(f"{self.prefix}{channel}")
        found = []
        for _id, fields in entries:
            text = {k.decode(): v.decode() for k, v in fields.items()}
            body = json.loads(text.pop("body"))
            found.append((body, text))
        return found


@asynccontextmanager
async def redis_receiver(url: str) -> AsyncIterator[RedisReceiver]:
    import redis.asyncio as aioredis

    from tests.support.redis import redis_prefix

    async with redis_prefix(url) as prefix:
        client = aioredis.Redis.from_url(url)
        try:
            yield RedisReceiver(url, prefix, client)
        finally:
            await client.aclose()


# ---------------------------------------------------------------- SQS and SNS (moto)


@dataclass
class SqsReceiver:
    """A queue per channel on moto's server. The channels name their queue each in one of
    the forms a destination takes: ``success`` by its URL (``sqs://HOST/ACCOUNT/NAME``),
    ``failure`` by its ARN, any other by its bare name (``sqs://NAME``)."""

    server: MotoServer
    queues: dict[str, SqsQueue] = field(default_factory=dict)
    got: dict[str, list[Received]] = field(default_factory=dict)
    raw: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Each message as ``ReceiveMessage`` gave it, every attribute included."""

    def uri(self, channel: str) -> str:
        queue = self.queues[channel]
        if channel == "success":
            return queue.source_uri
        if channel == "failure":
            return queue.arn
        return f"sqs://{queue.name}"

    async def received(self, channel: str) -> list[Received]:
        got = self.got.setdefault(channel, [])
        for message in await receive_all(self.server, self.queues[channel].url):
            self.raw.setdefault(channel, []).append(message)
            got.append((json.loads(message["Body"]), attribute_values(message)))
        return list(got)


def attribute_values(message: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}


async def receive_all(server: MotoServer, url: str) -> list[dict[str, Any]]:
    """Every message waiting on the queue at ``url``, received and deleted."""
    from aiobotocore.session import get_session

    found: list[dict[str, Any]] = []
    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=server.endpoint
    ) as sqs:
        while True:
            answer = await sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            messages = answer.get("Messages", [])
            if not messages:
                return found
            found += messages
            for message in messages:
                await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@asynccontextmanager
async def sqs_receiver(
    server: MotoServer, channels: tuple[str, ...], *, fifo: bool = False
) -> AsyncIterator[SqsReceiver]:
    receiver = SqsReceiver(server)
    for channel in channels:
        receiver.queues[channel] = await make_queue(server, fifo=fifo)
    yield receiver


@dataclass
class SnsReceiver:
    """A topic per channel, each with a queue subscribed to it (raw message delivery, so
    that the queue holds the message itself and its attributes, as a subscriber sees them)."""

    queues: SqsReceiver
    topics: dict[str, str] = field(default_factory=dict)

    def uri(self, channel: str) -> str:
        return f"sns://{self.topics[channel]}"

    async def received(self, channel: str) -> list[Received]:
        return await self.queues.received(channel)


@asynccontextmanager
async def sns_receiver(
    server: MotoServer, channels: tuple[str, ...], *, fifo: bool = False
) -> AsyncIterator[SnsReceiver]:
    """A topic per channel (FIFO topics with FIFO queues, if ``fifo``)."""
    from aiobotocore.session import get_session

    async with sqs_receiver(server, channels, fifo=fifo) as queues:
        receiver = SnsReceiver(queues)
        async with get_session().create_client(
            "sns", region_name=REGION, endpoint_url=server.endpoint
        ) as sns:
            for channel in channels:
                name = f"eventwire-test-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
                attributes = {"FifoTopic": "true"} if fifo else {}
                arn = (await sns.create_topic(Name=name, Attributes=attributes))["TopicArn"]
                await sns.subscribe(
                    TopicArn=arn,
                    Protocol="sqs",
                    Endpoint=queues.queues[channel].arn,
                    Attributes={"RawMessageDelivery": "true"},
                )
                receiver.topics[channel] = arn
        yield receiver
