"""Running a whole ``Service`` in the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from broker.config.settings import Settings
from broker.loading import parse_config
from broker.observability.tracing import NO_TRACING, Tracing
from broker.service import Service
from tests.support.stores import Store


@asynccontextmanager
async def running_service(
    store: str | Store,
    functions: dict[str, Any],
    *,
    config: dict[str, Any] | None = None,
    tracing: Tracing = NO_TRACING,
    **settings: Any,
) -> AsyncIterator[Service]:
    """A service for ``functions`` (a config dict, with the other top-level keys of
    ``config``) on ``store`` (or a database URL), making spans with ``tracing``;
    stopped on exit."""
    where = Store(store) if isinstance(store, str) else store
    options = Settings(**where.settings(), **settings)
    project = parse_config({**(config or {}), "functions": functions})
    service = Service(options, project, migrate=True, tracing=tracing)
    task = asyncio.create_task(service.run(handle_signals=False))
    started = asyncio.create_task(service.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        task.result()  # raises what stopped it
        raise AssertionError("service stopped before it started")
    assert started in done, "service did not start within 30s"
    try:
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 30)
