"""Handlers for schedule tests that run ``eventwire serve`` processes."""

from __future__ import annotations

import os
from typing import Any


def record_slot(event: dict[str, Any], context: Any) -> str:
    """Appends the scheduled event's ``time`` to the file ``detail.log`` (one line per run)."""
    with open(event["detail"]["log"], "a") as log:
        log.write(f"{event['time']}\n")
        log.flush()
        os.fsync(log.fileno())
    return str(event["time"])
