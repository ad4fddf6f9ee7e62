"""The history is pruned past its retention: finished invocations and their attempts go;
pending and running ones, and dead letters, stay. On every queue (the Redis queue's
history is in SQL too)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.ids import new_id
from broker.models import FunctionLimits, NewInvocation, State
from broker.store.retention import HistoryPruner, count_prunable, prune_history
from broker.store.schema import attempts, dead_letters, invocations
from tests.support.queue_harness import Harness, dead_letter, harness, settlement
from tests.support.waiting import eventually

F = {"f": FunctionLimits(lease_s=10)}


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(request.param, tmp_path) as built:
        yield built


async def finish(h: Harness, n: int, state: State) -> list[str]:
    """``n`` invocations run and settled in ``state`` now; their ids."""
    items = [NewInvocation(id=new_id(), function="f", payload=b"{}") for _ in range(n)]
    await h.queue.enqueue(items)
    leases = await h.queue.lease(n, "a", F, h.clock.now)
    assert len(leases) == n
    await h.queue.settle(
        [
            settlement(
                held, state, dead_letter=dead_letter(held, h) if state is State.FAILED else None
            )
            for held in leases
        ],
        h.clock.now,
    )
    return [item.id for item in items]


async def ids_of(h: Harness, column: Any) -> set[str]:
    async with h.engine.connect() as conn:
        return set((await conn.execute(select(column))).scalars())


async def test_what_finished_before_the_cutoff_goes_with_its_attempts(h: Harness) -> None:
    old_ok = await finish(h, 3, State.SUCCEEDED)
    old_failed = await finish(h, 1, State.FAILED)
    waiting = NewInvocation(id=new_id(), function="g", payload=b"{}")  # never leased
    await h.queue.enqueue([waiting])
    h.clock.advance(3600)
    recent = await finish(h, 2, State.SUCCEEDED)
    await h.recorded()
    cutoff = h.clock.now - timedelta(seconds=60)

    assert await count_prunable(h.engine, cutoff) == 4
    assert await prune_history(h.engine, cutoff, chunk=2) == 4

    kept = await ids_of(h, invocations.c.id)
    assert not kept & set(old_ok + old_failed)
    assert set(recent) | {waiting.id} <= kept
    assert not (await ids_of(h, attempts.c.invocation_id)) & set(old_ok + old_failed)
    assert set(recent) <= await ids_of(h, attempts.c.invocation_id)
    # Dead letters have a life of their own (eventwire dlq purge).
    assert set(old_failed) <= await ids_of(h, dead_letters.c.invocation_id)
    assert await prune_history(h.engine, cutoff) == 0


async def test_pending_and_running_invocations_are_never_pruned(h: Harness) -> None:
    pending, running = (NewInvocation(id=new_id(), function="f", payload=b"{}") for _ in "ab")
    await h.queue.enqueue([running])
    [held] = await h.queue.lease(1, "a", F, h.clock.now)
    await h.queue.enqueue([pending])
    h.clock.advance(30 * 24 * 3600)
    await h.recorded()

    assert await prune_history(h.engine, h.clock.now) == 0
    assert {pending.id, running.id} <= await ids_of(h, invocations.c.id)
    await h.queue.settle([settlement(held, State.SUCCEEDED)], h.clock.now)


async def test_the_pruner_keeps_pruning_past_the_retention(h: Harness) -> None:
    done = await finish(h, 2, State.SUCCEEDED)
    await h.recorded()
    h.clock.advance(2)
    pruner = HistoryPruner(h.engine, retention_s=1.0, clock=lambda: h.clock.now)
    task = asyncio.create_task(pruner.run())
    try:

        async def gone() -> bool:
            return not (await ids_of(h, invocations.c.id)) & set(done)

        await eventually(gone, 10, "the finished invocations pruned")
        later = await finish(h, 1, State.SUCCEEDED)
        await h.recorded()
        h.clock.advance(2)

        async def later_gone() -> bool:
            async with h.engine.connect() as conn:
                left = await conn.scalar(select(func.count()).where(invocations.c.id.in_(later)))
            return left == 0

        await eventually(later_gone, 10, "what finished later pruned on a later round")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
