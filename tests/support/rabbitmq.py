"""RabbitMQ for tests: the local server, a fresh queue per test, deleted afterwards.

``rabbitmq_queue`` yields a :class:`RabbitQueue` (the server URL and a unique
queue name, declared durable); the queue is deleted after the test. Outside
CI an unreachable server skips the test with the reason; in CI it fails it.

Use it in a test module with ``from tests.support.rabbitmq import rabbitmq_queue  # noqa: F401``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.services import require

RABBITMQ_URL = os.environ.get("EVENTWIRE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


@dataclass(frozen=True, slots=True)
class RabbitQueue:
    url: str
    name: str

    @property
    def source_uri(self) -> str:
        """The queue as a mapping's ``source`` (``amqp://…/%2F?queue=NAME``)."""
        parts = urlsplit(self.url)
        path = parts.path if parts.path not in ("", "/") else "/%2F"
        return urlunsplit(parts._replace(path=path, query=f"queue={self.name}"))


@pytest.fixture
async def rabbitmq_queue() -> AsyncIterator[RabbitQueue]:
    require(RABBITMQ_URL, 5672, "RabbitMQ")
    import aio_pika

    name = f"eventwire-test-{uuid.uuid4().hex[:12]}"
    connection = await aio_pika.connect_robust(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)
        yield RabbitQueue(RABBITMQ_URL, name)
        channel = await connection.channel()
        await channel.queue_delete(name)
    finally:
        await connection.close()
