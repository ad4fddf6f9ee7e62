"""What each function did lately: attempts and errors over a recent window (``eventwire top``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.store.schema import attempts, invocations


@dataclass(frozen=True, slots=True)
class Activity:
    attempts: int
    errors: int
    """Attempts that ran and did not succeed (expired events did not run)."""


async def recent_activity(engine: AsyncEngine, since: datetime) -> dict[str, Activity]:
    """Per function, the attempts started since ``since`` that ran, and those that failed."""
    a, i = attempts.c, invocations.c
    ran = a.status != "expired"
    stmt = (
        select(
            i.function,
            func.count(case((ran, 1))).label("attempts"),
            func.count(case((ran & (a.status != "success"), 1))).label("errors"),
        )
        .join(invocations, i.id == a.invocation_id)
        .where(a.started_at >= since)
        .group_by(i.function)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return {row.function: Activity(row.attempts, row.errors) for row in rows}
