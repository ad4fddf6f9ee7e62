"""How an idle dispatcher learns that there may be work: one object every queue backend uses.

``set()`` is called by this process's own enqueues and settles, and by a
backend's listener task when another process says so (PostgreSQL NOTIFY,
Redis pub/sub). ``wait`` sleeps until then, or until the next delayed
invocation or lease comes due, whichever is first — never longer than asked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any

from broker.aio.waits import wait_set


class Wakeup:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._event = asyncio.Event()
        self.listening = asyncio.Event()
        """Set while a listener hears other processes (cleared while it reconnects)."""
        self._listener: asyncio.Task[None] | None = None

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(
        self, next_due: Callable[[], Awaitable[datetime | None]], timeout_s: float
    ) -> None:
        """Return on ``set()``, when ``next_due()`` comes, or after ``timeout_s``."""
        if self._event.is_set():
            return
        due = await next_due()
        if due is not None:
            timeout_s = min(timeout_s, max(0.0, (due - self.clock()).total_seconds()))
        if timeout_s <= 0:
            return
        await wait_set(self._event, timeout_s)

    async def listen(self, listener: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Run ``listener`` (which sets :attr:`listening` once it hears) as a task;
        return once it listens, or after 10 s (it goes on trying)."""
        if self._listener is None:
            self._listener = asyncio.create_task(listener(), name=name)
            await wait_set(self.listening, 10)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
