"""The invocation queue in SQL: shared by the PostgreSQL and SQLite backends.

The ``invocations`` table is both the queue and the history. Leasing scans
only unfinished rows (a partial index), in enqueue order (``seq``); a lane is
runnable only at its oldest unfinished invocation, and the settle that ends
one leases the next, if due, to the same dispatcher in the same transaction
(``Settlement.chain_lease_s``). The two backends differ in
how they keep concurrent leasers apart (``FOR UPDATE SKIP LOCKED`` and an
advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and in how an
idle dispatcher learns of new work (LISTEN/NOTIFY, or polling).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    LargeBinary,
    Row,
    and_,
    bindparam,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from broker.models import (
    Enqueued,
    FunctionLimits,
    Invocation,
    Lease,
    NewInvocation,
    Origin,
    Settlement,
    State,
)
from broker.queue.wakeup import Wakeup
from broker.store.schema import (
    PENDING,
    RUNNING,
    UTCDateTime,
    attempts,
    dead_letters,
    functions,
    invocations,
)

ACTIVE_STATES = (State.PENDING.value, State.RUNNING.value)

inv = invocations.c
_ahead = invocations.alias("ahead")


def _literal_active(column: Any) -> Any:
    """``state IN ('pending', 'running')`` with the values inline: the partial indexes
    (``ix_invocations_active``, ``ix_invocations_lane``) have that predicate, and SQLite
    uses a partial index only for a query that repeats it literally, not with parameters."""
    return column.in_([literal_column(f"'{state}'") for state in ACTIVE_STATES])


# An invocation is runnable when its time has come (or its lease ran out) and
# nothing older in its lane is unfinished.
_NOW = bindparam("now", type_=UTCDateTime())
_RUNNABLE = and_(
    or_(
        and_(inv.state == State.PENDING.value, inv.available_at <= _NOW),
        and_(inv.state == State.RUNNING.value, inv.lease_expires_at <= _NOW),
    ),
    or_(
        inv.lane.is_(None),
        ~exists().where(
            _ahead.c.lane == inv.lane,
            _ahead.c.seq < inv.seq,
            _literal_active(_ahead.c.state),
        ),
    ),
)

_LEASE_ROW = update(invocations).where(inv.seq == bindparam("b_seq"))
_SETTLE_ROW = update(invocations).where(inv.lease_token == bindparam("b_token"))

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class SqlQueue:
    """``InvocationQueue`` on a SQLAlchemy async engine (see :mod:`broker.queue.base`)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Clock = utcnow,
        account_concurrency: int | None = None,
        keep_succeeded_payloads: bool = True,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.account_concurrency = account_concurrency
        self.keep_succeeded_payloads = keep_succeeded_payloads
        self._wakeup = Wakeup(clock)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    # ------------------------------------------------------------ enqueue

    async def enqueue(self, batch: Sequence[NewInvocation]) -> list[Enqueued]:
        if not batch:
            return []
        async with self.engine.begin() as conn:
            result = await self._enqueue(conn, batch, self.clock())
        self._wakeup.set()
        return result

    async def _enqueue(
        self, conn: AsyncConnection, batch: Sequence[NewInvocation], now: datetime
    ) -> list[Enqueued]:
        rows = [_row(item, now) for item in batch]
        stmt = self._insert(invocations).on_conflict_do_nothing(
            index_elements=[inv.function, inv.idempotency_key]
        )
        keyed = [item for item in batch if item.idempotency_key is not None]
        if not keyed:
            await conn.execute(stmt, rows)
            await self._notify(conn)
            return [Enqueued(item.id, True) for item in batch]
        created = {r.id for r in await conn.execute(stmt.returning(inv.id), rows)}
        existing: dict[tuple[str, str | None], str] = {}
        missing = [item for item in keyed if item.id not in created]
        if missing:
            found = await conn.execute(
                select(inv.function, inv.idempotency_key, inv.id).where(
                    inv.idempotency_key.in_({item.idempotency_key for item in missing})
                )
            )
            existing = {(r.function, r.idempotency_key): r.id for r in found}
        if created:
            await self._notify(conn)
        answers = []
        for item in batch:
            if item.id in created or item.idempotency_key is None:
                answers.append(Enqueued(item.id, True))
            else:
                answers.append(Enqueued(existing[(item.function, item.idempotency_key)], False))
        return answers

    async def _notify(self, conn: AsyncConnection) -> None:
        """Tell idle dispatchers in other processes that there is work (backend-specific)."""

    # ------------------------------------------------------------ lease

    async def lease(
        self,
        n: int,
        owner: str,
        functions: Mapping[str, FunctionLimits],
        now: datetime,
    ) -> list[Lease]:
        self._wakeup.clear()
        if n <= 0 or not functions:
            return []
        async with self.engine.begin() as conn:
            limited = {
                f: lim.reserved_concurrency
                for f, lim in functions.items()
                if lim.reserved_concurrency is not None
            }
            capacity: dict[str, int] = {}
            room = n
            if limited or self.account_concurrency is not None:
                await self._lock_for_limits(conn)
                capacity = await self._capacity(conn, limited, now)
            for f, lim in functions.items():
                if lim.at_most is not None:
                    capacity[f] = min(capacity.get(f, lim.at_most), lim.at_most)
            if self.account_concurrency is not None:
                room = min(n, self.account_concurrency - await self._running(conn, now))
            eligible = [f for f in functions if capacity.get(f, 1) > 0]
            if not eligible:
                return []
            in_seq_order = len(eligible) == len(functions)
            if in_seq_order:
                await self._scan_in_seq_order(conn)
            candidates = await conn.execute(
                self._candidates(n, by_function=not in_seq_order),
                {"now": now, "fns": eligible},
            )
            chosen, throttled = _within_capacity(candidates.all(), capacity, max(room, 0))
            if throttled:
                await conn.execute(
                    update(functions_t)
                    .where(functions_t.c.name == bindparam("b_name"))
                    .values(throttles=functions_t.c.throttles + bindparam("b_count")),
                    [{"b_name": f, "b_count": c} for f, c in throttled.items()],
                )
            if not chosen:
                return []
            taken = [
                (row, _lease(row, functions[row.function].lease_s, now), owner) for row in chosen
            ]
            await _mark_leased(conn, taken, now)
        return [lease for _row, lease, _owner in taken]

    def _candidates(self, n: int, *, by_function: bool) -> Any:
        """The runnable invocations of the functions ``fns``, oldest first.

        With ``by_function`` false (every function served is eligible) the scan
        should walk the partial index of unfinished invocations in seq order and
        stop at the batch; with it true (some functions are at their limit and
        may hold a large backlog) it may start from the function index instead.
        """
        function = inv.function if by_function else self._function_term()
        return (
            select(invocations)
            .where(
                function.in_(bindparam("fns", expanding=True)),
                _literal_active(inv.state),
                _RUNNABLE,
            )
            .order_by(inv.seq)
            .limit(n)
        )

    def _function_term(self) -> Any:
        """The function column as the seq-order candidate scan filters on it.

        ``function || ''`` keeps the planner off ix_invocations_function_seq,
        which holds every function's whole history (finished rows too).
        """
        return inv.function.concat(literal(""))

    async def _scan_in_seq_order(self, conn: AsyncConnection) -> None:
        """Steer this transaction's candidate scan onto the unfinished index (backend-specific)."""

    async def _lock_for_limits(self, conn: AsyncConnection) -> None:
        """Serialize leasers while reserved concurrency is counted (backend-specific)."""

    async def _running(self, conn: AsyncConnection, now: datetime) -> int:
        """Invocations running now, of every function (the account's concurrency)."""
        count = await conn.scalar(select(func.count()).where(RUNNING, inv.lease_expires_at > now))
        return int(count or 0)

    async def _capacity(
        self, conn: AsyncConnection, limited: Mapping[str, int], now: datetime
    ) -> dict[str, int]:
        if not limited:
            return {}
        running = await conn.execute(
            select(inv.function, func.count())
            .where(RUNNING, inv.lease_expires_at > now, inv.function.in_(list(limited)))
            .group_by(inv.function)
        )
        counts: dict[str, int] = {f: c for f, c in running}
        return {f: limit - counts.get(f, 0) for f, limit in limited.items()}

    # ------------------------------------------------------------ extend / release

    async def extend(self, expiries: Mapping[str, datetime]) -> set[str]:
        if not expiries:
            return set()
        async with self.engine.begin() as conn:
            held = await self._held(conn, list(expiries))
            if held:
                await conn.execute(
                    _SETTLE_ROW.values(lease_expires_at=bindparam("b_expires")),
                    [{"b_token": t, "b_expires": expiries[t]} for t in held],
                )
        return set(held)

    async def release(self, tokens: Sequence[str]) -> None:
        if not tokens:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                update(invocations)
                .where(inv.lease_token.in_(list(tokens)), inv.state == State.RUNNING.value)
                .values(
                    state=State.PENDING.value,
                    lease_owner=None,
                    lease_token=None,
                    lease_expires_at=None,
                    attempts=inv.attempts - 1,
                    updated_at=self.clock(),
                )
            )
            await self._notify(conn)

    async def _held(self, conn: AsyncConnection, tokens: Sequence[str]) -> dict[str, Row[Any]]:
        """The leases of ``tokens`` still held (locked for this transaction), by token."""
        rows = await conn.execute(
            self._lock_rows(
                select(inv.lease_token, inv.lease_owner, inv.function, inv.lane).where(
                    inv.lease_token.in_(list(tokens)), inv.state == State.RUNNING.value
                )
            )
        )
        return {row.lease_token: row for row in rows}

    def _lock_rows(self, stmt: Any) -> Any:
        return stmt

    # ------------------------------------------------------------ settle

    async def settle(
        self, settlements: Sequence[Settlement], now: datetime
    ) -> dict[str, Lease | None]:
        if not settlements:
            return {}
        chained: dict[str, Lease] = {}
        async with self.engine.begin() as conn:
            held = await self._held(conn, [s.lease_token for s in settlements])
            applied = [s for s in settlements if s.lease_token in held]
            if applied:
                await self._apply(conn, applied, now)
                chained = await self._chain(conn, applied, held, now)
        if len(chained) < len(applied) or any(s.enqueue for s in applied) or not applied:
            self._wakeup.set()  # else each settlement's slot went to its lane's next
        answers: dict[str, Lease | None] = dict.fromkeys(held)
        answers.update(chained)
        return answers

    async def _chain(
        self,
        conn: AsyncConnection,
        applied: Sequence[Settlement],
        held: Mapping[str, Row[Any]],
        now: datetime,
    ) -> dict[str, Lease]:
        """Each lane's next invocation, leased to the owner of the settlement that ended its
        predecessor when it asked (``Settlement.chain_lease_s``) and the next is due and of
        the same function: it takes the predecessor's place in the running counts."""
        asked: dict[str, tuple[Settlement, Row[Any]]] = {}
        for s in applied:
            ended = held[s.lease_token]
            if s.chain_lease_s and s.state.terminal and ended.lane is not None:
                asked[ended.lane] = (s, ended)
        if not asked:
            return {}
        heads = (
            select(func.min(inv.seq))
            .where(inv.lane.in_(list(asked)), _literal_active(inv.state))
            .group_by(inv.lane)
        )
        rows = await conn.execute(self._lock_rows(select(invocations).where(inv.seq.in_(heads))))
        taken: list[tuple[Row[Any], Lease, str]] = []
        chained: dict[str, Lease] = {}
        for row in rows:
            s, ended = asked[row.lane]
            if (
                row.state == State.PENDING.value
                and row.function == ended.function
                and row.available_at <= now
            ):
                assert s.chain_lease_s is not None
                lease = _lease(row, s.chain_lease_s, now)
                taken.append((row, lease, ended.lease_owner))
                chained[s.lease_token] = lease
        await _mark_leased(conn, taken, now)
        return chained

    async def _apply(
        self, conn: AsyncConnection, applied: Sequence[Settlement], now: datetime
    ) -> None:
        await conn.execute(
            _SETTLE_ROW.values(
                state=bindparam("b_state"),
                available_at=func.coalesce(
                    bindparam("b_retry_at", type_=inv.available_at.type), inv.available_at
                ),
                function_errors=bindparam("b_function_errors"),
                system_errors=bindparam("b_system_errors"),
                result=bindparam("b_result"),
                error_type=bindparam("b_error_type"),
                error_message=bindparam("b_error_message"),
                finished_at=bindparam("b_finished_at", type_=inv.finished_at.type),
                payload=func.coalesce(bindparam("b_payload", type_=LargeBinary()), inv.payload),
                source=func.coalesce(
                    bindparam("b_source", type_=JSON(none_as_null=True)), inv.source
                ),
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
                updated_at=now,
            ),
            [_settle_params(s, now, self.keep_succeeded_payloads) for s in applied],
        )
        await conn.execute(
            attempts.insert(),
            [
                {
                    "invocation_id": s.invocation_id,
                    "number": s.attempt.number,
                    "started_at": s.attempt.started_at,
                    "duration_ms": s.attempt.duration_ms,
                    "status": s.attempt.status,
                    "error_type": s.attempt.error_type,
                    "error_message": s.attempt.error_message,
                    "error_trace": list(s.attempt.error_trace) or None,
                    "log_excerpt": s.attempt.log_excerpt,
                }
                for s in applied
            ],
        )
        follow_ons = [item for s in applied for item in s.enqueue]
        if follow_ons:
            await self._enqueue(conn, follow_ons, now)
        letters = [s.dead_letter for s in applied if s.dead_letter is not None]
        if letters:
            await conn.execute(dead_letters.insert(), [d.as_row() for d in letters])
        if any(s.state is State.PENDING for s in applied):
            await self._notify(conn)

    # ------------------------------------------------------------ lanes

    async def running(self, function: str, now: datetime) -> int:
        async with self.engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).where(
                    RUNNING, inv.function == function, inv.lease_expires_at > now
                )
            )
            await conn.rollback()
        return int(count or 0)

    async def lane_depths(self, lanes: Sequence[str]) -> dict[str, int]:
        if not lanes:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(inv.lane, func.count())
                # The states inline, as in the lease: only then does SQLite use the partial
                # index ix_invocations_lane instead of scanning every row, payloads and all.
                .where(inv.lane.in_(list(lanes)), _literal_active(inv.state))
                .group_by(inv.lane)
            )
            counts: dict[str, int] = {lane: int(n) for lane, n in rows}
            await conn.rollback()
        return {lane: counts.get(lane, 0) for lane in lanes}

    # ------------------------------------------------------------ wait / close

    async def next_due(self, functions: Mapping[str, FunctionLimits]) -> datetime | None:
        """When the earliest delayed invocation or running lease comes due.

        Pending invocations already due are left out: they were not leased because
        they wait behind their lane's head (or for concurrency), and what frees
        them (a settle, an enqueue) wakes the dispatcher; counting them would make
        an idle dispatcher poll without pause.
        """
        names = list(functions)
        now = self.clock()
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        select(func.min(inv.available_at, type_=UTCDateTime()))
                        .where(PENDING, inv.function.in_(names), inv.available_at > now)
                        .scalar_subquery(),
                        select(func.min(inv.lease_expires_at, type_=UTCDateTime()))
                        .where(RUNNING, inv.function.in_(names))
                        .scalar_subquery(),
                    )
                )
            ).one()
            await conn.rollback()
        times: list[datetime] = [t for t in row if t is not None]
        return min(times, default=None)

    async def wait(self, functions: Mapping[str, FunctionLimits], timeout_s: float) -> None:
        await self._wakeup.wait(lambda: self.next_due(functions), timeout_s)

    async def close(self) -> None:
        """The engine belongs to the caller; nothing of the queue's own to release."""


