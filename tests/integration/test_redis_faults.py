"""The Redis queue under faults: a restarted Redis, and two installations on one Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.ids import new_id
from broker.models import NewInvocation
from broker.queue import InvocationQueue
from broker.store.engine import create_engine
from broker.store.schema import invocations
from tests import pipeline_handlers as handlers
from tests.support.private_redis import PrivateRedis
from tests.support.processes import children
from tests.support.redis import redis_prefix
from tests.support.service import running_service
from tests.support.services import REDIS_URL
from tests.support.stores import Store
from tests.support.waiting import eventually

ECHO = {"echo": {"handler": "tests.pipeline_handlers:note", "timeout": "3s"}}
SLOW = {"echo": {"handler": "tests.pipeline_handlers:slow_note", "timeout": "3s"}}


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    value = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}")
    yield value
    await value.dispose()


async def succeeded_ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(invocations.c.id).where(invocations.c.state == "succeeded")
        )
        return {id for (id,) in rows}


def batch(n: int, **payload: object) -> list[NewInvocation]:
    return [
        NewInvocation(id=new_id(), function="echo", payload=json.dumps(payload).encode())
        for _ in range(n)
    ]


async def enqueue_until_acknowledged(queue: InvocationQueue, items: list[NewInvocation]) -> None:
    """What a careful client does: retry a failed enqueue with the same invocations."""
    while True:
        try:
            await queue.enqueue(items)
            return
        except Exception:
            await asyncio.sleep(0.05)


async def test_restarted_redis_loses_no_acknowledged_invocation(
    private_redis: PrivateRedis, engine: AsyncEngine, tmp_path: Path
) -> None:
    handlers.reset()
    store = Store(str(engine.url), private_redis.url, "restart")
    acknowledged: list[str] = []
    async with running_service(store, SLOW, lease_grace="1s", concurrency=4) as service:
        assert service.dispatcher is not None
        queue = service.dispatcher.queue

        async def produce(batches: int) -> None:
            for _ in range(batches):
                items = batch(10, kind="restart")
                await enqueue_until_acknowledged(queue, items)
                acknowledged.extend(item.id for item in items)

        await produce(30)
        restarting = asyncio.create_task(asyncio.to_thread(private_redis.restart))
        while not restarting.done():  # while Redis goes down and comes back
            await produce(1)
        await restarting
        during = len(acknowledged) - 300
        await produce(30)
        expected = set(acknowledged)
        await eventually(
            lambda: expected <= handlers_ran(), 60, "every acknowledged invocation to run"
        )
        await eventually(
            lambda: _is_subset(expected, engine), 60, "every invocation to be recorded"
        )
    runs = Counter(call["id"] for call in handlers.calls if "id" in call)
    assert not [id for id, count in runs.items() if count > 1], "ran twice"
    assert during > 0, "nothing was enqueued while Redis restarted"
    assert len(handlers_ran()) == len(acknowledged)


def handlers_ran() -> set[str]:
    return {call["id"] for call in handlers.calls if "id" in call}


async def _is_subset(expected: set[str], engine: AsyncEngine) -> bool:
    return expected <= await succeeded_ids(engine)


async def test_two_prefixes_on_one_redis_do_not_see_each_other(tmp_path: Path) -> None:
    handlers.reset()
    async with redis_prefix() as a_prefix, redis_prefix() as b_prefix:
        a = Store(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", REDIS_URL, a_prefix)
        b = Store(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", REDIS_URL, b_prefix)
        a_engine, b_engine = create_engine(a.database_url), create_engine(b.database_url)
        try:
            async with running_service(a, ECHO) as sa, running_service(b, ECHO) as sb:
                assert sa.dispatcher is not None and sb.dispatcher is not None
                a_items, b_items = batch(20, who="a"), batch(20, who="b")
                await sa.dispatcher.queue.enqueue(a_items)
                await sb.dispatcher.queue.enqueue(b_items)
                a_ids, b_ids = {i.id for i in a_items}, {i.id for i in b_items}
                await eventually(lambda: _is_subset(a_ids, a_engine), 30, "a's invocations")
                await eventually(lambda: _is_subset(b_ids, b_engine), 30, "b's invocations")
            assert await succeeded_ids(a_engine) == a_ids
            assert await succeeded_ids(b_engine) == b_ids
        finally:
            await a_engine.dispose()
            await b_engine.dispose()


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[tuple[Store, AsyncEngine]]:
    """A Redis queue under a fresh prefix and its history in one SQLite file: what two
    services on one machine share."""
    handlers.reset()
    async with redis_prefix() as prefix:
        store = Store(f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}", REDIS_URL, prefix)
        engine = create_engine(store.database_url)
        try:
            yield store, engine
        finally:
            await engine.dispose()


async def test_two_serve_processes_share_one_queue(shared: tuple[Store, AsyncEngine]) -> None:
    store, engine = shared
    async with (
        running_service(store, SLOW, concurrency=4) as first,
        running_service(store, SLOW, concurrency=4) as second,
    ):
        assert first.dispatcher is not None and second.dispatcher is not None
        items = batch(300, who="both")
        await first.dispatcher.queue.enqueue(items)
        ids = {i.id for i in items}
        await eventually(lambda: _is_subset(ids, engine), 30, "every invocation")
        shares = (first.dispatcher.stats.succeeded, second.dispatcher.stats.succeeded)
    runs = Counter(call["id"] for call in handlers.calls)
    assert set(runs) == ids and set(runs.values()) == {1}
    assert min(shares) > 0, shares  # both took part


async def test_history_moves_to_another_process_when_the_writer_stops(
    shared: tuple[Store, AsyncEngine],
) -> None:
    store, engine = shared
    async with running_service(store, ECHO) as first:
        async with running_service(store, ECHO) as second:
            assert second.dispatcher is not None
            before = batch(10, when="before")
            await second.dispatcher.queue.enqueue(before)
            ids = {i.id for i in before}
            await eventually(lambda: _is_subset(ids, engine), 10, "the first batch")
        # Whichever of the two was writing the history, one of them stopped: the
        # other writes it now, well within the writer's 10 s lease.
        assert first.dispatcher is not None
        after = batch(10, when="after")
        await first.dispatcher.queue.enqueue(after)
        ids = {i.id for i in after}
        await eventually(lambda: _is_subset(ids, engine), 5, "the second batch")


HISTORY_PROCESS = "broker.history.process"


async def test_a_killed_history_process_is_started_again(shared: tuple[Store, AsyncEngine]) -> None:
    store, engine = shared
    async with running_service(store, ECHO) as s:
        assert s.dispatcher is not None
        (first,) = await eventually(lambda: children(os.getpid(), HISTORY_PROCESS))
        os.kill(first, signal.SIGKILL)
        items = batch(20, when="after the kill")
        await s.dispatcher.queue.enqueue(items)
        ids = {i.id for i in items}
        await eventually(lambda: _is_subset(ids, engine), 15, "history from a new writer")
        (second,) = children(os.getpid(), HISTORY_PROCESS)
        assert second != first
