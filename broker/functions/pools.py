"""Writing this process's pool figures where ``eventwire functions ls`` can read them, and
into the gauges of ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.aio.waits import in_background
from broker.observability.metrics import Metrics
from broker.observability.pools import PoolReporter
from broker.store.pools import forget_pools, publish_pools

log = logging.getLogger("eventwire.service")

PUBLISH_INTERVAL_S = 2.0


class PoolPublisher:
    """Every ``interval_s``, the figures of each pooled function go to ``function_pools``
    and to ``metrics`` (read here, on the event loop that changes them, not by a scrape)."""

    def __init__(
        self,
        engine: AsyncEngine,
        reporters: Mapping[str, PoolReporter],
        owner: str,
        clock: Callable[[], datetime],
        *,
        metrics: Metrics | None = None,
        interval_s: float = PUBLISH_INTERVAL_S,
    ) -> None:
        self.metrics = metrics
        self.engine = engine
        self.reporters = dict(reporters)
        self.owner = owner
        self.clock = clock
        self.interval_s = interval_s

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Publish while the block runs; remove this process's rows after it."""
        if not self.reporters:
            yield
            return
        try:
            async with in_background(self._run(), "eventwire-pool-publisher"):
                yield
        finally:
            try:
                await forget_pools(self.engine, self.owner)
            except Exception as exc:
                log.warning("pools: could not remove this process's figures (%s)", exc)

    async def publish(self) -> None:
        stats = {name: reporter.pool_stats() for name, reporter in self.reporters.items()}
        if self.metrics is not None:
            for name, figures in stats.items():
                self.metrics.set_pool(name, figures)
        await publish_pools(self.engine, self.owner, stats, self.clock())

    async def _run(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception as exc:
                log.warning("pools: could not publish figures (%s)", exc)
            await asyncio.sleep(self.interval_s)