functions_t = functions


def _row(item: NewInvocation, now: datetime) -> dict[str, Any]:
    return {
        "id": item.id,
        "request_id": item.request_id or item.id,
        "function": item.function,
        "origin": item.origin.value,
        "source": dict(item.source),
        "lane": item.lane,
        "idempotency_key": item.idempotency_key,
        "sync": item.sync,
        "payload": item.payload,
        "state": State.PENDING.value,
        "attempts": 0,
        "function_errors": 0,
        "system_errors": 0,
        "first_enqueued_at": item.first_enqueued_at or now,
        "available_at": item.available_at or now,
        "updated_at": now,
    }


def _within_capacity(
    rows: Sequence[Row[Any]], capacity: Mapping[str, int], account: int
) -> tuple[list[Row[Any]], Counter[str]]:
    """Candidates that fit their function's remaining reserved concurrency and the
    account's (``account`` more in all); the rest throttled."""
    room = dict(capacity)
    chosen: list[Row[Any]] = []
    throttled: Counter[str] = Counter()
    for row in rows:
        left = room.get(row.function)
        if len(chosen) >= account:
            throttled[row.function] += 1
        elif left is None:
            chosen.append(row)
        elif left > 0:
            room[row.function] = left - 1
            chosen.append(row)
        else:
            throttled[row.function] += 1
    return chosen, throttled


