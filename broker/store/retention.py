"""Pruning the history: finished invocations past the retention, with their attempts.

The ``invocations`` table is the queue and the history at once; what finished
stays there for ``invocations ls|show`` until it is older than
``EVENTWIRE_HISTORY_RETENTION`` (7 days unless set). Each ``serve`` process
that dispatches prunes now and then (:class:`HistoryPruner`); ``eventwire
invocations prune`` does it on demand. Pending and running invocations are
never pruned, nor dead letters (``eventwire dlq purge``). An idempotency key
is remembered as long as its invocation is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.aio.waits import in_background
from broker.models import State
from broker.store.schema import attempts, invocations

log = logging.getLogger("eventwire.history")

CHUNK = 2000
"""Invocations deleted per transaction: a short write at a time, beside the queue's."""
INTERVAL_S = 60.0
"""How often a pruner looks, at most (a shorter retention, a tenth of it)."""

_FINISHED = (State.SUCCEEDED.value, State.FAILED.value)
inv = invocations.c


def _finished_before(before: datetime) -> ColumnElement[bool]:
    return and_(inv.finished_at < before, inv.state.in_(_FINISHED))


async def count_prunable(engine: AsyncEngine, before: datetime) -> int:
    """How many invocations finished before ``before``."""
    async with engine.connect() as conn:
        found = await conn.scalar(select(func.count()).where(_finished_before(before)))
    return int(found or 0)


async def prune_history(engine: AsyncEngine, before: datetime, chunk: int = CHUNK) -> int:
    """Delete the invocations that finished before ``before`` and their attempts,
    ``chunk`` at a time, oldest first; answers how many."""
    pruned = 0
    while True:
        async with engine.begin() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(inv.id)
                        .where(_finished_before(before))
                        .order_by(inv.finished_at)
                        .limit(chunk)
                    )
                ).scalars()
            )
            if ids:
                await conn.execute(delete(attempts).where(attempts.c.invocation_id.in_(ids)))
                await conn.execute(delete(invocations).where(inv.id.in_(ids)))
        pruned += len(ids)
        if len(ids) < chunk:
            return pruned
        await asyncio.sleep(0)  # the queue's own writes go between chunks


class HistoryPruner:
    """Prunes what finished longer than ``retention_s`` ago (None: nothing), every
    ``INTERVAL_S`` (or a tenth of the retention if that is shorter) until stopped."""

    def __init__(
        self, engine: AsyncEngine, retention_s: float | None, clock: Callable[[], datetime]
    ) -> None:
        self.engine = engine
        self.retention_s = retention_s
        self.clock = clock

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Prune while the block runs."""
        if self.retention_s is None:
            yield
            return
        async with in_background(self.run(), "eventwire-history-pruner"):
            yield

    async def run(self) -> None:
        """Until cancelled; a store that cannot be reached is tried again next time."""
        assert self.retention_s is not None
        retention = timedelta(seconds=self.retention_s)
        interval_s = min(INTERVAL_S, self.retention_s / 10)
        while True:
            try:
                pruned = await prune_history(self.engine, self.clock() - retention)
            except Exception as exc:  # the store is down: the queue says so louder
                log.warning("history: pruning failed (%s); trying again later", exc)
            else:
                if pruned:
                    log.info("history: pruned %d invocations past the retention", pruned)
            await asyncio.sleep(interval_s)
