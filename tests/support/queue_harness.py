"""Queues as the queue contract and the Redis queue's own tests build them: a queue, its
clock, its SQL store, and a way to make sure the store has its history."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.history.writer import HistoryWriter
from broker.ids import new_id
from broker.models import AttemptRecord, Condition, DeadLetter, Lease, Origin, Settlement, State
from broker.queue.base import InvocationQueue
from broker.queue.postgres import PostgresQueue
from broker.queue.redis import RedisQueue, connect
from broker.queue.sqlite import SqliteQueue
from tests.support.clock import FakeClock
from tests.support.redis import redis_prefix
from tests.support.services import REDIS_URL
from tests.support.stores import migrated_engine


@dataclass
class Harness:
    queue: InvocationQueue
    clock: FakeClock
    engine: AsyncEngine
    make: Callable[[], InvocationQueue]
    """Another queue on the same store, as another process would have."""
    make_limited: Callable[[int], InvocationQueue]
    """The same, with an account-wide concurrency limit."""
    record: Callable[[], Awaitable[object]]
    """Make sure what was settled is in the SQL history (the Redis queue writes it later)."""

    def other(self) -> InvocationQueue:
        return self.make()

    async def recorded(self) -> None:
        await self.record()


async def _nothing() -> None:
    return None


def harness(
    queue: str, tmp_path: Path, *, keep_succeeded_payloads: bool = True
) -> AbstractAsyncContextManager[Harness]:
    """The harness of ``queue`` (``sqlite``, ``postgres`` or ``redis``)."""
    if queue == "redis":
        return redis_harness(tmp_path, keep_succeeded_payloads=keep_succeeded_payloads)
    return sql_harness(queue, tmp_path, keep_succeeded_payloads=keep_succeeded_payloads)


@asynccontextmanager
async def sql_harness(
    backend: str, tmp_path: Path, *, keep_succeeded_payloads: bool = True
) -> AsyncIterator[Harness]:
    clock = FakeClock()
    async with migrated_engine(backend, tmp_path) as engine:
        cls = PostgresQueue if backend == "postgres" else SqliteQueue

        def make(account: int | None = None) -> InvocationQueue:
            return cls(
                engine,
                clock=clock,
                account_concurrency=account,
                keep_succeeded_payloads=keep_succeeded_payloads,
            )

        queue = make()
        try:
            yield Harness(queue, clock, engine, make, make, _nothing)
        finally:
            await queue.close()


@asynccontextmanager
async def redis_harness(
    tmp_path: Path, *, keep_succeeded_payloads: bool = True
) -> AsyncIterator[Harness]:
    clock = FakeClock()
    async with redis_prefix() as prefix, migrated_engine("sqlite", tmp_path) as engine:
        client = connect(REDIS_URL)
        writer = HistoryWriter(
            client, prefix, engine, owner="test", keep_succeeded_payloads=keep_succeeded_payloads
        )

        def make(account: int | None = None) -> InvocationQueue:
            return RedisQueue(client, prefix=prefix, clock=clock, account_concurrency=account)

        async def record() -> None:
            await writer.lead()
            while await writer.write_batch():
                pass

        queue = make()
        try:
            yield Harness(queue, clock, engine, make, make, record)
        finally:
            await queue.close()
            await client.aclose()


def dead_letter(held: Lease, h: Harness) -> DeadLetter:
    """The dead letter of ``held``, its retries exhausted."""
    return DeadLetter(
        id=new_id(),
        invocation_id=held.invocation.id,
        request_id=held.invocation.request_id,
        function=held.invocation.function,
        payload=held.invocation.payload,
        origin=Origin.API,
        condition=Condition.RETRIES_EXHAUSTED,
        error_type="ValueError",
        error_message="boom",
        attempts=1,
        first_enqueued_at=held.invocation.first_enqueued_at,
        dead_at=h.clock.now,
    )


def settlement(lease: Lease, state: State, **kw: object) -> Settlement:
    """The settlement of ``lease`` in ``state`` after one 1 ms attempt."""
    attempt = AttemptRecord(
        number=lease.invocation.attempts,
        started_at=lease.expires_at,
        duration_ms=1.0,
        status="success" if state is State.SUCCEEDED else "error",
    )
    return Settlement(
        lease_token=lease.token,
        invocation_id=lease.invocation.id,
        state=state,
        attempt=attempt,
        **kw,  # type: ignore[arg-type]
    )
