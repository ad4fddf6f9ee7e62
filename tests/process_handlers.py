"""Handlers for tests that kill and restart ``eventwire serve``: they leave files behind."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any


def mark(event: dict[str, Any], context: Any) -> str:
    """Appends the event's id to the file ``event["log"]`` (one line per run)."""
    with open(event["log"], "a") as log:
        log.write(f"{event['id']}\n")
        log.flush()
        os.fsync(log.fileno())
    return str(event["id"])


def hang_once(event: dict[str, Any], context: Any) -> str:
    """The first run announces itself in ``event["started"]`` and hangs; later runs succeed."""
    started = Path(event["started"])
    if not started.exists():
        started.write_text(context.aws_request_id)
        time.sleep(600)
    return "second time lucky"


def _first_run(started: Path, request_id: str) -> bool:
    if started.exists():
        return False
    started.write_text(request_id)
    return True


async def ahang_once(event: dict[str, Any], context: Any) -> str:
    """:func:`hang_once` without holding a thread while it hangs: many can hang at once."""
    if await asyncio.to_thread(_first_run, Path(event["started"]), context.aws_request_id):
        await asyncio.sleep(600)
    return "second time lucky"
