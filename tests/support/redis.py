"""Redis for tests: a key prefix of the test's own on the shared server, removed after."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from tests.support.services import REDIS_URL, require


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start : start + 1000])


@asynccontextmanager
async def redis_prefix(url: str = REDIS_URL) -> AsyncIterator[str]:
    """A fresh key prefix (``ewtest-<random>:``); every key under it is deleted after."""
    require(url, 6379, "Redis")
    prefix = f"ewtest-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        client = aioredis.Redis.from_url(url)
        try:
            await delete_prefix(client, prefix)
        finally:
            await client.aclose()
