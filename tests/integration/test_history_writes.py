"""History rows written in bulk (by the Redis queue's history writer) on every SQL store.

The writes must be idempotent — a batch written twice, or an old event
replayed after a newer one, leaves the tables as the newest events say.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.ids import new_id
from broker.models import (
    AttemptRecord,
    Condition,
    DeadLetter,
    NewInvocation,
    Origin,
    Settlement,
    State,
)
from broker.store.history_rows import Rows, enqueue_event, settle_event
from broker.store.history_writes import write_rows
from broker.store.schema import attempts, dead_letters, invocations
from tests.support.stores import BACKENDS, migrated_engine

T0 = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(request.param, tmp_path) as value:
        yield value


def enqueued(item: NewInvocation, at: datetime = T0) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(enqueue_event(item, at, at, at))
    return event


def settled(
    item: NewInvocation, number: int, state: State, at: datetime, **kw: Any
) -> dict[str, Any]:
    settlement = Settlement(
        lease_token="t",
        invocation_id=item.id,
        state=state,
        attempt=AttemptRecord(
            number,
            at,
            1.5,
            "success" if state is State.SUCCEEDED else "error",
            log_excerpt=f"attempt {number}\n",
        ),
        **kw,
    )
    event: dict[str, Any] = orjson.loads(settle_event(settlement, at))
    return event


async def write(engine: AsyncEngine, *events: dict[str, Any], keep: bool = True) -> None:
    """``keep``: the writer's ``keep_succeeded_payloads``."""
    rows = Rows()
    for event in events:
        rows.add(event)
    if not keep:
        rows.drop_succeeded_payloads()
    async with engine.begin() as conn:
        await write_rows(conn, rows)


async def stored(engine: AsyncEngine, id: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(invocations).where(invocations.c.id == id))).one()


async def count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


def item(**kw: Any) -> NewInvocation:
    kw.setdefault("payload", b'{"n": 1}')
    return NewInvocation(id=new_id(), function="f", **kw)


async def test_one_batch_writes_the_final_state_and_every_attempt(engine: AsyncEngine) -> None:
    a = item(payload=b"\xff\xfe not utf-8", lane="L", source={"topic": "t"})
    retry_at = T0 + timedelta(seconds=5)
    await write(
        engine,
        enqueued(a),
        settled(a, 1, State.PENDING, T0, retry_at=retry_at, function_errors=1),
        settled(a, 2, State.SUCCEEDED, T0 + timedelta(seconds=6), result=b'"ok"'),
    )
    row = await stored(engine, a.id)
    assert (row.state, row.attempts, row.function_errors) == ("succeeded", 2, 0)
    assert row.payload == b"\xff\xfe not utf-8"
    assert (row.lane, row.source, row.result) == ("L", {"topic": "t"}, b'"ok"')
    assert row.first_enqueued_at == T0
    assert row.finished_at == T0 + timedelta(seconds=6)
    async with engine.connect() as conn:
        logs = (
            await conn.execute(select(attempts.c.log_excerpt).order_by(attempts.c.number))
        ).all()
    assert [log for (log,) in logs] == ["attempt 1\n", "attempt 2\n"]


async def test_a_batch_written_twice_is_written_once(engine: AsyncEngine) -> None:
    a, b = item(), item()
    letter = DeadLetter(
        id=new_id(),
        invocation_id=b.id,
        request_id=b.id,
        function="f",
        payload=b"{}",
        origin=Origin.API,
        condition=Condition.RETRIES_EXHAUSTED,
        error_type="E",
        error_message="m",
        attempts=1,
        first_enqueued_at=T0,
        dead_at=T0,
    )
    batch = [
        enqueued(a),
        enqueued(b),
        settled(a, 1, State.SUCCEEDED, T0),
        settled(b, 1, State.FAILED, T0, dead_letter=letter),
    ]
    await write(engine, *batch)
    await write(engine, *batch)
    assert await count(engine, invocations) == 2
    assert await count(engine, attempts) == 2
    assert await count(engine, dead_letters) == 1


async def test_states_of_earlier_invocations_never_go_back(engine: AsyncEngine) -> None:
    a = item()
    await write(engine, enqueued(a))
    retry = settled(a, 1, State.PENDING, T0, retry_at=T0 + timedelta(seconds=9))
    done = settled(a, 2, State.SUCCEEDED, T0 + timedelta(seconds=10), result=b"1")
    await write(engine, retry, done)
    row = await stored(engine, a.id)
    assert (row.state, row.attempts, row.available_at) == (
        "succeeded",
        2,
        T0 + timedelta(seconds=9),
    )
    await write(engine, retry)  # replayed after the newer one
    await write(engine, enqueued(a))
    row = await stored(engine, a.id)
    assert (row.state, row.attempts, row.result) == ("succeeded", 2, b"1")


