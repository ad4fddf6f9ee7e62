"""The SQL behind the admin CLI: invocation history, functions, and operating the DLQ.

Every query is a SQLAlchemy Core expression on the tables of
:mod:`broker.store.schema`; every function takes an ``AsyncEngine`` and answers
frozen rows with aware UTC datetimes.

Ids may be given as a unique prefix of at least :data:`MIN_PREFIX` characters,
as people copy the short ids the CLI prints.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    bindparam,
    case,
    delete,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from broker.config.models import FunctionConfig
from broker.errors import NotFoundError, UsageError
from broker.ids import new_id
from broker.models import Condition, Enqueued, NewInvocation, Origin, State
from broker.observability.tracing import TRACEPARENT, valid_traceparent, with_parent
from broker.store.schema import ACTIVE, UTCDateTime, attempts, dead_letters, functions, invocations

MIN_PREFIX = 8
REDRIVE_CHUNK = 500


class Enqueuer(Protocol):
    """What a redrive needs of an ``InvocationQueue``: its idempotent ``enqueue``."""

    async def enqueue(self, batch: Sequence[NewInvocation]) -> list[Enqueued]: ...


@dataclass(frozen=True, slots=True)
class FunctionRow:
    name: str
    invoker: str
    timeout_s: float
    reserved_concurrency: int | None
    config_hash: str
    updated_at: datetime
    pending: int
    running: int
    dead_letters: int
    throttles: int
    oldest_pending_at: datetime | None = None
    """When the longest-waiting pending invocation was first enqueued."""


@dataclass(frozen=True, slots=True)
class InvocationRow:
    seq: int
    id: str
    request_id: str
    function: str
    origin: Origin
    state: State
    lane: str | None
    idempotency_key: str | None
    sync: bool
    payload: bytes
    attempts: int
    function_errors: int
    system_errors: int
    first_enqueued_at: datetime
    available_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    result: bytes | None
    error_type: str | None
    error_message: str | None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    source: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AttemptRow:
    invocation_id: str
    number: int
    started_at: datetime
    duration_ms: float
    status: str
    error_type: str | None
    error_message: str | None
    error_trace: tuple[str, ...]
    log_excerpt: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: str
    invocation_id: str
    request_id: str
    function: str
    payload: bytes
    origin: Origin
    condition: Condition
    error_type: str | None
    error_message: str | None
    attempts: int
    first_enqueued_at: datetime
    dead_at: datetime
    redriven_at: datetime | None
    redriven_as: str | None
    source: Mapping[str, Any] = field(default_factory=dict)
    redrive_to: str | None = None


class RedriveStatus(enum.StrEnum):
    REDRIVEN = "redriven"
    ALREADY_REDRIVEN = "already_redriven"
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class RedriveResult:
    dead_letter_id: str
    status: RedriveStatus
    invocation_id: str | None  # the invocation that runs (or ran) the event again
    function: str | None = field(default=None, compare=False)  # the function it went to


# ---------------------------------------------------------------- functions


async def register_functions(
    engine: AsyncEngine, served: Mapping[str, FunctionConfig], now: datetime
) -> None:
    """Make ``functions`` hold exactly the ``served`` functions (the configured ones and the
    built-in deliveries, :func:`broker.functions.delivery.served_functions`); unchanged rows
    are not written."""
    rows = [
        {
            "name": name,
            "invoker": function.invoker,
            "config": function.model_dump(mode="json", by_alias=True),
            "config_hash": function.config_hash(),
            "timeout_s": function.timeout_s,
            "reserved_concurrency": function.reserved_concurrency,
            "updated_at": now,
        }
        for name, function in served.items()
    ]
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    async with engine.begin() as conn:
        if rows:
            stmt = insert(functions)
            changed = {key: stmt.excluded[key] for key in rows[0] if key != "name"}
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[functions.c.name],
                    set_=changed,
                    where=functions.c.config_hash != stmt.excluded.config_hash,
                ),
                rows,
            )
        await conn.execute(delete(functions).where(functions.c.name.not_in(list(served))))


async def list_functions(engine: AsyncEngine) -> list[FunctionRow]:
    """Every registered function with its pending, running and undriven dead-letter counts."""
    state = invocations.c.state
    active = (
        select(
            invocations.c.function,
            func.count(case((state == State.PENDING.value, 1))).label("pending"),
            func.count(case((state == State.RUNNING.value, 1))).label("running"),
            type_coerce(
                func.min(case((state == State.PENDING.value, invocations.c.first_enqueued_at))),
                UTCDateTime,
            ).label("oldest_pending_at"),
        )
        .where(ACTIVE)
        .group_by(invocations.c.function)
        .subquery()
    )
    dead = (
        select(dead_letters.c.function, func.count().label("dead_letters"))
        .where(dead_letters.c.redriven_at.is_(None))
        .group_by(dead_letters.c.function)
        .subquery()
    )
    f = functions.c
    stmt = (
        select(
            f.name,
            f.invoker,
            f.timeout_s,
            f.reserved_concurrency,
            f.config_hash,
            f.updated_at,
            func.coalesce(active.c.pending, 0).label("pending"),
            func.coalesce(active.c.running, 0).label("running"),
            func.coalesce(dead.c.dead_letters, 0).label("dead_letters"),
            f.throttles,
            active.c.oldest_pending_at,
        )
        .outerjoin(active, active.c.function == f.name)
        .outerjoin(dead, dead.c.function == f.name)
        .order_by(f.name)
    )
    async with engine.connect() as conn:
        return [FunctionRow(**row._mapping) for row in await conn.execute(stmt)]


# ---------------------------------------------------------------- invocations


async def list_invocations(
    engine: AsyncEngine,
    *,
    function: str | None = None,
    state: State | None = None,
    limit: int = 50,
    before_seq: int | None = None,
) -> list[InvocationRow]:
    """The latest invocations, newest first; page on with ``before_seq`` (the last row's seq)."""
    stmt = select(invocations).order_by(invocations.c.seq.desc()).limit(limit)
    if function is not None:
        stmt = stmt.where(invocations.c.function == function)
    if state is not None:
        stmt = stmt.where(invocations.c.state == state.value)
    if before_seq is not None:
        stmt = stmt.where(invocations.c.seq < before_seq)
    async with engine.connect() as conn:
        return [_invocation(row) for row in await conn.execute(stmt)]


async def get_invocation(engine: AsyncEngine, id: str) -> tuple[InvocationRow, list[AttemptRow]]:
    """One invocation by id or unique id prefix, with its attempts in order."""
    async with engine.connect() as conn:
        full = await _resolve(conn, invocations.c.id, id, "invocation")
        row = (await conn.execute(select(invocations).where(invocations.c.id == full))).one()
        return _invocation(row), await _attempts(conn, full)


# ---------------------------------------------------------------- dead letters


async def list_dead_letters(
    engine: AsyncEngine,
    *,
    function: str | None = None,
    include_redriven: bool = False,
    limit: int = 100,
) -> list[DeadLetterRow]:
    """The latest dead letters, newest first."""
    d = dead_letters.c
    stmt = select(dead_letters).order_by(d.dead_at.desc(), d.id.desc()).limit(limit)
    if function is not None:
        stmt = stmt.where(d.function == function)
    if not include_redriven:
        stmt = stmt.where(d.redriven_at.is_(None))
    async with engine.connect() as conn:
        return [_dead_letter(row) for row in await conn.execute(stmt)]


async def get_dead_letter(engine: AsyncEngine, id: str) -> tuple[DeadLetterRow, list[AttemptRow]]:
    """One dead letter by its id or its invocation's (or a unique prefix of either),
    with the attempts of its invocation."""
    async with engine.connect() as conn:
        full = await _resolve_dead_letter(conn, id)
        row = (await conn.execute(select(dead_letters).where(dead_letters.c.id == full))).one()
        letter = _dead_letter(row)
        return letter, await _attempts(conn, letter.invocation_id)


async def resolve_dead_letter_ids(
    engine: AsyncEngine, ids: Sequence[str], *, function: str | None = None
) -> list[str]:
    """The full ids of ``ids`` (ids or unique prefixes), in order, without repeats.

    Raises NotFoundError for an unknown id, UsageError for one of another
    function than ``function`` (when given).
    """
    async with engine.connect() as conn:
        full = list(dict.fromkeys([await _resolve_dead_letter(conn, id) for id in ids]))
        if function is not None:
            d = dead_letters.c
            owners = await conn.execute(select(d.id, d.function).where(d.id.in_(full)))
            for id, owner in owners:
                if owner != function:
                    raise UsageError(f"dead letter {id} is of function {owner}, not {function}")
        return full


async def dead_letter_ids(
    engine: AsyncEngine, function: str, *, before: datetime | None = None
) -> list[str]:
    """Ids of ``function``'s dead letters not redriven (dead before ``before``), oldest first."""
    d = dead_letters.c
    stmt = (
        select(d.id)
        .where(d.function == function, d.redriven_at.is_(None))
        .order_by(d.dead_at, d.id)
    )
    if before is not None:
        stmt = stmt.where(d.dead_at < before)
    async with engine.connect() as conn:
        return list((await conn.execute(stmt)).scalars())


async def redrive(
    engine: AsyncEngine,
    queue: Enqueuer,
    ids: Sequence[str],
    now: datetime,
    *,
    progress: Callable[[int], None] | None = None,
    to: str | None = None,
    payloads: Mapping[str, bytes] | None = None,
    chunk_size: int | None = None,
    pace: Callable[[int], Awaitable[None]] | None = None,
) -> list[RedriveResult]:
    """Enqueue the events of dead letters ``ids`` (full ids) again, ``REDRIVE_CHUNK`` at a time.

    Each dead letter is first claimed: the function it goes to (its own, or
    ``to``) is written on it, unless an earlier, interrupted redrive wrote one,
    which then wins. Its event is then enqueued to that function with the
    idempotency key ``redrive:<dead letter id>`` before the dead letter is
    marked redriven, so a repeated or interrupted redrive never runs an event
    twice, whatever ``--to`` the re-run is given. ``payloads`` replaces the
    event of some dead letters (edited before the redrive). ``pace`` is awaited
    with each chunk's size before it is enqueued (rate limiting);
    ``progress`` is told how many ids each chunk settled.
    """
    ids = list(dict.fromkeys(ids))
    size = chunk_size or REDRIVE_CHUNK
    results: list[RedriveResult] = []
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        if pace is not None:
            await pace(len(chunk))
        results.extend(await _redrive_chunk(engine, queue, chunk, now, to, payloads or {}))
        if progress is not None:
            progress(len(chunk))
    return results


async def _redrive_chunk(
    engine: AsyncEngine,
    queue: Enqueuer,
    ids: Sequence[str],
    now: datetime,
    to: str | None,
    payloads: Mapping[str, bytes],
) -> list[RedriveResult]:
    d = dead_letters.c
    async with engine.begin() as conn:
        await conn.execute(
            update(dead_letters)
            .where(d.id.in_(set(ids)), d.redriven_at.is_(None), d.redrive_to.is_(None))
            .values(redrive_to=to if to is not None else d.function)
        )
        rows = await conn.execute(select(dead_letters).where(d.id.in_(set(ids))))
        found = {row.id: _dead_letter(row) for row in rows}
    todo = [letter for letter in found.values() if letter.redriven_at is None]
    todo.sort(key=lambda letter: (letter.dead_at, letter.id))
    if not todo:
        return [_redrive_result(id, found.get(id), {}) for id in ids]
    enqueued = await queue.enqueue([_redriven(letter, payloads.get(letter.id)) for letter in todo])
    redriven_as = {letter.id: answer.id for letter, answer in zip(todo, enqueued, strict=True)}
    async with engine.begin() as conn:
        await conn.execute(
            update(dead_letters)
            .where(d.id == bindparam("b_letter"), d.redriven_at.is_(None))
            .values(redriven_at=now, redriven_as=bindparam("b_invocation")),
            [{"b_letter": k, "b_invocation": v} for k, v in redriven_as.items()],
        )
    return [_redrive_result(id, found.get(id), redriven_as) for id in ids]


def _redriven(letter: DeadLetterRow, edited: bytes | None) -> NewInvocation:
    target = letter.redrive_to or letter.function
    source: dict[str, Any] = {"dead_letter_id": letter.id, "invocation_id": letter.invocation_id}
    if target != letter.function:
        source["function"] = letter.function
    if edited is not None:
        source["edited"] = True
    # The redrive continues the event's trace (its enqueue span is the parent).
    return NewInvocation(
        id=new_id(),
        function=target,
        payload=edited if edited is not None else letter.payload,
        origin=Origin.REDRIVE,
        idempotency_key=f"redrive:{letter.id}",
        source=with_parent(source, valid_traceparent(letter.source.get(TRACEPARENT))),
    )


def _redrive_result(
    id: str, letter: DeadLetterRow | None, redriven_as: Mapping[str, str]
) -> RedriveResult:
    if letter is None:
        return RedriveResult(id, RedriveStatus.NOT_FOUND, None)
    target = letter.redrive_to or letter.function
    if id in redriven_as:
        return RedriveResult(id, RedriveStatus.REDRIVEN, redriven_as[id], target)
    return RedriveResult(id, RedriveStatus.ALREADY_REDRIVEN, letter.redriven_as, target)


async def count_dead_letters(engine: AsyncEngine, *, function: str | None, before: datetime) -> int:
    """How many dead letters :func:`purge_dead_letters` would delete."""
    stmt = select(func.count()).select_from(dead_letters).where(dead_letters.c.dead_at < before)
    if function is not None:
        stmt = stmt.where(dead_letters.c.function == function)
    async with engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def purge_dead_letters(engine: AsyncEngine, *, function: str | None, before: datetime) -> int:
    """Delete dead letters (redriven or not) that died before ``before``; answers how many."""
    stmt = delete(dead_letters).where(dead_letters.c.dead_at < before)
    if function is not None:
        stmt = stmt.where(dead_letters.c.function == function)
    async with engine.begin() as conn:
        return (await conn.execute(stmt)).rowcount


# ---------------------------------------------------------------- helpers


async def _resolve_dead_letter(conn: AsyncConnection, id: str) -> str:
    """The dead letter whose id, or whose invocation's id, is ``id`` or starts with it.

    ``eventwire invoke --async`` prints the invocation id, so that one is accepted too.
    """
    d = dead_letters.c
    try:
        return await _resolve(conn, d.id, id, "dead letter")
    except NotFoundError:
        try:
            invocation_id = await _resolve(conn, d.invocation_id, id, "dead letter")
        except NotFoundError:
            raise NotFoundError(f"no dead letter {id} (by its id or its invocation's)") from None
    stmt = select(d.id).where(d.invocation_id == invocation_id).order_by(d.dead_at.desc())
    return str((await conn.execute(stmt.limit(1))).scalar_one())


async def _resolve(conn: AsyncConnection, column: ColumnElement[Any], id: str, what: str) -> str:
    """The full value of ``column`` that is ``id`` or the only one starting with it."""
    exact = (await conn.execute(select(column).where(column == id))).scalar_one_or_none()
    if exact is not None:
        return str(exact)
    if len(id) < MIN_PREFIX:
        raise NotFoundError(f"no {what} {id} (give at least {MIN_PREFIX} characters of an id)")
    stmt = (
        select(column)
        .where(column.startswith(id, autoescape=True))
        .group_by(column)
        .order_by(column)
        .limit(3)
    )
    matches = list((await conn.execute(stmt)).scalars())
    if not matches:
        raise NotFoundError(f"no {what} {id}")
    if len(matches) > 1:
        shown = ", ".join(matches[:2]) + (" ..." if len(matches) > 2 else "")
        raise UsageError(f"{what} id prefix {id} is ambiguous ({shown}); give more characters")
    return str(matches[0])


async def last_attempt(engine: AsyncEngine, invocation_id: str) -> AttemptRow | None:
    """The latest attempt of invocation ``invocation_id`` (its full id), if it has one."""
    async with engine.connect() as conn:
        attempts = await _attempts(conn, invocation_id)
        await conn.rollback()
    return attempts[-1] if attempts else None


async def _attempts(conn: AsyncConnection, invocation_id: str) -> list[AttemptRow]:
    a = attempts.c
    stmt = select(attempts).where(a.invocation_id == invocation_id).order_by(a.number, a.seq)
    found = []
    for row in await conn.execute(stmt):
        values = dict(row._mapping)
        del values["seq"]
        values["error_trace"] = tuple(values["error_trace"] or ())
        found.append(AttemptRow(**values))
    return found


def _invocation(row: Row[Any]) -> InvocationRow:
    values = dict(row._mapping)
    values.pop("lease_token", None)
    values["origin"] = Origin(values["origin"])
    values["state"] = State(values["state"])
    values["source"] = values["source"] or {}
    return InvocationRow(**values)


def _dead_letter(row: Row[Any]) -> DeadLetterRow:
    values = dict(row._mapping)
    values["origin"] = Origin(values["origin"])
    values["condition"] = Condition(values["condition"])
    values["source"] = values["source"] or {}
    return DeadLetterRow(**values)
