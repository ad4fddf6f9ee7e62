"""What the core needs of schedules, found by name in ``pollers.schedule``.

Configuration checks expressions when it loads, and the ``eventwire schedules``
commands preview slots and enqueue backfills and manual triggers; all of that
is the schedule source's knowledge. ``broker`` never imports ``pollers``, so
it reaches it through :func:`schedule_source` and the small protocols here.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Protocol

from broker.models import NewInvocation
from broker.sources.pollers import load

if TYPE_CHECKING:
    from broker.config.models import ScheduleConfig
    from broker.config.settings import Settings

SOURCE = "pollers.schedule.source:SOURCE"


class Timeline(Protocol):
    """The slots (fire times, UTC) of one expression in one zone."""

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """Slots in (start, end], in order."""
        ...

    def next_after(self, t: datetime) -> datetime | None:
        """The first slot after ``t``; None if there are no more."""
        ...


class ScheduleSource(Protocol):
    def timeline(self, expression: str, timezone: str) -> Timeline:
        """``ValueError`` quoting the expression (or zone) and saying what is wrong."""
        ...

    def invocation(
        self,
        name: str,
        schedule: ScheduleConfig,
        settings: Settings,
        slot: datetime,
        *,
        manual: bool = False,
    ) -> NewInvocation:
        """The invocation for ``slot``: the scheduled event, keyed by schedule and slot.

        ``manual`` is a trigger by hand: keyed by a fresh id, it always runs.
        """
        ...


@cache
def schedule_source() -> ScheduleSource:
    source: ScheduleSource = load(SOURCE)
    return source


def check_expression(expression: str, timezone: str = "UTC") -> None:
    """Raise ``ValueError`` (quoting ``expression``) unless it is a valid schedule expression."""
    schedule_source().timeline(expression, timezone)
