"""The Invoke API: validate a payload, enqueue it, and (for a synchronous call) wait.

Used by ``eventwire invoke`` and by anything else that invokes by name. A
payload is checked before anything is written: it must be JSON (Lambda
events are JSON documents) and within the size limit for its invocation type.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config.models import Limits
from broker.errors import PayloadError, PayloadTooLargeError, UnknownFunctionError
from broker.ids import new_id
from broker.models import NewInvocation, Origin, State
from broker.observability.tracing import with_parent
from broker.queue.base import InvocationQueue
from broker.store.schema import functions, invocations


@dataclass(frozen=True, slots=True)
class Finished:
    """How a waited-for invocation ended."""

    id: str
    state: State
    result: bytes | None
    error_type: str | None
    error_message: str | None


def check_payload(payload: bytes, *, sync: bool, limits: Limits) -> None:
    limit = limits.sync_payload_bytes if sync else limits.async_payload_bytes
    if len(payload) > limit:
        kind = "synchronous" if sync else "asynchronous"
        raise PayloadTooLargeError(
            f"payload is {len(payload):,} bytes; "
            f"the limit for {kind} invocations is {limit:,} bytes"
        )
    try:
        json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"payload is not valid JSON: {exc}") from None


async def check_function(engine: AsyncEngine, name: str) -> None:
    """The function must be registered (by ``eventwire serve`` or ``apply``)."""
    async with engine.connect() as conn:
        names = [n for (n,) in await conn.execute(select(functions.c.name))]
        await conn.rollback()
    if name not in names:
        known = ", ".join(sorted(names)) or "none — has `eventwire serve` run with a config?"
        raise UnknownFunctionError(f"unknown function {name!r}; registered functions: {known}")


async def submit(
    engine: AsyncEngine,
    queue: InvocationQueue,
    function: str,
    payload: bytes,
    *,
    sync: bool,
    limits: Limits,
    idempotency_key: str | None = None,
) -> str:
    """Enqueue one invocation of ``function``; answers its id.

    With an ``idempotency_key`` already used for ``function``, nothing new is
    enqueued and the earlier invocation's id is the answer.
    """
    check_payload(payload, sync=sync, limits=limits)
    await check_function(engine, function)
    return await enqueue_api_call(
        queue, function, payload, sync=sync, idempotency_key=idempotency_key
    )


async def enqueue_api_call(
    queue: InvocationQueue,
    function: str,
    payload: bytes,
    *,
    sync: bool,
    idempotency_key: str | None = None,
    traceparent: str | None = None,
    invocation_id: str | None = None,
) -> str:
    """Enqueue one invocation of ``function`` (registered) with ``payload`` (checked):
    what :func:`submit` does once it has checked both; answers its id. ``traceparent``:
    the trace context the call came with, the parent of the invocation's spans;
    ``invocation_id``: its id, when the payload names it already (a new one if None)."""
    [enqueued] = await queue.enqueue(
        [
            NewInvocation(
                id=invocation_id or new_id(),
                function=function,
                payload=payload,
                origin=Origin.API,
                sync=sync,
                idempotency_key=idempotency_key,
                source=with_parent({}, traceparent),
            )
        ]
    )
    return enqueued.id


async def wait_finished(
    engine: AsyncEngine, invocation_id: str, timeout_s: float
) -> Finished | None:
    """Poll until the invocation is finished (None after ``timeout_s``).

    A queue that keeps its hot path outside SQL (Redis) writes the row a moment
    after the enqueue; until then the invocation is simply not finished yet.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    i = invocations.c
    query = select(i.state, i.result, i.error_type, i.error_message).where(i.id == invocation_id)
    while True:
        async with engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
            await conn.rollback()
        state = State(row.state) if row is not None else State.PENDING
        if row is not None and state.terminal:
            return Finished(invocation_id, state, row.result, row.error_type, row.error_message)
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