async def _mark_leased(
    conn: AsyncConnection, taken: Sequence[tuple[Row[Any], Lease, str]], now: datetime
) -> None:
    """Mark the rows of ``taken`` running under their lease, for its owner."""
    if not taken:
        return
    await conn.execute(
        _LEASE_ROW.values(
            state=State.RUNNING.value,
            lease_owner=bindparam("b_owner"),
            lease_token=bindparam("b_token"),
            lease_expires_at=bindparam("b_expires"),
            attempts=inv.attempts + 1,
            updated_at=now,
        ),
        [
            {
                "b_seq": row.seq,
                "b_owner": owner,
                "b_token": lease.token,
                "b_expires": lease.expires_at,
            }
            for row, lease, owner in taken
        ],
    )


def _lease(row: Row[Any], lease_s: float, now: datetime) -> Lease:
    invocation = Invocation(
        id=row.id,
        request_id=row.request_id,
        function=row.function,
        payload=row.payload,
        origin=Origin(row.origin),
        lane=row.lane,
        idempotency_key=row.idempotency_key,
        sync=row.sync,
        state=State.RUNNING,
        attempts=row.attempts + 1,
        function_errors=row.function_errors,
        system_errors=row.system_errors,
        first_enqueued_at=row.first_enqueued_at,
        available_at=row.available_at,
        source=row.source or {},
    )
    return Lease(
        token=str(uuid.uuid4()),
        invocation=invocation,
        expires_at=now + timedelta(seconds=lease_s),
    )


def _settle_params(s: Settlement, now: datetime, keep_succeeded: bool) -> dict[str, Any]:
    """The settle's parameters; an empty ``b_payload`` (not NULL: the COALESCE takes it)
    drops the payload of an invocation that succeeded when ``keep_succeeded`` is false."""
    payload = s.payload
    if not keep_succeeded and s.state is State.SUCCEEDED:
        payload = b""
    return {
        "b_token": s.lease_token,
        "b_state": s.state.value,
        "b_retry_at": s.retry_at,
        "b_function_errors": s.function_errors,
        "b_system_errors": s.system_errors,
        "b_result": s.result,
        "b_error_type": s.error_type,
        "b_error_message": s.error_message,
        "b_finished_at": now if s.state.terminal else None,
        "b_payload": payload,
        "b_source": None if s.source is None else dict(s.source),
    }
