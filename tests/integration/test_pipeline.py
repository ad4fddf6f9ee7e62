"""The whole pipeline in one process: enqueue → dispatcher → python invoker → settle.

Runs on every SQL store (SQLite file, fresh PostgreSQL database).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config.models import Limits
from broker.dispatch import dispatcher
from broker.functions.invoker import INVOKERS
from broker.functions.invoking import submit, wait_finished
from broker.ids import new_id
from broker.models import NewInvocation, State
from broker.service import Service
from broker.store.engine import create_engine
from broker.store.schema import attempts, dead_letters, invocations
from tests import pipeline_handlers as handlers
from tests.support.service import running_service
from tests.support.stores import QUEUES, Store, store_for
from tests.support.waiting import eventually

FAST_RETRY = {"max_attempts": 3, "backoff": {"initial": "50ms", "multiplier": 2, "jitter": 0}}


@pytest.fixture(params=QUEUES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    handlers.reset()
    async with store_for(request.param, tmp_path) as value:
        yield value


@pytest.fixture
async def engine(store: Store) -> AsyncIterator[AsyncEngine]:
    value = create_engine(store.database_url)
    yield value
    await value.dispose()


async def row(engine: AsyncEngine, invocation_id: str) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(select(invocations).where(invocations.c.id == invocation_id))
        ).one()


async def finished_state(engine: AsyncEngine, invocation_id: str) -> State | None:
    """The state once finished and recorded in the SQL history (None before)."""
    async with engine.connect() as conn:
        found = (
            await conn.execute(select(invocations.c.state).where(invocations.c.id == invocation_id))
        ).scalar_one_or_none()
    state = State(found) if found is not None else None
    return state if state is not None and state.terminal else None


async def invoke_async(service: Service, engine: AsyncEngine, function: str, payload: Any) -> str:
    assert service.dispatcher is not None
    return await submit(
        engine,
        service.dispatcher.queue,
        function,
        json.dumps(payload).encode(),
        sync=False,
        limits=Limits(),
    )


async def test_sync_invoke_returns_the_result(store: Store, engine: AsyncEngine) -> None:
    async with running_service(store, {"echo": {"handler": "tests.pipeline_handlers:echo"}}) as s:
        assert s.dispatcher is not None
        invocation_id = await submit(
            engine, s.dispatcher.queue, "echo", b'{"name": "x"}', sync=True, limits=Limits()
        )
        finished = await wait_finished(engine, invocation_id, 10)
    assert finished is not None and finished.state is State.SUCCEEDED
    assert json.loads(finished.result or b"") == {"name": "x"}


async def test_success_sends_the_invocation_record_to_on_success(
    store: Store, engine: AsyncEngine
) -> None:
    functions = {
        "echo": {"handler": "tests.pipeline_handlers:echo", "on_success": "function:record"},
        "record": {"handler": "tests.pipeline_handlers:record"},
    }
    async with running_service(store, functions) as s:
        invocation_id = await invoke_async(s, engine, "echo", {"n": 7})
        await eventually(lambda: handlers.records)
    [record] = handlers.records
    assert record["requestContext"]["requestId"] == invocation_id
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestPayload"] == {"n": 7}
    assert record["responseContext"]["statusCode"] == 200
    assert record["responsePayload"] == {"n": 7}
    async with engine.connect() as conn:
        assert (await conn.execute(select(dead_letters))).all() == []


async def test_failures_are_retried_then_dead_lettered_with_a_record(
    store: Store, engine: AsyncEngine
) -> None:
    functions = {
        "fail": {
            "handler": "tests.pipeline_handlers:fail",
            "retry": FAST_RETRY,
            "on_failure": "function:record",
        },
        "record": {"handler": "tests.pipeline_handlers:record"},
    }
    async with running_service(store, functions) as s:
        invocation_id = await invoke_async(s, engine, "fail", {"n": 1})
        assert await eventually(lambda: finished_state(engine, invocation_id)) is State.FAILED
        await eventually(lambda: handlers.records)
    done = await row(engine, invocation_id)
    assert (done.attempts, done.function_errors, done.error_type) == (3, 3, "ValueError")
    assert len(handlers.calls) == 3
    async with engine.connect() as conn:
        tries = (
            await conn.execute(
                select(attempts.c.number, attempts.c.status)
                .where(attempts.c.invocation_id == invocation_id)
                .order_by(attempts.c.number)
            )
        ).all()
        [letter] = (await conn.execute(select(dead_letters))).all()
    assert [tuple(t) for t in tries] == [(1, "error"), (2, "error"), (3, "error")]
    assert (letter.invocation_id, letter.condition, letter.attempts) == (
        invocation_id,
        "RetriesExhausted",
        3,
    )
    [record] = handlers.records
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["requestId"] == invocation_id
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"] == {"n": 1}
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "ValueError"


async def test_retry_past_max_event_age_fails_at_once(store: Store, engine: AsyncEngine) -> None:
    retry = {"max_attempts": 3, "max_event_age": "60s", "backoff": {"initial": "60s"}}
    async with running_service(
        store, {"fail": {"handler": "tests.pipeline_handlers:fail", "retry": retry}}
    ) as s:
        invocation_id = await invoke_async(s, engine, "fail", {})
        assert await eventually(lambda: finished_state(engine, invocation_id)) is State.FAILED
    async with engine.connect() as conn:
        [letter] = (await conn.execute(select(dead_letters))).all()
    assert (letter.condition, letter.attempts) == ("EventAgeExceeded", 1)


async def test_expired_event_is_not_run(store: Store, engine: AsyncEngine) -> None:
    async with running_service(
        store,
        {"echo": {"handler": "tests.pipeline_handlers:echo", "retry": {"max_event_age": "1m"}}},
    ) as s:
        assert s.dispatcher is not None
        old = datetime.now(UTC) - timedelta(minutes=5)
        item = NewInvocation(id=new_id(), function="echo", payload=b"{}", first_enqueued_at=old)
        await s.dispatcher.queue.enqueue([item])
        assert await eventually(lambda: finished_state(engine, item.id)) is State.FAILED
    assert handlers.calls == []
    assert (await row(engine, item.id)).error_type == "EventAgeExceeded"


async def test_timeout_is_a_function_error(store: Store, engine: AsyncEngine) -> None:
    functions = {
        "sleepy": {
            "handler": "tests.pipeline_handlers:sleepy",
            "timeout": "200ms",
            "retry": {"max_attempts": 1},
        }
    }
    async with running_service(store, functions) as s:
        invocation_id = await invoke_async(s, engine, "sleepy", {"seconds": 30})
        assert await eventually(lambda: finished_state(engine, invocation_id)) is State.FAILED
    assert (await row(engine, invocation_id)).error_type == "Task.TimedOut"


async def test_an_invoker_that_hangs_past_the_deadline_times_out(
    store: Store, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(INVOKERS, "hanging", "tests.pipeline_handlers:HangingInvoker")
    monkeypatch.setattr(dispatcher, "INVOKER_GRACE_S", 0.2)
    functions = {"stuck": {"invoker": "hanging", "timeout": "1s", "retry": {"max_attempts": 1}}}
    async with running_service(store, functions) as s:
        invocation_id = await invoke_async(s, engine, "stuck", {})
        assert await eventually(lambda: finished_state(engine, invocation_id), 10) is State.FAILED
    assert (await row(engine, invocation_id)).error_type == "Task.TimedOut"


async def test_reserved_concurrency_limits_parallel_runs(store: Store, engine: AsyncEngine) -> None:
    functions = {"gate": {"handler": "tests.pipeline_handlers:gate", "reserved_concurrency": 2}}
    async with running_service(store, functions, concurrency=10) as s:
        ids = [await invoke_async(s, engine, "gate", {"i": i}) for i in range(6)]
        await eventually(lambda: handlers.max_active >= 2)
        handlers.release.set()
        for invocation_id in ids:
            await eventually(partial(finished_state, engine, invocation_id))
    assert handlers.max_active == 2
    assert len(handlers.calls) == 6


async def test_a_slow_settle_does_not_hold_the_slots(store: Store, engine: AsyncEngine) -> None:
    """A finished run frees its slot while its outcome is written (up to as many more)."""
    handlers.release.set()
    async with running_service(
        store, {"gate": {"handler": "tests.pipeline_handlers:gate"}}, concurrency=2
    ) as s:
        assert s.dispatcher is not None
        queue = s.dispatcher.queue
        settle, written = queue.settle, asyncio.Event()

        async def slow_settle(*args: Any, **kwargs: Any) -> Any:
            await written.wait()
            return await settle(*args, **kwargs)

        queue.settle = slow_settle  # type: ignore[method-assign]
        ids = [await invoke_async(s, engine, "gate", {"i": i}) for i in range(6)]
        # Two slots, nothing written yet: two runs, then two more in the freed slots.
        await eventually(lambda: len(handlers.calls) == 4)
        written.set()
        for invocation_id in ids:
            finished = await eventually(partial(finished_state, engine, invocation_id))
            assert finished is State.SUCCEEDED
    assert handlers.max_active <= 2
    assert sorted(c["i"] for c in handlers.calls) == list(range(6))


async def test_lane_runs_in_enqueue_order(store: Store, engine: AsyncEngine) -> None:
    async with running_service(
        store, {"echo": {"handler": "tests.pipeline_handlers:echo"}}, concurrency=8
    ) as s:
        assert s.dispatcher is not None
        items = [
            NewInvocation(id=new_id(), function="echo", payload=json.dumps(i).encode(), lane="L")
            for i in range(30)
        ]
        await s.dispatcher.queue.enqueue(items)
        await eventually(lambda: finished_state(engine, items[-1].id))
    assert handlers.calls == list(range(30))


async def test_a_lane_runs_its_next_without_a_lease_call(store: Store, engine: AsyncEngine) -> None:
    """The queue leases a lane's next invocation with its predecessor's settlement."""
    async with running_service(
        store, {"echo": {"handler": "tests.pipeline_handlers:echo"}}, concurrency=8
    ) as s:
        assert s.dispatcher is not None
        queue, leased = s.dispatcher.queue, []
        lease = queue.lease

        async def counted(*args: Any, **kwargs: Any) -> Any:
            got = await lease(*args, **kwargs)
            leased.extend(got)
            return got

        queue.lease = counted  # type: ignore[method-assign]
        items = [
            NewInvocation(id=new_id(), function="echo", payload=json.dumps(i).encode(), lane="L")
            for i in range(30)
        ]
        await queue.enqueue(items)
        await eventually(lambda: finished_state(engine, items[-1].id))
    assert handlers.calls == list(range(30))
    # The first is leased, the rest chained (a retry after a system fault goes back to the
    # lane's head, to be leased again).
    assert len(leased) <= 3, [(x.invocation.payload, x.invocation.attempts) for x in leased]


async def test_a_lease_chained_as_the_service_stops_is_given_back(
    store: Store, engine: AsyncEngine
) -> None:
    """Given back, not held until it expires: a restarted service runs the rest at once."""
    functions = {"echo": {"handler": "tests.pipeline_handlers:echo"}}
    items = [
        NewInvocation(id=new_id(), function="echo", payload=json.dumps(i).encode(), lane="L")
        for i in range(3)
    ]
    async with running_service(store, functions) as s:
        assert s.dispatcher is not None
        queue = s.dispatcher.queue
        settle = queue.settle

        async def stopping(*args: Any, **kwargs: Any) -> Any:
            s.stop()  # after the chain was asked for, before it is answered
            return await settle(*args, **kwargs)

        queue.settle = stopping  # type: ignore[method-assign]
        await queue.enqueue(items)
        await eventually(lambda: finished_state(engine, items[0].id))
    assert handlers.calls == [0]
    async with running_service(store, functions):  # leases last 33 s: this must not wait
        await eventually(lambda: finished_state(engine, items[-1].id), 10)
    assert handlers.calls == [0, 1, 2]


async def test_stop_lets_running_invocations_finish(store: Store, engine: AsyncEngine) -> None:
    functions = {"sleepy": {"handler": "tests.pipeline_handlers:sleepy", "timeout": "5s"}}
    async with running_service(store, functions, shutdown_grace="10s") as s:
        invocation_id = await invoke_async(s, engine, "sleepy", {"seconds": 0.3})
        await eventually(lambda: s.dispatcher is not None and s.dispatcher.running == 1)
    assert (await row(engine, invocation_id)).state == "succeeded"


async def test_stop_after_grace_gives_the_invocation_back(
    store: Store, engine: AsyncEngine
) -> None:
    functions = {"sleepy": {"handler": "tests.pipeline_handlers:sleepy", "timeout": "60s"}}
    async with running_service(store, functions, shutdown_grace="100ms") as s:
        invocation_id = await invoke_async(s, engine, "sleepy", {"seconds": 30})
        await eventually(lambda: s.dispatcher is not None and s.dispatcher.running == 1)
    released = await row(engine, invocation_id)
    assert (released.state, released.attempts, released.lease_token) == ("pending", 0, None)
