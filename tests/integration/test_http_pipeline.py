"""An http function through the whole service: a throttled endpoint is retried after Retry-After."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import func, select

from broker.config.models import Limits
from broker.functions.invoking import submit
from broker.models import State
from broker.store.engine import create_engine
from broker.store.schema import attempts, invocations
from tests.support.service import running_service
from tests.support.stores import BACKENDS, database_url
from tests.support.waiting import eventually


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with database_url(request.param, tmp_path) as value:
        yield value


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, list[bytes]]]:
    """Answers the first POST with 429 and ``Retry-After: 1``, then with 200."""
    seen: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(await request.read())
        if len(seen) == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.json_response({"stored": len(seen)})

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", seen
    finally:
        await runner.cleanup()


async def test_a_throttled_endpoint_is_retried_after_retry_after(
    url: str, endpoint: tuple[str, list[bytes]]
) -> None:
    hook, seen = endpoint
    engine = create_engine(url)
    functions = {"webhook": {"invoker": "http", "url": hook, "timeout": "2s"}}
    try:
        async with running_service(url, functions) as service:
            assert service.dispatcher is not None
            invocation = await submit(
                engine,
                service.dispatcher.queue,
                "webhook",
                b'{"order": 1}',
                sync=False,
                limits=Limits(),
            )

            async def finished() -> bool:
                async with engine.connect() as conn:
                    row = (
                        await conn.execute(
                            select(invocations).where(invocations.c.id == invocation)
                        )
                    ).one()
                return State(row.state).terminal

            await eventually(finished, 15, "the retried invocation to finish")
        async with engine.connect() as conn:
            row = (
                await conn.execute(select(invocations).where(invocations.c.id == invocation))
            ).one()
            tries = list(
                await conn.execute(
                    select(attempts)
                    .where(attempts.c.invocation_id == invocation)
                    .order_by(attempts.c.number)
                )
            )
    finally:
        await engine.dispose()
    assert (row.state, row.function_errors, row.system_errors) == ("succeeded", 0, 1)
    assert json.loads(row.result) == {"stored": 2}
    assert [t.status for t in tries] == ["system_error", "success"]
    assert tries[0].error_type == "Throttled"
    assert (tries[1].started_at - tries[0].started_at).total_seconds() >= 1.0
    assert seen == [b'{"order": 1}', b'{"order": 1}']


async def test_a_functions_concurrency_caps_what_one_process_leases(url: str) -> None:
    """``concurrency: 2`` on an http function: never more than two requests at once, and
    the rest wait in the queue (not in the invoker, where their timeout would run)."""
    in_flight, peak, done = 0, 0, 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal in_flight, peak, done
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.25)  # the endpoint's work
        in_flight -= 1
        done += 1
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/slow", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook = f"http://127.0.0.1:{runner.addresses[0][1]}/slow"
    engine = create_engine(url)
    functions = {"slow": {"invoker": "http", "url": hook, "timeout": "1s", "concurrency": 2}}
    try:
        async with running_service(url, functions, concurrency=16) as service:
            assert service.dispatcher is not None
            for n in range(10):
                await submit(
                    engine,
                    service.dispatcher.queue,
                    "slow",
                    json.dumps({"n": n}).encode(),
                    sync=False,
                    limits=Limits(),
                )

            async def all_succeeded() -> bool:
                async with engine.connect() as conn:
                    count = await conn.scalar(
                        select(func.count()).where(invocations.c.state == "succeeded")
                    )
                return count == 10

            await eventually(all_succeeded, 20, "every invocation to succeed")
    finally:
        await engine.dispose()
        await runner.cleanup()
    assert peak == 2
    # Each ran once: none waited out its 1 s timeout behind the others (10 × 0.25 s / 2).
    assert done == 10
