"""The SQL behind schedules: their persisted state and the scheduler's leader lease.

A schedule's row holds what must survive a restart or a change of leader:
paused or not, the cursor (every slot up to it was fired or skipped), the
last slot fired with its invocation, the next slot, and counts of slots
missed (downtime beyond ``catch_up``) and skipped (``overlap``).

The leader lease is a row per role: a process holds it until ``expires_at``
and renews it; another takes it over only once it has expired.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config.models import ScheduleConfig
from broker.errors import NotFoundError
from broker.store.schema import invocations, leader_leases, schedules

sc = schedules.c
ACTIVE = "active"
PAUSED = "paused"
COMPLETED = "completed"
DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    name: str
    function: str
    expression: str
    timezone: str
    config: Mapping[str, Any]
    config_hash: str
    state: str
    cursor_at: datetime
    next_slot_at: datetime | None
    last_slot_at: datetime | None
    last_fired_at: datetime | None
    last_invocation_id: str | None
    last_outcome: str | None
    last_invocation_state: str | None
    missed: int
    skipped: int
    updated_at: datetime

    def schedule(self) -> ScheduleConfig:
        return ScheduleConfig.model_validate(self.config)


@dataclass(frozen=True, slots=True)
class Advance:
    """What one pass of the scheduler changes on a schedule's row."""

    cursor_at: datetime
    next_slot_at: datetime | None
    state: str = ACTIVE
    last_slot_at: datetime | None = None
    last_invocation_id: str | None = None
    last_outcome: str | None = None
    missed: int = 0
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Leadership:
    leader: bool
    owner: str
    expires_at: datetime


def _insert(engine: AsyncEngine) -> Any:
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


async def register_schedules(
    engine: AsyncEngine,
    configured: Mapping[str, ScheduleConfig],
    next_slots: Mapping[str, datetime | None],
    now: datetime,
) -> None:
    """Make the rows match the configuration; state of unchanged schedules is kept.

    A new schedule starts its cursor now (no backfill from the past). A
    changed one keeps its cursor and pause, and is active again if it had
    completed. Rows of schedules no longer configured are removed.
    """
    async with engine.begin() as conn:
        existing = {
            r.name: r for r in await conn.execute(select(sc.name, sc.config_hash, sc.state))
        }
        gone = set(existing) - set(configured)
        if gone:
            await conn.execute(delete(schedules).where(sc.name.in_(gone)))
        for name, schedule in configured.items():
            values = {
                "function": schedule.function,
                "expression": schedule.expression,
                "timezone": schedule.timezone,
                "config": schedule.model_dump(mode="json", by_alias=True),
                "config_hash": schedule.config_hash(),
                "updated_at": now,
            }
            row = existing.get(name)
            if row is None:
                await conn.execute(
                    _insert(engine)(schedules)
                    .values(
                        name=name,
                        state=ACTIVE,
                        cursor_at=now,
                        next_slot_at=next_slots.get(name),
                        **values,
                    )
                    .on_conflict_do_nothing(index_elements=[sc.name])
                )
            elif row.config_hash != values["config_hash"]:
                state = ACTIVE if row.state in (COMPLETED, DELETED) else row.state
                await conn.execute(
                    update(schedules)
                    .where(sc.name == name)
                    .values(state=state, next_slot_at=next_slots.get(name), **values)
                )


def _query() -> Any:
    inv = invocations.c
    return select(schedules, inv.state.label("last_invocation_state")).outerjoin(
        invocations, inv.id == sc.last_invocation_id
    )


def _row(r: Row[Any]) -> ScheduleRow:
    return ScheduleRow(
        name=r.name,
        function=r.function,
        expression=r.expression,
        timezone=r.timezone,
        config=r.config,
        config_hash=r.config_hash,
        state=r.state,
        cursor_at=r.cursor_at,
        next_slot_at=r.next_slot_at,
        last_slot_at=r.last_slot_at,
        last_fired_at=r.last_fired_at,
        last_invocation_id=r.last_invocation_id,
        last_outcome=r.last_outcome,
        last_invocation_state=r.last_invocation_state,
        missed=r.missed,
        skipped=r.skipped,
        updated_at=r.updated_at,
    )


async def list_schedules(
    engine: AsyncEngine, *, include_deleted: bool = False
) -> list[ScheduleRow]:
    query = _query().order_by(sc.name)
    if not include_deleted:
        query = query.where(sc.state != DELETED)
    async with engine.connect() as conn:
        rows = [_row(r) for r in await conn.execute(query)]
        await conn.rollback()
    return rows


async def get_schedule(engine: AsyncEngine, name: str) -> ScheduleRow:
    async with engine.connect() as conn:
        found = (await conn.execute(_query().where(sc.name == name))).one_or_none()
        if found is None:
            names = [n for (n,) in await conn.execute(select(sc.name).order_by(sc.name))]
        await conn.rollback()
    if found is None:
        known = ", ".join(names) or "none — has `eventwire serve` run with a config?"
        raise NotFoundError(f"unknown schedule {name!r}; registered schedules: {known}")
    return _row(found)


async def set_state(
    engine: AsyncEngine, name: str, state: str, now: datetime, *, cursor_at: datetime | None = None
) -> None:
    """Pause or resume; resuming moves the cursor to now (slots while paused are not owed)."""
    values: dict[str, Any] = {"state": state, "updated_at": now}
    if cursor_at is not None:
        values["cursor_at"] = cursor_at
    async with engine.begin() as conn:
        await conn.execute(update(schedules).where(sc.name == name).values(**values))


async def advance(
    engine: AsyncEngine, name: str, expected_cursor: datetime, change: Advance, now: datetime
) -> bool:
    """Record one scheduler pass, if nobody moved the cursor meanwhile (compare-and-set)."""
    values: dict[str, Any] = {
        "cursor_at": change.cursor_at,
        "next_slot_at": change.next_slot_at,
        "state": case((sc.state == PAUSED, PAUSED), else_=change.state),
        "missed": sc.missed + change.missed,
        "skipped": sc.skipped + change.skipped,
        "updated_at": now,
    }
    if change.last_slot_at is not None:
        values["last_slot_at"] = change.last_slot_at
        values["last_outcome"] = change.last_outcome
        values["last_fired_at"] = now
    if change.last_invocation_id is not None:
        values["last_invocation_id"] = change.last_invocation_id
    async with engine.begin() as conn:
        result = await conn.execute(
            update(schedules)
            .where(sc.name == name, sc.cursor_at == expected_cursor)
            .values(**values)
        )
    return bool(result.rowcount)


async def invocation_state(engine: AsyncEngine, invocation_id: str) -> tuple[str, int] | None:
    """``(state, attempts)`` of an invocation, or None if there is none with that id."""
    inv = invocations.c
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(inv.state, inv.attempts).where(inv.id == invocation_id))
        ).one_or_none()
        await conn.rollback()
    return (row.state, row.attempts) if row is not None else None


# ---------------------------------------------------------------- leader lease

lc = leader_leases.c


async def lead(
    engine: AsyncEngine, role: str, owner: str, now: datetime, lease_s: float
) -> Leadership:
    """Take or renew the lease on ``role`` for ``owner``; say who holds it and until when."""
    expires = now + timedelta(seconds=lease_s)
    async with engine.begin() as conn:
        await conn.execute(
            _insert(engine)(leader_leases)
            .values(role=role, owner=owner, acquired_at=now, expires_at=expires)
            .on_conflict_do_nothing(index_elements=[lc.role])
        )
        await conn.execute(
            update(leader_leases)
            .where(lc.role == role, (lc.owner == owner) | (lc.expires_at <= now))
            .values(
                owner=owner,
                expires_at=expires,
                acquired_at=case((lc.owner == owner, lc.acquired_at), else_=now),
            )
        )
        held = (await conn.execute(select(lc.owner, lc.expires_at).where(lc.role == role))).one()
    return Leadership(held.owner == owner, held.owner, held.expires_at)


async def step_down(engine: AsyncEngine, role: str, owner: str, now: datetime) -> None:
    """Give the lease up at once (a clean stop), so another process leads without waiting."""
    async with engine.begin() as conn:
        await conn.execute(
            update(leader_leases).where(lc.role == role, lc.owner == owner).values(expires_at=now)
        )
