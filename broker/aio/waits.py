"""Waiting with a time limit without losing a cancellation.

On Python 3.11 ``asyncio.wait_for`` returns the awaited result when its task
is cancelled just as that result arrives, and the cancellation is gone (fixed
in 3.12). A loop that takes messages that way can miss the cancel that was
meant to stop it, under load more often than not. ``asyncio.timeout`` keeps
it, and so do these.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Coroutine
from typing import Any


async def wait_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``event``; answers whether it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def close_within(closing: Awaitable[object], timeout_s: float) -> bool:
    """Run ``closing`` (a transport's close, a last write) for up to ``timeout_s``; answers
    whether it ended.

    The close runs as a task of its own and is waited for with ``asyncio.wait``, which
    returns at the deadline whatever the task does: a client whose close does not honour
    cancellation (aio-pika's, on 3.11, now and then) is left to finish on its own
    instead of holding up whoever is closing it.
    """
    task = asyncio.ensure_future(closing)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        return False
    if not task.cancelled():
        task.exception()  # retrieved: a close that failed has nothing more to say
    return True


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, object], name: str) -> AsyncIterator[None]:
    """``work`` as a task (named ``name``) while the block runs; cancelled and waited for
    after it."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