async def test_a_replayed_batch_with_later_events_folded_in_keeps_the_later_state(
    engine: AsyncEngine,
) -> None:
    """A writer died after its commit, before moving the cursor: the next one reads the
    same enqueue again, now together with the settlement that followed."""
    a = item()
    await write(engine, enqueued(a))
    await write(engine, enqueued(a), settled(a, 1, State.SUCCEEDED, T0, result=b"1"))
    row = await stored(engine, a.id)
    assert (row.state, row.attempts, row.result) == ("succeeded", 1, b"1")


async def test_a_key_reused_after_the_queues_window_keeps_both_invocations(
    engine: AsyncEngine,
) -> None:
    first, second = item(idempotency_key="k"), item(idempotency_key="k")
    await write(engine, enqueued(first))
    await write(engine, enqueued(second, T0 + timedelta(days=2)))
    assert (await stored(engine, first.id)).idempotency_key == "k"
    assert (await stored(engine, second.id)).idempotency_key is None


async def test_a_retry_that_replaces_the_payload_is_what_the_history_shows(
    engine: AsyncEngine,
) -> None:
    """A mapping batch retried in part (or bisected) runs as the same invocation with a
    smaller payload: the row shows the payload it last ran with."""
    a = item(payload=b'{"records": [1, 2, 3]}', source={"mapping": "m"})
    await write(engine, enqueued(a))
    smaller = settled(
        a,
        1,
        State.PENDING,
        T0,
        retry_at=T0 + timedelta(seconds=1),
        payload=b'{"records": [2, 3]}',
        source={"mapping": "m", "from": 2},
    )
    done = settled(a, 2, State.SUCCEEDED, T0 + timedelta(seconds=2))
    await write(engine, smaller, done)
    row = await stored(engine, a.id)
    assert (row.state, row.payload, row.source) == (
        "succeeded",
        b'{"records": [2, 3]}',
        {"mapping": "m", "from": 2},
    )


async def test_succeeded_payloads_not_kept_are_written_empty(engine: AsyncEngine) -> None:
    """With ``keep_succeeded_payloads`` off, however the row of an invocation that succeeds
    is written (inserted, updated, or a replayed insert), it holds an empty payload."""
    at_once, later, replayed, failed, retried = (item() for _ in range(5))
    await write(engine, enqueued(later), enqueued(replayed), keep=False)
    await write(
        engine,
        enqueued(at_once),
        settled(at_once, 1, State.SUCCEEDED, T0),
        settled(later, 1, State.SUCCEEDED, T0, payload=b'{"part": 1}'),
        enqueued(replayed),  # a writer died before moving its cursor: read again
        settled(replayed, 1, State.SUCCEEDED, T0),
        enqueued(failed),
        settled(failed, 1, State.FAILED, T0),
        enqueued(retried),
        settled(retried, 1, State.PENDING, T0, retry_at=T0 + timedelta(seconds=1)),
        keep=False,
    )
    payloads = {x.id: (await stored(engine, x.id)).payload for x in (at_once, later, replayed)}
    assert payloads == dict.fromkeys(payloads, b"")
    assert (await stored(engine, failed.id)).payload == failed.payload
    assert (await stored(engine, retried.id)).payload == retried.payload


async def test_on_sqlite_rows_are_stored_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    """The SQLite writes bind through the driver; a row inserted through SQLAlchemy's types
    from what they wrote holds the very same values (times, JSON, booleans as text and
    numbers the queries compare)."""
    async with migrated_engine("sqlite", tmp_path) as engine:
        a = item(source={"topic": "t", "n": [1, None]}, lane="L", idempotency_key="k")
        failed = T0 + timedelta(microseconds=1)
        await write(
            engine,
            enqueued(a),
            settled(a, 1, State.PENDING, T0, retry_at=T0.replace(microsecond=0)),
            settled(a, 2, State.FAILED, failed, error_type="E", error_message="m"),
        )
        twin = new_id()
        async with engine.begin() as conn:
            row = (await conn.execute(select(invocations).where(invocations.c.id == a.id))).one()
            copy = {**row._asdict(), "id": twin, "idempotency_key": "k2"}
            del copy["seq"]
            await conn.execute(invocations.insert().values(copy))
            for attempt in (await conn.execute(select(attempts))).all():
                copy = {**attempt._asdict(), "invocation_id": twin}
                del copy["seq"]
                await conn.execute(attempts.insert().values(copy))
            raw = {
                table: [
                    dict(r._mapping)
                    for r in await conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY seq")
                ]
                for table in ("invocations", "attempts")
            }
    written, copied = (
        {k: v for k, v in r.items() if k not in ("seq", "id")} for r in raw["invocations"]
    )
    assert (written.pop("idempotency_key"), copied.pop("idempotency_key")) == ("k", "k2")
    assert written == copied
    assert written["finished_at"] == "2026-11-24 12:00:00.123457"
    assert written["available_at"] == "2026-11-24 12:00:00.000000"
    attempt_rows = [
        {k: v for k, v in r.items() if k not in ("seq", "invocation_id")} for r in raw["attempts"]
    ]
    assert attempt_rows[:2] == attempt_rows[2:]
