"""Payloads are checked before anything is written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config.models import Limits
from broker.errors import PayloadError, UnknownFunctionError
from broker.functions.delivery import served_functions
from broker.functions.invoking import submit
from broker.loading import parse_config
from broker.queue.sqlite import SqliteQueue
from broker.store.history import register_functions
from broker.store.schema import invocations
from tests.support.stores import migrated_engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine("sqlite", tmp_path) as value:
        config = parse_config({"functions": {"f": {"handler": "m:f"}}})
        await register_functions(value, served_functions(config), datetime.now(UTC))
        yield value


async def count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(invocations)) or 0)


async def test_not_json_is_rejected_and_nothing_written(engine: AsyncEngine) -> None:
    with pytest.raises(PayloadError, match="payload is not valid JSON"):
        await submit(engine, SqliteQueue(engine), "f", b"{nope", sync=False, limits=Limits())
    assert await count(engine) == 0


async def test_too_large_is_rejected_and_nothing_written(engine: AsyncEngine) -> None:
    payload = b'"' + b"x" * (256 * 1024) + b'"'
    with pytest.raises(PayloadError, match="limit for asynchronous invocations is 262,144 bytes"):
        await submit(engine, SqliteQueue(engine), "f", payload, sync=False, limits=Limits())
    assert await count(engine) == 0
    # The synchronous limit is larger (6 MB), as in Lambda.
    await submit(engine, SqliteQueue(engine), "f", payload, sync=True, limits=Limits())
    assert await count(engine) == 1


async def test_unknown_function_lists_the_known_ones(engine: AsyncEngine) -> None:
    with pytest.raises(UnknownFunctionError, match="unknown function 'g'; registered functions: f"):
        await submit(engine, SqliteQueue(engine), "g", b"{}", sync=False, limits=Limits())
    assert await count(engine) == 0
