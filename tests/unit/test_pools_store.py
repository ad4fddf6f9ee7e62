"""Pool figures, recent durations and function logs as the CLI reads them, on both SQL stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.errors import NotFoundError
from broker.functions.delivery import served_functions
from broker.loading import parse_config
from broker.observability.pools import PoolStats
from broker.store.function_logs import function_logs
from broker.store.history import register_functions
from broker.store.pools import (
    FRESH_S,
    forget_pools,
    pool_figures,
    publish_pools,
    recent_durations,
)
from tests.unit.test_history import add_attempt, add_invocation, engine

__all__ = ["engine"]  # the fixture, on SQLite and PostgreSQL

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def test_figures_add_up_the_processes_that_published_lately(engine: AsyncEngine) -> None:
    await publish_pools(engine, "a:1", {"resize": PoolStats(2, 1, 0, 3, 40.0)}, NOW)
    await publish_pools(engine, "b:2", {"resize": PoolStats(1, 0, 1, 2, 50.0)}, NOW)
    await publish_pools(
        engine, "gone:3", {"resize": PoolStats(5, 5, 5, 5)}, NOW - timedelta(seconds=FRESH_S + 1)
    )
    figures = await pool_figures(engine, NOW)
    assert figures["resize"] == PoolStats(3, 1, 1, 5, 40.0)

    await publish_pools(engine, "a:1", {"resize": PoolStats(0, 2, 0, 4, 40.0)}, NOW)  # an update
    await forget_pools(engine, "b:2")
    assert (await pool_figures(engine, NOW))["resize"] == PoolStats(0, 2, 0, 4, 40.0)


async def test_durations_are_percentiles_of_the_latest_attempts(engine: AsyncEngine) -> None:
    invocation = await add_invocation(engine, function="resize")
    for number in range(1, 101):
        await add_attempt(engine, invocation, number, duration_ms=float(number))
    found = await recent_durations(engine, ["resize", "idle"], limit=50)
    assert (found["resize"].count, found["resize"].p50_ms, found["resize"].p99_ms) == (50, 75, 100)
    assert found["idle"].p50_ms is None


async def test_logs_are_oldest_first_and_followable(engine: AsyncEngine) -> None:
    config = parse_config({"functions": {"resize": {"handler": "m:f"}}})
    await register_functions(engine, served_functions(config), NOW)
    invocation = await add_invocation(engine, function="resize", request_id="req-1")
    await add_attempt(engine, invocation, 1, log_excerpt="first\nsecond")
    await add_attempt(engine, invocation, 2, log_excerpt=None)  # printed nothing
    await add_attempt(engine, invocation, 3, log_excerpt="third")
    entries = await function_logs(engine, "resize", limit=10)
    assert [(e.attempt, e.request_id, e.lines()) for e in entries] == [
        (1, "req-1", ["first", "second"]),
        (3, "req-1", ["third"]),
    ]
    assert [e.text for e in await function_logs(engine, "resize", limit=1)] == ["third"]
    assert await function_logs(engine, "resize", after_seq=entries[-1].seq) == []
    with pytest.raises(NotFoundError, match="no function nope"):
        await function_logs(engine, "nope")
