"""Redis Streams for tests: the local server and a fresh stream key per test, deleted after.

``redis_stream`` yields a :class:`RedisStream` (the server URL and a unique
stream key); the key (entries, consumer groups) is deleted after the test.
Outside CI an unreachable server skips the test with the reason; in CI it
fails it.

Use it in a test module with ``from tests.support.redis_streams import redis_stream  # noqa: F401``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.support.services import REDIS_URL, require


@dataclass(frozen=True, slots=True)
class RedisStream:
    url: str
    key: str

    def source_uri(self, group: str = "eventwire") -> str:
        """The stream as a mapping's ``source`` (``redis://…?stream=KEY&group=GROUP``)."""
        return f"{self.url}?stream={self.key}&group={group}"


@pytest.fixture
async def redis_stream() -> AsyncIterator[RedisStream]:
    require(REDIS_URL, 6379, "Redis")
    from redis.asyncio import Redis

    key = f"eventwire-test-{uuid.uuid4().hex[:12]}"
    client = Redis.from_url(REDIS_URL)
    try:
        yield RedisStream(REDIS_URL, key)
    finally:
        await client.delete(key)
        await client.aclose()
