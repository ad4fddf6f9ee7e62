"""The store at a glance, as ``eventwire top`` shows it (below the command line, so that
the API can serve it too): per function the attempts and errors per second over the last
minute, p50 and p99 duration of the latest attempts, pending and running invocations,
the oldest pending one's wait and the DLQ; per mapping its state, lag and iterator age;
the schedules due next. One JSON-ready snapshot, read with a handful of queries (each
cheap on every store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.store.activity import recent_activity
from broker.store.history import list_functions
from broker.store.mappings import list_mappings
from broker.store.pools import recent_durations
from broker.store.schedules import list_schedules
from broker.times import iso

WINDOW = timedelta(minutes=1)
"""Rates are over the attempts started in this last stretch."""
SCHEDULES_SHOWN = 10
"""The schedules listed: those due soonest."""


async def overview(engine: AsyncEngine, now: datetime | None = None) -> dict[str, Any]:
    """One view of the store: functions, mappings, the schedules due next."""
    now = now or datetime.now(UTC)
    rows = await list_functions(engine)
    activity = await recent_activity(engine, now - WINDOW)
    durations = await recent_durations(engine, [row.name for row in rows])
    mappings = await list_mappings(engine)
    schedules = await list_schedules(engine)
    window_s = WINDOW.total_seconds()
    functions = []
    for row in rows:
        done = activity.get(row.name)
        attempts, errors = (done.attempts, done.errors) if done else (0, 0)
        oldest = row.oldest_pending_at
        functions.append(
            {
                "name": row.name,
                "invocations_per_s": round(attempts / window_s, 3),
                "errors_per_s": round(errors / window_s, 3),
                "error_rate": round(errors / attempts, 3) if attempts else 0.0,
                "p50_ms": durations[row.name].p50_ms,
                "p99_ms": durations[row.name].p99_ms,
                "pending": row.pending,
                "running": row.running,
                "reserved_concurrency": row.reserved_concurrency,
                "oldest_pending_age_s": round((now - oldest).total_seconds(), 3) if oldest else 0,
                "dead_letters": row.dead_letters,
            }
        )
    due = sorted(
        (s for s in schedules if s.next_slot_at is not None),
        key=lambda s: s.next_slot_at or now,
    )[:SCHEDULES_SHOWN]
    return {
        "at": iso(now),
        "functions": functions,
        "mappings": [
            {
                "name": m.name,
                "kind": m.kind,
                "status": m.status,
                "lag": m.lag,
                "iterator_age_ms": m.iterator_age_ms,
            }
            for m in mappings
        ],
        "schedules": [
            {"name": s.name, "function": s.function, "next_slot_at": iso(s.next_slot_at)}
            for s in due
        ],
    }
