"""The queue's backlog as gauges: pending invocations, the oldest one's age, the DLQ's size.

Read from the store every ``REFRESH_S`` by each ``serve`` process that serves
``/metrics`` (one grouped query over the active invocations' partial index and
one over the dead letters, as ``eventwire functions ls`` runs). With the Redis
queue the store's view trails the queue by the history writer's lag (about a
second) and counts running invocations as pending until they finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.aio.waits import in_background
from broker.observability.metrics import Metrics
from broker.store.history import list_functions

log = logging.getLogger("eventwire.metrics")

REFRESH_S = 5.0


class BacklogGauges:
    """Every ``interval_s``, each function's backlog goes to ``metrics``."""

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: Metrics,
        clock: Callable[[], datetime],
        *,
        interval_s: float = REFRESH_S,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.clock = clock
        self.interval_s = interval_s

    @contextlib.asynccontextmanager
    async def running(self, enabled: bool = True) -> AsyncIterator[None]:
        """Refresh while the block runs (not at all unless ``enabled``)."""
        if not enabled:
            yield
            return
        async with in_background(self._run(), "eventwire-backlog-gauges"):
            yield

    async def refresh(self) -> None:
        rows = await list_functions(self.engine)
        now = self.clock()
        for row in rows:
            oldest = row.oldest_pending_at
            self.metrics.set_backlog(
                row.name,
                pending=row.pending,
                oldest_age_s=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
                dead_letters=row.dead_letters,
                throttles=row.throttles,
            )

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("metrics: could not read the backlog from the store (%s)", exc)
            await asyncio.sleep(self.interval_s)
