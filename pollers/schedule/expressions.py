"""Schedule expressions and the slots (fire times) they give, as UTC instants.

* ``cron(Minutes Hours Day-of-month Month Day-of-week Year)`` — EventBridge;
  a bare 5-field cron is standard cron. Minute precision, in the schedule's zone.
* ``rate(value unit)`` — every ``value`` minutes, hours or days of elapsed
  time, counted from 1970-01-01T00:00Z (so every replica finds the same slots;
  ``rate(1 day)`` fires at midnight UTC whatever the zone).
* ``at(yyyy-mm-ddThh:mm:ss)`` — once, to the second, in the schedule's zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pollers.schedule.cron import Cron, CronSyntaxError, parse_eventbridge, parse_standard
from pollers.schedule.zones import instants, local, zone

_WRAPPED = re.compile(r"^(cron|rate|at)\((.*)\)$", re.DOTALL)
_RATE = re.compile(r"^(-?\d+)\s+([A-Za-z]+)$")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
# DST shifts a wall-clock time by at most this much from its nominal instant.
_SHIFT = timedelta(hours=3)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ExpressionError(ValueError):
    """An invalid expression; the message quotes it and says why."""


@dataclass(frozen=True, slots=True)
class CronTimeline:
    cron: Cron
    tz: ZoneInfo

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """Slots in (start, end], in order."""
        found: set[datetime] = set()
        for wall in self.cron.after(local(start, self.tz) - _SHIFT):
            if wall > local(end, self.tz) + _SHIFT:
                break
            found.update(
                t
                for t in instants(wall, self.tz, every_hour=self.cron.every_hour)
                if start < t <= end
            )
        return sorted(found)

    def next_after(self, t: datetime) -> datetime | None:
        for horizon in (timedelta(hours=6), timedelta(days=3), timedelta(days=800)):
            found = self.between(t, t + horizon)
            if found:
                return found[0]
        for wall in self.cron.after(local(t, self.tz)):
            later = [x for x in instants(wall, self.tz, every_hour=self.cron.every_hour) if x > t]
            if later:
                return later[0]
        return None


@dataclass(frozen=True, slots=True)
class RateTimeline:
    period_s: int

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        slots = []
        slot = self.next_after(start)
        while slot is not None and slot <= end:
            slots.append(slot)
            slot += timedelta(seconds=self.period_s)
        return slots

    def next_after(self, t: datetime) -> datetime | None:
        elapsed = (t - _EPOCH) // timedelta(seconds=self.period_s)
        return _EPOCH + timedelta(seconds=(elapsed + 1) * self.period_s)


@dataclass(frozen=True, slots=True)
class AtTimeline:
    instant: datetime

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        return [self.instant] if start < self.instant <= end else []

    def next_after(self, t: datetime) -> datetime | None:
        return self.instant if self.instant > t else None


Timeline = CronTimeline | RateTimeline | AtTimeline


def parse(expression: str, timezone: str = "UTC") -> Timeline:
    """The timeline of ``expression`` in ``timezone``; :class:`ExpressionError` if invalid."""
    tz = zone(timezone)
    text = expression.strip()
    wrapped = _WRAPPED.match(text)
    try:
        if wrapped is None:
            if text.count(" ") >= 4 and "(" not in text:
                return CronTimeline(parse_standard(text), tz)
            raise CronSyntaxError(
                "expected cron(...), rate(...), at(...) or a standard 5-field cron"
            )
        kind, body = wrapped.group(1), wrapped.group(2).strip()
        if kind == "cron":
            return CronTimeline(parse_eventbridge(body), tz)
        if kind == "rate":
            return RateTimeline(_rate(body))
        return AtTimeline(_at(body, tz))
    except CronSyntaxError as exc:
        raise ExpressionError(f"{expression}: {exc}") from None


def _rate(body: str) -> int:
    match = _RATE.match(body)
    if match is None:
        raise CronSyntaxError("expected rate(value unit), e.g. rate(5 minutes)")
    value, unit = int(match.group(1)), match.group(2).lower()
    seconds = _RATE_UNITS.get(unit.removesuffix("s"))
    if seconds is None:
        raise CronSyntaxError(f"unknown unit {unit!r}; expected minutes, hours or days")
    if value < 1:
        raise CronSyntaxError(f"the value must be a whole number of 1 or more, got {value}")
    return value * seconds


def _at(body: str, tz: ZoneInfo) -> datetime:
    try:
        wall = datetime.strptime(body, "%Y-%m-%dT%H:%M:%S")
    except ValueError as exc:
        raise CronSyntaxError(
            f"expected at(yyyy-mm-ddThh:mm:ss) with a real date and time ({exc})"
        ) from None
    return instants(wall, tz, every_hour=False)[0]
