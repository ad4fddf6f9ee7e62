"""The options the ``dlq`` commands share: filters, times, rates."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from broker.config.durations import parse_duration
from broker.errors import UsageError
from broker.models import Origin
from broker.store.dead_letters import DeadLetterFilter

ErrorTypeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--error-type",
        "-e",
        metavar="TYPE",
        help="Only dead letters whose error is of this type; repeat for more.",
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="WHEN",
        help="Only those dead since: an age like 2h or 7d, a date, or an ISO datetime.",
    ),
]
BeforeOption = Annotated[
    str | None,
    typer.Option(
        "--before",
        metavar="WHEN",
        help="Only those dead before: an age like 7d or 12h, YYYY-MM-DD, or an ISO datetime "
        "(UTC unless it says otherwise).",
    ),
]
OriginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--origin",
        metavar="ORIGIN",
        help="Only events that came from: " + ", ".join(o.value for o in Origin) + "; repeat.",
    ),
]
GrepOption = Annotated[
    str | None,
    typer.Option(
        "--grep", "-g", metavar="TEXT", help="Only those whose error message contains this text."
    ),
]


def build_filter(
    *,
    function: str | None,
    error_types: list[str] | None,
    since: str | None,
    before: str | None,
    origins: list[str] | None,
    grep: str | None,
    include_redriven: bool = False,
    now: datetime | None = None,
) -> DeadLetterFilter:
    now = now or datetime.now(UTC)
    return DeadLetterFilter(
        function=function,
        error_types=tuple(error_types or ()),
        since=parse_time(since, now, "--since") if since else None,
        before=parse_time(before, now, "--before") if before else None,
        origins=tuple(parse_origin(value) for value in origins or ()),
        grep=grep or None,
        include_redriven=include_redriven,
    )


def parse_time(value: str, now: datetime, flag: str) -> datetime:
    """A date (midnight UTC), an ISO datetime (naive means UTC) or an age (that long ago)."""
    text = value.strip()
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{flag}: expected a date like 2024-05-01, an ISO datetime "
            f"or an age like 7d or 12h, got {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_origin(value: str) -> Origin:
    try:
        return Origin(value.strip().lower())
    except ValueError:
        known = ", ".join(o.value for o in Origin)
        raise UsageError(f"--origin: unknown origin {value!r}; expected one of: {known}") from None


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(value: str) -> float:
    """``50/s``, ``600/m``, ``1000/h`` or ``50`` (per second) → events per second."""
    match = _RATE.match(value.lower())
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(f"--rate: expected a rate like 50/s, 600/m or 1000/h, got {value!r}")
    return float(match.group(1)) / _PER[match.group(2) or "s"]


class Pacer:
    """Lets ``n`` events go only when ``rate`` per second allows, counted from the first."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.sent = 0
        self.started: float | None = None

    async def __call__(self, n: int) -> None:
        clock = time.monotonic()
        if self.started is None:
            self.started = clock
        due = self.started + self.sent / self.rate
        if due > clock:
            await asyncio.sleep(due - clock)
        self.sent += n

    def chunk_size(self, largest: int) -> int:
        """Chunks small enough that the rate is smooth: about ten a second."""
        return max(1, min(largest, int(self.rate / 10) or 1))
