"""The scheduler on a real store, driven by a fake clock: each slot once, catch-up, overlap,
pause, one-time schedules, replicas sharing the work through the leader lease."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config.settings import Settings
from broker.loading import parse_config
from broker.queue import open_queue
from broker.queue.base import InvocationQueue
from broker.sources.pollers import PollerContext
from broker.store.engine import create_engine
from broker.store.schedules import get_schedule, list_schedules, set_state
from broker.store.schema import invocations, leader_leases
from pollers.schedule.poller import SchedulePoller
from tests.support.metrics import figure
from tests.support.stores import BACKENDS, database_url, migrate
from tests.support.timer import FakeTimer

START = datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)
FUNCTIONS = {"report": {"handler": "m:report"}, "ping": {"handler": "m:ping"}}


@dataclass
class Store:
    url: str
    engine: AsyncEngine
    queue: InvocationQueue


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(request.param, tmp_path) as value:
        yield value


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """For behaviour that does not depend on the store (the SQL is covered on both above)."""
    async with open_store("sqlite", tmp_path) as value:
        yield value


@asynccontextmanager
async def open_store(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    async with database_url(backend, tmp_path) as url:
        engine = create_engine(url)
        try:
            await migrate(engine)
            settings = Settings(database_url=url)
            async with open_queue(settings, engine) as queue:
                yield Store(url, engine, queue)
        finally:
            await engine.dispose()


@asynccontextmanager
async def scheduler(
    store: Store, schedules: dict[str, Any], timer: FakeTimer, owner: str = "one"
) -> AsyncIterator[SchedulePoller]:
    config = parse_config({"functions": FUNCTIONS, "schedules": schedules})
    settings = Settings(database_url=store.url, scheduler_lease_s=30)
    poller = SchedulePoller(
        PollerContext(settings, config, store.engine, store.queue, owner, timer)
    )
    await poller.start()
    task = asyncio.create_task(poller.run())
    try:
        yield poller
    finally:
        poller.stop()
        await asyncio.wait_for(task, 10)


async def fired(store: Store) -> list[dict[str, Any]]:
    """Each scheduled invocation: key, function, lane, state and its event."""
    i = invocations.c
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(i.idempotency_key, i.function, i.lane, i.state, i.payload, i.source)
                .where(i.origin == "schedule")
                .order_by(i.seq)
            )
        ).all()
        await conn.rollback()
    return [
        {
            "key": r.idempotency_key,
            "function": r.function,
            "lane": r.lane,
            "state": r.state,
            "event": json.loads(r.payload),
            "source": r.source,
        }
        for r in rows
    ]


def keys(rows: list[dict[str, Any]]) -> list[str]:
    return [r["key"] for r in rows]


def minutes(*values: int, hour: int = 12) -> list[str]:
    return [f"schedule:ping:2026-11-24T{hour:02d}:{m:02d}:00Z" for m in values]


async def step(timer: FakeTimer, seconds: float, times: int, sleepers: int = 1) -> None:
    for _ in range(times):
        timer.advance(seconds)
        await timer.settled(sleepers)


async def test_each_slot_fires_once_with_the_scheduled_event(store: Store) -> None:
    timer = FakeTimer(START)
    schedules = {
        "ping": {"expression": "rate(1 minute)", "function": "ping"},
        "nightly": {
            "expression": "cron(5 13 * * ? *)",
            "timezone": "Europe/Berlin",
            "function": "report",
            "payload": {"kind": "daily"},
        },
    }
    async with scheduler(store, schedules, timer) as poller:
        await timer.settled()
        await step(timer, 20, 15)  # five minutes, in 20-second passes
    metrics = poller.context.metrics
    assert figure(metrics, "eventwire_schedule_fires_total", schedule="ping") == 5
    assert figure(metrics, "eventwire_schedule_fires_total", schedule="nightly") == 1
    # Passes every 20 s: each slot fired within 20 s of its time, none later.
    lateness = "eventwire_schedule_lateness_seconds_bucket"
    assert figure(metrics, lateness, schedule="ping", le="60.0") == 5
    assert figure(metrics, "eventwire_schedule_lateness_seconds_count", schedule="ping") == 5
    rows = await fired(store)
    assert keys(rows) == [
        *minutes(1, 2, 3, 4, 5),
        "schedule:nightly:2026-11-24T12:05:00Z",  # 13:05 in Berlin
    ]
    event = rows[-1]["event"]
    assert event == {
        "version": "0",
        "id": event["id"],
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": "2026-11-24T12:05:00Z",
        "region": "local",
        "resources": ["arn:aws:events:local:000000000000:rule/nightly"],
        "detail": {"kind": "daily"},
    }
    assert rows[0]["event"]["detail"] == {}
    row = await get_schedule(store.engine, "ping")
    assert row.last_slot_at == datetime(2026, 11, 24, 12, 5, tzinfo=UTC)
    assert row.last_outcome == "enqueued"
    assert row.next_slot_at == datetime(2026, 11, 24, 12, 6, tzinfo=UTC)


async def test_two_replicas_fire_each_slot_once_and_share_by_lease(store: Store) -> None:
    timer = FakeTimer(START)
    schedules = {"ping": {"expression": "rate(1 minute)", "function": "ping"}}
    async with (
        scheduler(store, schedules, timer, "one") as one,
        scheduler(store, schedules, timer, "two") as two,
    ):
        await timer.settled(2)
        await step(timer, 15, 12, sleepers=2)  # three minutes
        assert one.leading != two.leading
        leader, follower = (one, two) if one.leading else (two, one)
        leader.stop()  # gives the lease up: the other leads at its next pass
        await timer.settled(1)
        await step(timer, 15, 12, sleepers=1)
        assert follower.leading
    assert keys(await fired(store)) == minutes(1, 2, 3, 4, 5, 6)
    assert one.stats.fired + two.stats.fired == 6


async def test_a_leader_that_vanishes_is_replaced_within_its_lease(store: Store) -> None:
    timer = FakeTimer(START)
    schedules = {"ping": {"expression": "rate(1 minute)", "function": "ping"}}
    async with (
        scheduler(store, schedules, timer, "two") as two,
        scheduler(store, schedules, timer, "one") as one,
    ):
        await timer.settled(2)
        await step(timer, 10, 6, sleepers=2)
        leader, follower = (one, two) if one.leading else (two, one)
        # The leader vanishes without a word (its lease row stays, as after kill -9).
        leader.leading = False
        leader.stop()
        await timer.settled(1)
        lost_at = timer.now()
        while not follower.leading:
            await step(timer, 5, 1)
        taken = timer.now()
        await step(timer, 10, 12)
    assert taken - lost_at <= timedelta(seconds=30)
    end = timer.now()
    assert end > START + timedelta(minutes=3)
    every_minute = range(1, (end - START.replace(second=0)) // timedelta(minutes=1) + 1)
    assert keys(await fired(store)) == minutes(*every_minute)  # none missed, none twice


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [
        ("none", []),
        ("latest", ["13:50"]),
        ("all", ["13:10", "13:20", "13:30", "13:40", "13:50"]),
    ],
)
async def test_missed_slots_follow_catch_up(
    sqlite_store: Store, catch_up: str, expected: list[str]
) -> None:
    store = sqlite_store
    timer = FakeTimer(START)
    schedules = {
        "ten": {
            "expression": "rate(10 minutes)",
            "function": "ping",
            "catch_up": catch_up,
            "catch_up_window": "1h",
        }
    }
    async with scheduler(store, schedules, timer):
        await timer.settled()
    timer.advance(2 * 3600)  # down for two hours: 12:10 … 14:00 came and went
    async with scheduler(store, schedules, timer) as poller:
        await timer.settled()
    slots = [r["key"].split("T")[1][:5] for r in await fired(store)]
    assert slots == [*expected, "14:00"]  # 14:00 is on time
    row = await get_schedule(store.engine, "ten")
    assert row.missed == 11 - len(expected)
    missed = figure(poller.context.metrics, "eventwire_schedule_missed_total", schedule="ten")
    assert missed == 11 - len(expected)


async def mark(store: Store, key: str, state: str, attempts: int) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            update(invocations)
            .where(invocations.c.idempotency_key == key)
            .values(state=state, attempts=attempts)
        )


async def test_overlap_skip_waits_for_the_previous_run(store: Store) -> None:
    timer = FakeTimer(START)
    schedules = {"ping": {"expression": "rate(1 minute)", "function": "ping", "overlap": "skip"}}
    async with scheduler(store, schedules, timer) as poller:
        await timer.settled()
        await step(timer, 60, 1)  # 12:01 fires
        await mark(store, minutes(1)[0], "running", 1)
        await step(timer, 60, 1)  # 12:02: 12:01 still runs
        await mark(store, minutes(1)[0], "succeeded", 1)
        await step(timer, 60, 1)  # 12:03 fires
    assert keys(await fired(store)) == minutes(1, 3)
    row = await get_schedule(store.engine, "ping")
    assert row.skipped == 1
    skipped = figure(poller.context.metrics, "eventwire_schedule_skipped_total", schedule="ping")
    assert skipped == 1


async def test_overlap_buffer_one_queues_one_behind_a_running_one(sqlite_store: Store) -> None:
    store = sqlite_store
    timer = FakeTimer(START)
    schedules = {
        "ping": {"expression": "rate(1 minute)", "function": "ping", "overlap": "buffer_one"}
    }
    async with scheduler(store, schedules, timer):
        await timer.settled()
        await step(timer, 60, 1)  # 12:01
        await mark(store, minutes(1)[0], "running", 1)
        await step(timer, 60, 2)  # 12:02 waits behind it; 12:03 would be a second: skipped
    rows = await fired(store)
    assert keys(rows) == minutes(1, 2)
    assert {r["lane"] for r in rows} == {"schedule:ping"}  # one at a time, in order


async def test_a_paused_schedule_does_not_fire_and_resumes_from_now(sqlite_store: Store) -> None:
    store = sqlite_store
    timer = FakeTimer(START)
    schedules = {"ping": {"expression": "rate(1 minute)", "function": "ping"}}
    async with scheduler(store, schedules, timer):
        await timer.settled()
        await step(timer, 60, 1)
        await set_state(store.engine, "ping", "paused", timer.now())
        await step(timer, 60, 3)
        await set_state(store.engine, "ping", "active", timer.now(), cursor_at=timer.now())
        await step(timer, 60, 1)
    assert keys(await fired(store)) == minutes(1, 5)


async def test_a_one_time_schedule_fires_once_then_is_deleted(store: Store) -> None:
    timer = FakeTimer(START)
    schedules = {
        "launch": {
            "expression": "at(2026-11-24T07:02:10)",
            "timezone": "America/New_York",
            "function": "report",
            "after_completion": "delete",
        },
        "keep": {"expression": "at(2026-11-24T12:01:00)", "function": "report"},
    }
    async with scheduler(store, schedules, timer):
        await timer.settled()
        await step(timer, 30, 6)
    assert keys(await fired(store)) == [
        "schedule:keep:2026-11-24T12:01:00Z",
        "schedule:launch:2026-11-24T12:02:10Z",
    ]
    assert [r.name for r in await list_schedules(store.engine)] == ["keep"]
    assert (await get_schedule(store.engine, "keep")).state == "completed"
    assert (await get_schedule(store.engine, "launch")).state == "deleted"


async def test_a_flexible_window_delays_each_slot_within_it(sqlite_store: Store) -> None:
    store = sqlite_store
    timer = FakeTimer(START)
    schedules = {
        "ping": {"expression": "rate(1 minute)", "function": "ping", "flexible_window": "30s"}
    }
    async with scheduler(store, schedules, timer):
        await timer.settled()
        await step(timer, 60, 3)
    i = invocations.c
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(i.available_at, i.payload).order_by(i.seq))).all()
    offsets = []
    for available_at, payload in rows:
        slot = datetime.fromisoformat(json.loads(payload)["time"])
        offsets.append((available_at - slot).total_seconds())
    assert len(offsets) == 3 and all(0 <= o < 30 for o in offsets)
    assert len(set(offsets)) > 1  # spread, not one fixed delay


async def test_the_lease_row_names_the_leader(sqlite_store: Store) -> None:
    store = sqlite_store
    timer = FakeTimer(START)
    async with scheduler(
        store, {"ping": {"expression": "rate(1 hour)", "function": "ping"}}, timer, "me"
    ):
        await timer.settled()
        async with store.engine.connect() as conn:
            owner = (await conn.execute(select(leader_leases.c.owner))).scalar_one()
    assert owner == "me"
