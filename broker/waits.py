"""Waiting with a time limit without losing a cancellation.

On Python 3.11 ``asyncio.wait_for`` returns the awaited result when its task
is cancelled just as that result arrives, and the cancellation is gone (fixed
in 3.12). A loop that takes messages that way can miss the cancel that was
meant to stop it, under load more often than not. ``asyncio.timeout`` keeps
it, and so do these.
"""

from __future__ import annotations

import asyncio


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
