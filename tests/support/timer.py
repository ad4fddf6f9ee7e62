"""A scheduler clock tests move by hand, and one that runs faster than the wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

from tests.support.waiting import eventually


class FakeTimer:
    """``now()`` moves only by :meth:`advance`; :meth:`settled` waits until every
    poller has done what the new time asks and sleeps again."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
        self._tick = asyncio.Event()
        self._generation = 0
        self._asleep: dict[int, int] = {}

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime, stop: asyncio.Event) -> None:
        me = id(asyncio.current_task())
        try:
            while self._now < when and not stop.is_set():
                self._asleep[me] = self._generation
                tick, stopped = (
                    asyncio.ensure_future(self._tick.wait()),
                    asyncio.ensure_future(stop.wait()),
                )
                await asyncio.wait({tick, stopped}, return_when=asyncio.FIRST_COMPLETED)
                for task in (tick, stopped):
                    task.cancel()
        finally:
            self._asleep.pop(me, None)

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        self._generation += 1
        self._tick.set()
        self._tick = asyncio.Event()
        return self._now

    async def settled(self, sleepers: int = 1, timeout_s: float = 10) -> None:
        """Wait until ``sleepers`` pollers sleep having seen the current time."""
        await eventually(
            lambda: (
                len(self._asleep) == sleepers
                and all(g == self._generation for g in self._asleep.values())
            ),
            timeout_s,
            f"{sleepers} pollers asleep at {self._now.isoformat()}",
        )


class FastTimer:
    """The wall clock, ``speed`` times faster, from ``origin`` at real time ``started``.

    Processes given the same three numbers agree on the time.
    """

    def __init__(self, origin: datetime, started: float, speed: float) -> None:
        self.origin = origin
        self.started = started
        self.speed = speed

    def now(self) -> datetime:
        return self.origin + timedelta(seconds=(time.time() - self.started) * self.speed)

    async def sleep_until(self, when: datetime, stop: asyncio.Event) -> None:
        delay = (when - self.now()).total_seconds() / self.speed
        if delay > 0 and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
