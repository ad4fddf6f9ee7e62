"""Running a service with mappings in the test's event loop, and reading the events back."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from broker.config.settings import Settings
from broker.events.batches import event_items, event_kind
from broker.loading import parse_config
from broker.service import Service
from tests.support.stores import Store


@asynccontextmanager
async def mapping_service(
    store: Store, config: dict[str, Any], **settings: Any
) -> AsyncIterator[Service]:
    """A service for ``config`` (functions and mappings) on ``store``; stopped on exit."""
    options = Settings(**store.settings(), **{"shutdown_grace_s": 5.0, **settings})
    service = Service(options, parse_config(config), migrate=True)
    task = asyncio.create_task(service.run(handle_signals=False))
    started = asyncio.create_task(service.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        task.result()
        raise AssertionError("service stopped before it started")
    assert started in done, "service did not start within 30s"
    try:
        yield service
    finally:
        service.stop()
        done, _ = await asyncio.wait({task}, timeout=30)
        if not done:
            stacks = "\n".join(_stack(t) for t in asyncio.all_tasks() if not t.done())
            task.cancel()
            raise AssertionError(f"service did not stop within 30s; running tasks:\n{stacks}")
        task.result()


def _stack(task: asyncio.Task[Any]) -> str:
    frames = task.get_stack(limit=8)
    where = " < ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
    return f"  {task.get_name()}: {where}"


def record_data(event: dict[str, Any]) -> list[bytes]:
    """The data of each record of a mapping event, in event order."""
    kind = event_kind(event)
    out = []
    for _, record in event_items(event):
        if kind == "kafka":
            out.append(base64.b64decode(record.get("value", "")))
        elif kind == "amqp":
            out.append(base64.b64decode(record["data"]))
        else:
            out.append(base64.b64decode(record["kinesis"]["data"]))
    return out


def numbers(event: dict[str, Any]) -> list[int]:
    """The ``n`` of each record whose data is JSON with one (the tests' records)."""
    out = []
    for data in record_data(event):
        try:
            out.append(int(json.loads(data)["n"]))
        except (ValueError, KeyError, TypeError):
            out.append(-1)
    return out
