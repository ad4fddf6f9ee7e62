"""The Invoke API: validate a payload, enqueue it, and (for a synchronous call) wait.

Used by ``eventwire invoke`` and by anything else that invokes by name. A
payload is checked before anything is written: it must be JSON (Lambda
events are JSON documents) and within the size limit for its invocation type.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection
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
    except RecursionError:  # no handler could decode it either
        raise PayloadError("payload is JSON nested too deeply to decode") from None


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


async def finished_of(engine: AsyncEngine, invocation_ids: Collection[str]) -> dict[str, Finished]:
    """Those of ``invocation_ids`` that are finished, by id: one query for them all (a
    caller following many invocations, such as an SQS reader, asks every few hundred ms).

    As for :func:`wait_finished`, an invocation whose row is not written yet is not
    finished yet."""
    if not invocation_ids:
        return {}
    i = invocations.c
    query = select(i.id, i.state, i.result, i.error_type, i.error_message).where(
        i.id.in_(list(invocation_ids)), i.state.in_([s.value for s in State if s.terminal])
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        await conn.rollback()
    return {
        row.id: Finished(row.id, State(row.state), row.result, row.error_type, row.error_message)
        for row in rows
    }


async def wait_finished(
    engine: AsyncEngine, invocation_id: str, timeout_s: float
) -> Finished | None:
    """Poll until the invocation is finished (None after ``timeout_s``).

    A queue that keeps its hot path outside SQL (Redis) writes the row a moment
    after the enqueue; until then the invocation is simply not finished yet.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        finished = (await finished_of(engine, [invocation_id])).get(invocation_id)
        if finished is not None:
            return finished
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
