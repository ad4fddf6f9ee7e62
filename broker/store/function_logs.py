"""The SQL behind ``eventwire logs``: what functions wrote, attempt by attempt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.errors import NotFoundError
from broker.store.schema import attempts, functions, invocations


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One attempt's captured output."""

    seq: int
    invocation_id: str
    request_id: str
    attempt: int
    started_at: datetime
    status: str
    text: str

    def lines(self) -> list[str]:
        return self.text.split("\n")


async def function_logs(
    engine: AsyncEngine, function: str, *, limit: int = 20, after_seq: int | None = None
) -> list[LogEntry]:
    """Oldest first: the latest ``limit`` attempts with output, or those after ``after_seq``."""
    a, i = attempts.c, invocations.c
    stmt = (
        select(
            a.seq, a.invocation_id, i.request_id, a.number, a.started_at, a.status, a.log_excerpt
        )
        .join(invocations, i.id == a.invocation_id)
        .where(i.function == function, a.log_excerpt.is_not(None))
    )
    async with engine.connect() as conn:
        if after_seq is None:
            known = await conn.execute(select(functions.c.name).where(functions.c.name == function))
            if known.first() is None:
                raise NotFoundError(f"no function {function}")
            rows = list(await conn.execute(stmt.order_by(a.seq.desc()).limit(limit)))
            rows.reverse()
        else:
            rows = list(await conn.execute(stmt.where(a.seq > after_seq).order_by(a.seq)))
    return [LogEntry(*row) for row in rows]
