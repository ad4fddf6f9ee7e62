"""Handlers the pipeline tests run; they report what happened through module state."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

calls: list[Any] = []
records: list[dict[str, Any]] = []
_lock = threading.Lock()
_active = 0
max_active = 0
release = threading.Event()


def reset() -> None:
    global _active, max_active
    calls.clear()
    records.clear()
    _active = 0
    max_active = 0
    release.clear()


def echo(event: Any, context: Any) -> Any:
    calls.append(event)
    return event


def note(event: dict[str, Any], context: Any) -> None:
    """Records the event with the request id it ran under."""
    calls.append({**event, "id": context.aws_request_id})


async def slow_note(event: dict[str, Any], context: Any) -> None:
    """:func:`note`, taking 5 ms, so that work piles up behind a few slots."""
    await asyncio.sleep(0.005)
    note(event, context)


def fail(event: Any, context: Any) -> None:
    calls.append(event)
    raise ValueError("boom")


def fail_with(event: dict[str, Any], context: Any) -> None:
    """Raises ``ValueError`` with the event's ``error``."""
    calls.append(event)
    raise ValueError(event["error"])


def record(event: dict[str, Any], context: Any) -> None:
    records.append(event)


async def sleepy(event: dict[str, Any], context: Any) -> str:
    await asyncio.sleep(event.get("seconds", 10))
    calls.append(event)
    return "slept"


def gate(event: Any, context: Any) -> Any:
    """Blocks until ``release`` is set, counting how many run at once."""
    global _active, max_active
    with _lock:
        _active += 1
        max_active = max(max_active, _active)
    try:
        release.wait(10)
        calls.append(event)
        return event
    finally:
        with _lock:
            _active -= 1


class HangingInvoker:
    """An execution backend that ignores its deadline (registered by the test that uses it)."""

    def __init__(self, name: str, config: Any) -> None:
        self.name = name

    async def start(self) -> None:
        pass

    async def invoke(self, request: Any) -> Any:
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass
