"""Handlers for tests that kill and restart ``eventwire serve``: they leave files behind."""

from __future__ import annotations

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
