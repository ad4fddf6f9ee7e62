"""The admin queries of ``broker.store.history`` on a migrated store (SQLite, and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from broker import ids
from broker.errors import NotFoundError, UsageError
from broker.functions.delivery import served_functions
from broker.loading import parse_config
from broker.models import Enqueued, NewInvocation, Origin, State
from broker.store import history
from broker.store.history import RedriveStatus
from broker.store.schema import attempts, dead_letters, functions, invocations
from tests.support.stores import migrated_engine

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(request.param, tmp_path) as engine:
        yield engine


async def add_invocation(
    engine: AsyncEngine,
    *,
    function: str = "f",
    state: State = State.PENDING,
    id: str | None = None,
    at: datetime = T0,
    **extra: Any,
) -> str:
    id = id or ids.new_id()
    row = {
        "id": id,
        "request_id": id,
        "function": function,
        "origin": Origin.API.value,
        "source": {},
        "sync": False,
        "payload": b'{"n": 1}',
        "state": state.value,
        "attempts": 0,
        "function_errors": 0,
        "system_errors": 0,
        "first_enqueued_at": at,
        "available_at": at,
        "updated_at": at,
        **extra,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(invocations), row)
    return id


async def add_attempt(engine: AsyncEngine, invocation_id: str, number: int, **extra: Any) -> None:
    row = {
        "invocation_id": invocation_id,
        "number": number,
        "started_at": T0 + timedelta(seconds=number),
        "duration_ms": 12.5,
        "status": "error",
        "error_type": "ValueError",
        "error_message": f"boom {number}",
        "error_trace": [f'  File "h.py", line {number}, in handler\n'],
        **extra,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(attempts), row)


async def add_dead_letter(
    engine: AsyncEngine,
    *,
    function: str = "f",
    dead_at: datetime = T0,
    id: str | None = None,
    payload: bytes = b'{"n": 1}',
    **extra: Any,
) -> str:
    id = id or ids.new_id()
    invocation_id = extra.pop("invocation_id", None) or ids.new_id()
    row = {
        "id": id,
        "invocation_id": invocation_id,
        "request_id": invocation_id,
        "function": function,
        "payload": payload,
        "origin": Origin.API.value,
        "source": {},
        "condition": "RetriesExhausted",
        "error_type": "ValueError",
        "error_message": "boom",
        "attempts": 3,
        "first_enqueued_at": dead_at - timedelta(minutes=5),
        "dead_at": dead_at,
        **extra,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(dead_letters), row)
    return id


class FakeQueue:
    """Records enqueues and, like every real backend, is idempotent by (function, key)."""

    def __init__(self) -> None:
        self.batches: list[list[NewInvocation]] = []
        self.by_key: dict[tuple[str, str | None], str] = {}

    async def enqueue(self, batch: Sequence[NewInvocation]) -> list[Enqueued]:
        self.batches.append(list(batch))
        answers = []
        for item in batch:
            key = (item.function, item.idempotency_key)
            if key in self.by_key:
                answers.append(Enqueued(self.by_key[key], False))
            else:
                self.by_key[key] = item.id
                answers.append(Enqueued(item.id, True))
        return answers

    @property
    def enqueued(self) -> list[NewInvocation]:
        return [item for batch in self.batches for item in batch]


# ---------------------------------------------------------------- functions


CONFIG = """
functions:
  a: {handler: "m:a", timeout: 10s, reserved_concurrency: 2}
  b: {handler: "m:b"}
