"""DLQ operations on a migrated store: filters, redrive to another function, export/import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.errors import UsageError
from broker.models import Origin
from broker.store import history
from broker.store.dead_letters import (
    DeadLetterFilter,
    count_matching,
    import_dead_letters,
    iter_matching,
    list_matching,
    matching_ids,
    purge_matching,
)
from broker.store.dlq_lines import read_lines, to_line
from broker.store.history import RedriveStatus
from tests.support.stores import migrated_engine
from tests.unit.test_history import BACKENDS, T0, FakeQueue, add_dead_letter


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(request.param, tmp_path) as engine:
        yield engine


async def test_filters(engine: AsyncEngine) -> None:
    timeout = await add_dead_letter(
        engine, dead_at=T0, error_type="TimeoutError", error_message="Read TIMED out after 3s"
    )
    value = await add_dead_letter(
        engine, dead_at=T0 + timedelta(hours=1), error_message="bad 100% value"
    )
    scheduled = await add_dead_letter(
        engine, dead_at=T0 + timedelta(hours=2), origin=Origin.SCHEDULE.value
    )
    other = await add_dead_letter(engine, function="g", dead_at=T0 + timedelta(hours=3))
    done = await add_dead_letter(
        engine, dead_at=T0 + timedelta(hours=4), redriven_at=T0, redriven_as="x"
    )

    async def ids(**criteria: object) -> list[str]:
        return await matching_ids(engine, DeadLetterFilter(**criteria))  # type: ignore[arg-type]

    assert await ids() == [timeout, value, scheduled, other]
    assert await ids(function="f") == [timeout, value, scheduled]
    assert await ids(error_types=("TimeoutError",)) == [timeout]
    assert await ids(error_types=("TimeoutError", "ValueError")) == [
        timeout,
        value,
        scheduled,
        other,
    ]
    assert await ids(since=T0 + timedelta(hours=1), before=T0 + timedelta(hours=3)) == [
        value,
        scheduled,
    ]
    assert await ids(origins=(Origin.SCHEDULE,)) == [scheduled]
    assert await ids(grep="timed OUT") == [timeout]  # any case
    assert await ids(grep="100%") == [value]  # LIKE wildcards taken literally
    assert await ids(grep="1%0") == []
    assert await ids(include_redriven=True, function="f", since=T0 + timedelta(hours=4)) == [done]

    where = DeadLetterFilter(function="f")
    assert await count_matching(engine, where) == 3
    assert [row.id for row in await list_matching(engine, where, limit=2)] == [scheduled, value]
    assert not where.narrows and DeadLetterFilter(grep="x").narrows

    purged = await purge_matching(engine, DeadLetterFilter(error_types=("TimeoutError",)))
    assert purged == 1 and await ids(function="f") == [value, scheduled]


async def test_redrive_to_another_function_survives_a_crash(engine: AsyncEngine) -> None:
    a = await add_dead_letter(engine, dead_at=T0)
    b = await add_dead_letter(engine, dead_at=T0 + timedelta(seconds=1))
    queue = FakeQueue()

    class Crash(Exception):
        pass

    async def crash_after_first(n: int) -> None:
        if queue.batches:
            raise Crash

    with pytest.raises(Crash):  # the first chunk went to f2, then the process died
        await history.redrive(
            engine, queue, [a, b], T0, to="f2", chunk_size=1, pace=crash_after_first
        )
    # Run again without --to: a went to f2 already and stays there; b is claimed anew.
    results = await history.redrive(engine, queue, [a, b], T0)

    assert [(r.dead_letter_id, r.status, r.function) for r in results] == [
        (a, RedriveStatus.ALREADY_REDRIVEN, "f2"),
        (b, RedriveStatus.REDRIVEN, "f"),
    ]
    assert [(i.function, i.idempotency_key) for i in queue.enqueued] == [
        ("f2", f"redrive:{a}"),
        ("f", f"redrive:{b}"),
    ]
    assert queue.enqueued[0].source["function"] == "f"  # where it came from

    # A crash between the claim and the enqueue: the re-run keeps the claimed target.
    c = await add_dead_letter(engine, dead_at=T0 + timedelta(seconds=2))

    class FailingQueue(FakeQueue):
        async def enqueue(self, batch):  # type: ignore[no-untyped-def]
            raise Crash

    with pytest.raises(Crash):
        await history.redrive(engine, FailingQueue(), [c], T0, to="f3")
    [again] = await history.redrive(engine, queue, [c], T0, to="f4")
    assert (again.status, again.function) == (RedriveStatus.REDRIVEN, "f3")
    assert queue.enqueued[-1].function == "f3"


async def test_redrive_an_edited_event(engine: AsyncEngine) -> None:
    a = await add_dead_letter(engine, payload=b'{"n": 1}')
    queue = FakeQueue()
    [result] = await history.redrive(engine, queue, [a], T0, payloads={a: b'{"n": 2}'})
    assert result.status is RedriveStatus.REDRIVEN
    assert queue.enqueued[0].payload == b'{"n": 2}'
    assert queue.enqueued[0].source["edited"] is True


async def test_export_import_round_trip_is_lossless(engine: AsyncEngine, tmp_path: Path) -> None:
    made = [
        await add_dead_letter(engine, payload=b'{"a":  1,\n "b": [1.0, 2e3]}', dead_at=T0),
        await add_dead_letter(
            engine, payload=b"\x00\xff binary", dead_at=T0, source={"queue": "q1"}
        ),
        await add_dead_letter(
            engine,
            payload="ünïcode".encode(),
            dead_at=T0 + timedelta(seconds=1),
            error_type=None,
            error_message=None,
            redriven_at=T0 + timedelta(hours=1),
            redriven_as="inv-1",
            redrive_to="g",
        ),
    ]
    everything = DeadLetterFilter(include_redriven=True)
    original = {
        row.id: row for page in [await list_matching(engine, everything, limit=10)] for row in page
    }
    lines = [
        to_line(row)
        for page in [p async for p in iter_matching(engine, everything, 2)]
        for row in page
    ]
    assert len(lines) == 3 and all("\n" not in line for line in lines)

    (tmp_path / "other").mkdir()
    async with migrated_engine("sqlite", tmp_path / "other") as other:
        rows = read_lines(lines, "dlq.jsonl")
        assert await import_dead_letters(other, rows) == 3
        assert await import_dead_letters(other, rows) == 0  # idempotent
        copied = {row.id: row for row in await list_matching(other, everything, limit=10)}
    assert copied == original
    assert copied[made[1]].payload == b"\x00\xff binary"
    assert copied[made[0]].payload == b'{"a":  1,\n "b": [1.0, 2e3]}'  # byte for byte


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "dlq.jsonl:2: not JSON"),
        ("[1]", "dlq.jsonl:2: expected a JSON object per line"),
        ('{"id": ""}', "dlq.jsonl:2: id: expected a non-empty string"),
    ],
)
async def test_import_names_the_bad_line(engine: AsyncEngine, line: str, message: str) -> None:
    good = to_line((await history.get_dead_letter(engine, await add_dead_letter(engine)))[0])
    with pytest.raises(UsageError, match=message):
        read_lines([good, line], "dlq.jsonl")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dead_at", "yesterday", "dead_at: expected an ISO-8601 time, got 'yesterday'"),
        ("origin", "mail", "origin: expected one of api, schedule"),
        ("attempts", -1, "attempts: expected a whole number"),
        ("payload", None, "payload: expected the payload as text, or payload_base64"),
    ],
)
async def test_import_names_the_bad_field(
    engine: AsyncEngine, field: str, value: object, message: str
) -> None:
    import json

    row = (await history.get_dead_letter(engine, await add_dead_letter(engine)))[0]
    data = json.loads(to_line(row))
    data[field] = value
    with pytest.raises(UsageError, match=f"^x.jsonl:1: {message}"):
        read_lines([json.dumps(data)], "x.jsonl")
