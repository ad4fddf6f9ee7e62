"""``kill -9`` of ``eventwire serve`` holding 100 leases loses nothing.

The killed process's leases expire (timeout + grace), a new ``serve`` leases
the invocations again and runs them; every acknowledged invocation finishes,
on every queue backend.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker.config.settings import Settings
from broker.ids import new_id
from broker.models import NewInvocation
from broker.queue import open_queue
from broker.store.engine import create_engine
from broker.store.schema import invocations
from tests.support.processes import Serve, clean_env, eventwire, wait_for
from tests.support.stores import QUEUES, Store, store_for
from tests.support.waiting import eventually

HELD = 100
QUEUED = 20
CONFIG = """
functions:
  hang:
    handler: tests.process_handlers:ahang_once
    timeout: 3s
  mark:
    handler: tests.process_handlers:mark
    timeout: 3s
"""


@pytest.fixture(params=QUEUES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with store_for(request.param, tmp_path) as value:
        yield value


async def enqueue(store: Store, function: str, payloads: list[dict[str, object]]) -> list[str]:
    """Enqueue as a client process would, on its own connections."""
    engine = create_engine(store.database_url)
    try:
        async with open_queue(Settings(**store.settings()), engine) as queue:
            items = [
                NewInvocation(id=new_id(), function=function, payload=json.dumps(p).encode())
                for p in payloads
            ]
            await queue.enqueue(items)
    finally:
        await engine.dispose()
    return [item.id for item in items]


async def succeeded(store: Store, ids: list[str], attempts: int | None = None) -> bool:
    """Every one of ``ids`` succeeded (after exactly ``attempts`` attempts, when given)."""
    engine = create_engine(store.database_url)
    i = invocations.c
    query = select(func.count()).where(i.id.in_(ids), i.state == "succeeded")
    if attempts is not None:
        query = query.where(i.attempts == attempts)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(query) == len(ids)
    finally:
        await engine.dispose()


async def test_killed_dispatcher_holding_100_leases_loses_nothing(
    store: Store, tmp_path: Path
) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(**store.env(), EVENTWIRE_LEASE_GRACE="1s", EVENTWIRE_CONCURRENCY="128")
    assert eventwire("migrate", env=env).returncode == 0

    first = Serve(config, env, tmp_path / "serve-1.log")
    first.wait_serving()
    started = tmp_path / "started"
    started.mkdir()
    hung = await enqueue(store, "hang", [{"started": str(started / str(n))} for n in range(HELD)])
    wait_for(lambda: len(list(started.iterdir())) == HELD, 30, f"{HELD} invocations to start")
    runs = tmp_path / "runs.log"
    marked = await enqueue(store, "mark", [{"id": n, "log": str(runs)} for n in range(QUEUED)])

    first.kill()
    second = Serve(config, env, tmp_path / "serve-2.log")
    try:
        second.wait_serving()
        # The killed attempt and the one that finished.
        await eventually(lambda: succeeded(store, hung, attempts=2), 30, "the held invocations")
        await eventually(lambda: succeeded(store, marked), 30, "every queued invocation")
    finally:
        assert second.stop() == 0, second.log()

    # None lost. One the killed process had started may have run twice: at least once,
    # as in Lambda.
    assert sorted(map(int, set(runs.read_text().split()))) == list(range(QUEUED))