"""


async def test_register_functions_upserts_and_deletes(engine: AsyncEngine) -> None:
    config = parse_config(yaml.safe_load(CONFIG))
    await history.register_functions(engine, served_functions(config), T0)
    async with engine.begin() as conn:
        await conn.execute(update(functions).where(functions.c.name == "a").values(throttles=7))

    changed = parse_config(
        {"functions": {"a": {"handler": "m:a2"}, "b": {"handler": "m:b"}, "c": {"handler": "m:c"}}}
    )
    await history.register_functions(engine, served_functions(changed), T0 + timedelta(hours=1))

    async with engine.connect() as conn:
        rows = {row.name: row for row in await conn.execute(select(functions))}
    assert sorted(rows) == ["a", "b", "c"]
    assert rows["a"].config["handler"] == "m:a2"
    assert rows["a"].config["timeout"] == 3.0  # dumped by alias
    assert rows["a"].config_hash == changed.functions["a"].config_hash()
    assert rows["a"].reserved_concurrency is None
    assert rows["a"].throttles == 7  # a counter, not configuration
    assert rows["a"].updated_at == T0 + timedelta(hours=1)
    assert rows["b"].updated_at == T0  # unchanged configuration is not rewritten

    await history.register_functions(engine, served_functions(parse_config({})), T0)
    assert await history.list_functions(engine) == []


async def test_list_functions_counts(engine: AsyncEngine) -> None:
    await history.register_functions(
        engine, served_functions(parse_config(yaml.safe_load(CONFIG))), T0
    )
    for state in (State.PENDING, State.PENDING, State.RUNNING, State.SUCCEEDED, State.FAILED):
        await add_invocation(engine, function="a", state=state)
    await add_invocation(engine, function="other", state=State.PENDING)
    await add_dead_letter(engine, function="a")
    await add_dead_letter(engine, function="a", redriven_at=T0, redriven_as=ids.new_id())

    rows = await history.list_functions(engine)

    assert [row.name for row in rows] == ["a", "b"]
    a, b = rows
    assert (a.pending, a.running, a.dead_letters, a.throttles) == (2, 1, 1, 0)
    assert (b.pending, b.running, b.dead_letters) == (0, 0, 0)
    assert a.timeout_s == 10.0 and a.reserved_concurrency == 2 and a.invoker == "python"
    assert a.updated_at == T0


# ---------------------------------------------------------------- invocations


async def test_list_invocations_newest_first_with_filters(engine: AsyncEngine) -> None:
    made = [
        await add_invocation(engine, function=f, state=s)
        for f, s in [
            ("f", State.PENDING),
            ("g", State.FAILED),
            ("f", State.FAILED),
            ("f", State.SUCCEEDED),
        ]
    ]

    rows = await history.list_invocations(engine)
    assert [row.id for row in rows] == made[::-1]
    assert rows[0].first_enqueued_at == T0 and rows[0].first_enqueued_at.tzinfo is not None

    failed_f = await history.list_invocations(engine, function="f", state=State.FAILED)
    assert [row.id for row in failed_f] == [made[2]]

    first_page = await history.list_invocations(engine, limit=2)
    assert [row.id for row in first_page] == [made[3], made[2]]
    next_page = await history.list_invocations(engine, limit=2, before_seq=first_page[-1].seq)
    assert [row.id for row in next_page] == [made[1], made[0]]


async def test_get_invocation_with_attempts_by_id_or_prefix(engine: AsyncEngine) -> None:
    id = await add_invocation(
        engine, state=State.FAILED, error_type="ValueError", error_message="boom 2", result=None
    )
    await add_attempt(engine, id, 2)
    await add_attempt(engine, id, 1, error_trace=None, status="timeout")
    await add_attempt(engine, ids.new_id(), 1)

    row, tries = await history.get_invocation(engine, id)
    assert row.id == id and row.state is State.FAILED and row.origin is Origin.API
    assert row.payload == b'{"n": 1}' and row.error_message == "boom 2"
    assert [(a.number, a.status) for a in tries] == [(1, "timeout"), (2, "error")]
    assert tries[0].error_trace == ()
    assert tries[1].error_trace == ('  File "h.py", line 2, in handler\n',)
    assert tries[1].started_at == T0 + timedelta(seconds=2)

    by_prefix, _ = await history.get_invocation(engine, id[:23])
    assert by_prefix.id == id


async def test_invocation_not_found_short_and_ambiguous(engine: AsyncEngine) -> None:
    a = await add_invocation(engine, id="0190aaaa-0000-7000-8000-000000000001")
    await add_invocation(engine, id="0190aaaa-0000-7000-8000-000000000002")

    with pytest.raises(NotFoundError, match=r"^no invocation 0190ffff$"):
        await history.get_invocation(engine, "0190ffff")
    with pytest.raises(NotFoundError, match=r"no invocation 0190 .*at least 8"):
        await history.get_invocation(engine, "0190")
    with pytest.raises(UsageError, match="ambiguous"):
        await history.get_invocation(engine, "0190aaaa-0000")
    assert (await history.get_invocation(engine, a[:-1] + "1"))[0].id == a
    with pytest.raises(NotFoundError):  # LIKE wildcards are taken literally
        await history.get_invocation(engine, "0190aaaa%")


# ---------------------------------------------------------------- dead letters


async def test_list_and_get_dead_letters(engine: AsyncEngine) -> None:
    invocation = await add_invocation(engine, state=State.FAILED)
    await add_attempt(engine, invocation, 1)
    old = await add_dead_letter(engine, dead_at=T0, invocation_id=invocation)
    new = await add_dead_letter(engine, dead_at=T0 + timedelta(minutes=1))
    other = await add_dead_letter(engine, function="g", dead_at=T0 + timedelta(minutes=2))
    done = await add_dead_letter(
        engine, dead_at=T0 + timedelta(minutes=3), redriven_at=T0, redriven_as=ids.new_id()
    )

    assert [d.id for d in await history.list_dead_letters(engine)] == [other, new, old]
    assert [d.id for d in await history.list_dead_letters(engine, function="f")] == [new, old]
    everything = await history.list_dead_letters(engine, include_redriven=True, limit=2)
    assert [d.id for d in everything] == [done, other]
    assert everything[0].redriven_at == T0

    letter, tries = await history.get_dead_letter(engine, old[:30])
    assert letter.id == old and letter.invocation_id == invocation
    assert letter.condition.value == "RetriesExhausted" and letter.dead_at == T0
    assert [a.number for a in tries] == [1]
    by_invocation, _ = await history.get_dead_letter(engine, invocation)  # what invoke printed
    assert by_invocation.id == old
    with pytest.raises(NotFoundError, match="no dead letter"):
        await history.get_dead_letter(engine, "ffffffff-ffff")

    assert await history.dead_letter_ids(engine, "f") == [old, new]
    assert await history.dead_letter_ids(engine, "f", before=T0 + timedelta(seconds=30)) == [old]
    assert await history.resolve_dead_letter_ids(engine, [new[:20], old, new]) == [new, old]
    with pytest.raises(UsageError, match="of function g, not f"):
        await history.resolve_dead_letter_ids(engine, [old, other], function="f")


async def test_redrive_enqueues_once_by_idempotency_key(engine: AsyncEngine) -> None:
    a = await add_dead_letter(engine, dead_at=T0, payload=b"\x00raw")
    b = await add_dead_letter(engine, function="g", dead_at=T0 + timedelta(seconds=1))
    queue = FakeQueue()
    later = T0 + timedelta(days=1)

    results = await history.redrive(engine, queue, [b, a, "missing"], later)

    assert [item.idempotency_key for item in queue.enqueued] == [f"redrive:{a}", f"redrive:{b}"]
    first = queue.enqueued[0]
    assert (first.function, first.payload, first.origin) == ("f", b"\x00raw", Origin.REDRIVE)
    letter_a, _ = await history.get_dead_letter(engine, a)
    assert first.source == {"dead_letter_id": a, "invocation_id": letter_a.invocation_id}
    assert [(r.dead_letter_id, r.status) for r in results] == [
        (b, RedriveStatus.REDRIVEN),
        (a, RedriveStatus.REDRIVEN),
        ("missing", RedriveStatus.NOT_FOUND),
    ]
    assert letter_a.redriven_at == later and letter_a.redriven_as == first.id
    assert await history.list_dead_letters(engine) == []

    again = await history.redrive(engine, queue, [a], later + timedelta(hours=1))

    assert len(queue.enqueued) == 2  # nothing new
    assert again == [history.RedriveResult(a, RedriveStatus.ALREADY_REDRIVEN, first.id)]
    assert (await history.get_dead_letter(engine, a))[0].redriven_at == later


async def test_redrive_after_a_crash_between_enqueue_and_marking(engine: AsyncEngine) -> None:
    a = await add_dead_letter(engine)
    queue = FakeQueue()
    # The crashed run enqueued the event but never marked the dead letter.
    crashed = NewInvocation(
        id="crashed-run", function="f", payload=b"{}", idempotency_key=f"redrive:{a}"
    )
    await queue.enqueue([crashed])

    results = await history.redrive(engine, queue, [a], T0)

    assert results == [history.RedriveResult(a, RedriveStatus.REDRIVEN, "crashed-run")]
    assert set(queue.by_key.values()) == {"crashed-run"}
    assert (await history.get_dead_letter(engine, a))[0].redriven_as == "crashed-run"


async def test_redrive_in_chunks_reports_progress(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "REDRIVE_CHUNK", 2)
    made = [await add_dead_letter(engine, dead_at=T0 + timedelta(seconds=i)) for i in range(5)]
    queue = FakeQueue()
    seen: list[int] = []

    ids_ = await history.dead_letter_ids(engine, "f")
    results = await history.redrive(engine, queue, ids_, T0, progress=seen.append)

    assert ids_ == made
    assert seen == [2, 2, 1]
    assert [len(batch) for batch in queue.batches] == [2, 2, 1]
    assert all(r.status is RedriveStatus.REDRIVEN for r in results)
    assert await history.dead_letter_ids(engine, "f") == []


async def test_purge_dead_letters(engine: AsyncEngine) -> None:
    for minutes in (0, 1, 2):
        await add_dead_letter(engine, dead_at=T0 + timedelta(minutes=minutes))
    await add_dead_letter(engine, dead_at=T0, redriven_at=T0, redriven_as=ids.new_id())
    kept_g = await add_dead_letter(engine, function="g", dead_at=T0)
    cutoff = T0 + timedelta(minutes=1, seconds=30)

    assert await history.count_dead_letters(engine, function="f", before=cutoff) == 3
    assert await history.purge_dead_letters(engine, function="f", before=cutoff) == 3
    assert await history.purge_dead_letters(engine, function="f", before=cutoff) == 0

    left = await history.list_dead_letters(engine, include_redriven=True)
    assert {d.function for d in left} == {"f", "g"} and len(left) == 2
    assert kept_g in {d.id for d in left}
    assert await history.purge_dead_letters(engine, function=None, before=cutoff) == 1
