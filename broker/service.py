"""``eventwire serve``: everything one process runs, started and stopped in order.

Start: open the store (bringing an embedded SQLite schema up to date, or
checking a PostgreSQL one), register the configured functions, start their
invokers, open the queue, run the dispatcher and the pollers — those of the
process's roles (:mod:`broker.config.roles`). Stop (SIGINT/SIGTERM or
``Service.stop()``): the dispatcher stops leasing, lets running invocations
finish within the grace period and gives back the rest; then invokers and
connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.aio import loop
from broker.config.models import ProjectConfig
from broker.config.roles import ROLES
from broker.config.settings import Settings
from broker.dispatch.dispatcher import Dispatcher
from broker.functions.catalog import Catalog
from broker.functions.delivery import served_functions
from broker.functions.pools import PoolPublisher
from broker.history.process import copying_history
from broker.observability.metrics import Metrics, serving_metrics
from broker.observability.pools import PoolReporter
from broker.observability.tracing import NO_TRACING, Tracing
from broker.queue import open_queue
from broker.queue.sql import Clock, utcnow
from broker.sources.pollers import Poller, PollerContext, SystemTimer, Timer, create_pollers
from broker.store.backlog import BacklogGauges
from broker.store.engine import UNREACHABLE, create_engine, redacted, unusable
from broker.store.history import register_functions
from broker.store.mappings import register_mappings
from broker.store.migrate import ensure_schema
from broker.store.retention import HistoryPruner

log = logging.getLogger("eventwire.service")


class Service:
    def __init__(
        self,
        settings: Settings,
        config: ProjectConfig,
        *,
        config_path: str | None = None,
        migrate: bool = False,
        clock: Clock = utcnow,
        timer: Timer | None = None,
        tune_gc: bool = False,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        """``tune_gc``: once started, fit the garbage collector to a process that only
        serves (:func:`broker.aio.loop.tune_gc`). ``tracing``: what makes the spans of
        each invocation (:mod:`broker.observability.tracing`); shut down as it stops."""
        self.settings = settings
        self.tracing = tracing
        self.tune_gc = tune_gc
        self.config = config
        self.config_path = config_path
        self.migrate = migrate
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.started = asyncio.Event()
        self.timer: Timer = timer or SystemTimer()
        self.dispatcher: Dispatcher | None = None
        self.pollers: list[Poller] = []
        self.metrics = Metrics()
        self.metrics_url: str | None = None
        """Where ``GET /metrics`` answers besides the API listener, once started."""
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        for poller in self.pollers:
            poller.stop()

    async def run(self, *, handle_signals: bool = True) -> None:
        _code_on_path(self.config_path)
        roles = self.settings.role_set
        engine = create_engine(self.settings.database_url)
        try:
            await _prepare_store(engine, self.settings, self.config, self.migrate)
            catalog = None
            if "dispatch" in roles:
                catalog = await Catalog.start(self.config, self.settings, observer=self.metrics)
            try:
                async with (
                    open_queue(
                        self.settings, engine, clock=self.clock, tracing=self.tracing
                    ) as queue,
                    copying_history(self.settings, self.owner)
                    if catalog is not None
                    else contextlib.nullcontext(),
                ):
                    if catalog is not None:
                        self.dispatcher = Dispatcher(
                            queue,
                            catalog,
                            owner=self.owner,
                            clock=self.clock,
                            concurrency=self.settings.concurrency,
                            shutdown_grace_s=self.settings.shutdown_grace_s,
                            poll_interval_s=self.settings.poll_interval_s,
                            settle_batch=self.settings.settle_batch,
                            metrics=self.metrics,
                            tracing=self.tracing,
                        )
                    context = PollerContext(
                        self.settings,
                        self.config,
                        engine,
                        queue,
                        self.owner,
                        self.timer,
                        self.metrics,
                        self.tracing,
                    )
                    self.pollers = create_pollers(context, roles)
                    for poller in self.pollers:
                        await poller.start()
                    if self._stop.is_set():
                        return
                    listen = self.settings.metrics_listen
                    with serving_metrics(self.metrics, listen) as self.metrics_url:
                        if handle_signals:
                            _install_signals(self.stop)
                        self._log_serving(catalog)
                        if self.tune_gc:
                            loop.tune_gc()
                        self.started.set()
                        pools = {
                            name: deployed.invoker
                            for name, deployed in (catalog or {}).items()
                            if isinstance(deployed.invoker, PoolReporter)
                        }
                        # Who runs the functions prunes their history.
                        retention = (
                            self.settings.history_retention_s if catalog is not None else None
                        )
                        scraped = listen is not None or self.settings.api_listen is not None
                        async with (
                            PoolPublisher(
                                engine, pools, self.owner, self.clock, metrics=self.metrics
                            ).running(),
                            HistoryPruner(engine, retention, self.clock).running(),
                            BacklogGauges(engine, self.metrics, self.clock).running(scraped),
                        ):
                            await self._run_all()
            finally:
                if catalog is not None:
                    await catalog.close()
        finally:
            await engine.dispose()
            self.tracing.shutdown()
        log.info("stopped")

    def _log_serving(self, catalog: Catalog | None) -> None:
        settings = self.settings
        log.info(
            "serving %s as %s (%s, store %s%s)",
            f"{len(catalog)} functions" if catalog is not None else "no functions",
            self.owner,
            f"concurrency {settings.concurrency}"
            if settings.role_set == frozenset(ROLES)
            else f"roles {settings.roles}",
            redacted(settings.database_url),
            f", queue {redacted(settings.queue_url)}" if settings.queue_url else "",
        )

    async def _run_all(self) -> None:
        """The dispatcher and every poller; if one of them ends on its own, all stop."""
        tasks: set[asyncio.Task[object]] = {
            asyncio.create_task(self._stop.wait(), name="eventwire-stop")
        }
        if self.dispatcher is not None:
            tasks.add(asyncio.create_task(self.dispatcher.run(), name="eventwire-dispatcher"))
        tasks |= {
            asyncio.create_task(p.run(), name=f"eventwire-poller-{p.name}") for p in self.pollers
        }
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not self._stop.is_set():
            ended = ", ".join(sorted(t.get_name() for t in done))
            log.error("%s ended unexpectedly; stopping", ended)
        self.stop()
        await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


async def _prepare_store(
    engine: AsyncEngine, settings: Settings, config: ProjectConfig, migrate: bool
) -> None:
    try:
        await ensure_schema(engine, migrate=migrate)
        await register_functions(engine, served_functions(config), datetime.now(UTC))
        await register_mappings(engine, config.mappings, datetime.now(UTC))
    except UNREACHABLE as exc:
        raise unusable(settings.database_url, exc) from None


def _code_on_path(config_path: str | None) -> None:
    """Handlers are imported from the working directory and the config file's directory."""
    for folder in (Path.cwd(), Path(config_path).resolve().parent if config_path else None):
        if folder is not None and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def _install_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
