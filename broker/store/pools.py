"""The SQL behind ``functions ls``'s live figures: pool sizes, cold starts, recent durations.

Each ``eventwire serve`` writes one ``function_pools`` row per pooled function
(:func:`publish_pools`) every few seconds and deletes its rows when it stops;
readers add up the rows written recently, so a process that died without
cleaning up drops out on its own. Durations come from the attempts table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.observability.pools import PoolStats
from broker.store.schema import attempts, function_pools, invocations

FRESH_S = 15.0
"""Rows older than this are of a process that is gone."""

RECENT_ATTEMPTS = 1000
"""Durations are the percentiles of a function's latest attempts, this many at most."""


@dataclass(frozen=True, slots=True)
class Durations:
    count: int
    p50_ms: float | None
    p99_ms: float | None


async def publish_pools(
    engine: AsyncEngine, owner: str, stats: Mapping[str, PoolStats], now: datetime
) -> None:
    """Write ``owner``'s current figures, one row per function."""
    if not stats:
        return
    rows = [
        {
            "owner": owner,
            "function": name,
            "idle": s.idle,
            "busy": s.busy,
            "starting": s.starting,
            "cold_starts": s.cold_starts,
            "cold_start_p50_ms": s.cold_start_p50_ms,
            "updated_at": now,
        }
        for name, s in stats.items()
    ]
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(function_pools)
    changed = {key: stmt.excluded[key] for key in rows[0] if key not in ("owner", "function")}
    async with engine.begin() as conn:
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[function_pools.c.owner, function_pools.c.function], set_=changed
            ),
            rows,
        )


async def forget_pools(engine: AsyncEngine, owner: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(function_pools).where(function_pools.c.owner == owner))


async def pool_figures(engine: AsyncEngine, now: datetime) -> dict[str, PoolStats]:
    """Per function, the figures of every serving process added up."""
    p = function_pools.c
    stmt = select(function_pools).where(p.updated_at >= now - timedelta(seconds=FRESH_S))
    totals: dict[str, PoolStats] = {}
    async with engine.connect() as conn:
        for row in await conn.execute(stmt):
            seen = totals.get(row.function, PoolStats())
            totals[row.function] = PoolStats(
                idle=seen.idle + row.idle,
                busy=seen.busy + row.busy,
                starting=seen.starting + row.starting,
                cold_starts=seen.cold_starts + row.cold_starts,
                cold_start_p50_ms=_first(seen.cold_start_p50_ms, row.cold_start_p50_ms),
            )
    return totals


async def recent_durations(
    engine: AsyncEngine, functions: Sequence[str], *, limit: int = RECENT_ATTEMPTS
) -> dict[str, Durations]:
    """p50 and p99 duration of each function's latest attempts that ran."""
    a, i = attempts.c, invocations.c
    found: dict[str, Durations] = {}
    async with engine.connect() as conn:
        for name in functions:
            stmt = (
                select(a.duration_ms)
                .join(invocations, i.id == a.invocation_id)
                .where(i.function == name, a.status != "expired")
                .order_by(a.seq.desc())
                .limit(limit)
            )
            values = sorted((await conn.execute(stmt)).scalars())
            found[name] = Durations(len(values), percentile(values, 0.50), percentile(values, 0.99))
    return found


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of already sorted values; None for none."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil(n * fraction), at least 1
    return ordered[int(rank) - 1]


def _first(a: float | None, b: float | None) -> float | None:
    return a if a is not None else b
