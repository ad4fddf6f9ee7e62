"""The SQL behind RabbitMQ mappings' unacknowledged batches (``mapping_unacked``).

A RabbitMQ message has no position to derive a batch from: a consumer that
dies after enqueuing a batch and before RabbitMQ has its acknowledgements
gets the batch's messages redelivered to another consumer, which would batch
them differently — a second invocation of the same messages. So a reader
records each invocation it is about to enqueue, with the keys of its batch's
messages (:func:`record_unacked`), and removes the rows once RabbitMQ has
confirmed the acknowledgements (:func:`drop_unacked`). A redelivered message
found in a row (:func:`find_unacked`) is not batched again: the row's
invocations are enqueued again, which their idempotency keys make a no-op if
they were enqueued before, and the message is acknowledged.

Rows of a consumer that died stay until :func:`prune_unacked` removes those
older than the idempotency window (past it, keys no longer deduplicate anyway).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.ids import new_id
from broker.models import NewInvocation, Origin
from broker.store.schema import mapping_unacked

u = mapping_unacked.c


@dataclass(frozen=True, slots=True)
class Unacked:
    """One invocation of a batch, and the keys of the batch's messages."""

    invocation: NewInvocation
    messages: tuple[str, ...]


async def record_unacked(
    engine: AsyncEngine, mapping: str, batches: Sequence[Unacked], now: datetime
) -> None:
    rows = [
        {
            "mapping": mapping,
            "idempotency_key": b.invocation.idempotency_key,
            "messages": list(b.messages),
            "function": b.invocation.function,
            "lane": b.invocation.lane,
            "payload": b.invocation.payload,
            "source": dict(b.invocation.source),
            "created_at": now,
        }
        for b in batches
        if b.messages and b.invocation.idempotency_key is not None
    ]
    if rows:
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        # A batch formed again from the same messages is recorded once.
        stmt = insert(mapping_unacked).on_conflict_do_nothing(
            index_elements=[u.mapping, u.idempotency_key]
        )
        async with engine.begin() as conn:
            await conn.execute(stmt, rows)


async def drop_unacked(engine: AsyncEngine, mapping: str, keys: Collection[str]) -> None:
    if keys:
        async with engine.begin() as conn:
            await conn.execute(
                delete(mapping_unacked).where(u.mapping == mapping, u.idempotency_key.in_(keys))
            )


async def find_unacked(
    engine: AsyncEngine, mapping: str, messages: Collection[str]
) -> list[Unacked]:
    """The recorded invocations whose batches hold any of ``messages``, to enqueue again."""
    wanted = set(messages)
    if not wanted:
        return []
    async with engine.connect() as conn:
        index = await conn.execute(
            select(u.idempotency_key, u.messages).where(u.mapping == mapping)
        )
        keys = [r.idempotency_key for r in index if wanted.intersection(r.messages)]
        if not keys:
            return []
        rows = await conn.execute(
            select(mapping_unacked).where(u.mapping == mapping, u.idempotency_key.in_(keys))
        )
        return [
            Unacked(
                NewInvocation(
                    id=new_id(),
                    function=r.function,
                    payload=r.payload,
                    origin=Origin.MAPPING,
                    lane=r.lane,
                    idempotency_key=r.idempotency_key,
                    source=r.source,
                ),
                tuple(r.messages),
            )
            for r in rows
        ]


async def prune_unacked(engine: AsyncEngine, mapping: str, before: datetime) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(mapping_unacked).where(u.mapping == mapping, u.created_at < before)
        )
    return int(result.rowcount or 0)
