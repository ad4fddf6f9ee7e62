"""PostgreSQL restarting under load: the service reconnects and loses no enqueued invocation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from broker.ids import new_id
from broker.models import NewInvocation
from broker.queue.postgres import PostgresQueue
from broker.store.engine import create_engine
from broker.store.schema import invocations
from tests import pipeline_handlers as handlers
from tests.support.private_postgres import PrivatePostgres
from tests.support.service import running_service
from tests.support.stores import migrate
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def server() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres().init()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


async def test_restart_under_load_loses_nothing(server: PrivatePostgres) -> None:
    handlers.reset()
    client = create_engine(server.url)
    await migrate(client)
    queue = PostgresQueue(client)
    acknowledged: list[str] = []

    async def enqueue_rounds(rounds: int) -> None:
        for r in range(rounds):
            batch = [
                NewInvocation(
                    id=new_id(),
                    function="echo",
                    payload=json.dumps(f"{r}-{i}").encode(),
                    idempotency_key=f"{r}-{i}",
                )
                for i in range(10)
            ]
            while True:  # a client retries an enqueue that got no answer; the keys dedupe it
                try:
                    await queue.enqueue(batch)
                    break
                except (OperationalError, InterfaceError, DBAPIError, OSError):
                    await asyncio.sleep(0.05)
            acknowledged.extend(f"{r}-{i}" for i in range(10))

    try:
        async with running_service(
            server.url,
            {"echo": {"handler": "tests.pipeline_handlers:echo"}},
            concurrency=16,
            lease_grace="2s",
        ):
            load = asyncio.create_task(enqueue_rounds(60))
            await eventually(lambda: len(handlers.calls) >= 50)  # restart in mid-load
            await asyncio.to_thread(server.restart)
            await load
            await eventually(
                lambda: set(handlers.calls) >= set(acknowledged),
                60,
                "every acknowledged invocation to run",
            )

            async def succeeded() -> bool:  # a handler returns a moment before its settle commits
                async with client.connect() as conn:
                    done = await conn.scalar(
                        select(func.count()).where(invocations.c.state == "succeeded")
                    )
                return done == 600

            await eventually(succeeded, 30, "every invocation to be settled")
    finally:
        await queue.close()
        await client.dispose()
    assert len(acknowledged) == 600
    assert set(handlers.calls) == set(acknowledged)
