"""From a wall-clock time in a zone to the instants it names, DST included.

A wall-clock time names one instant, except around DST changes:

* in a spring-forward gap (02:30 on the day clocks go from 02:00 to 03:00)
  it names none. A job set for that time runs once, at the first valid
  instant after the gap (03:00); a job that runs every hour simply has no
  run in the hour that does not exist.
* in a fall-back overlap (02:30 when clocks go from 03:00 back to 02:00) it
  names two. A job set for that time runs once, at the first; a job that
  runs every hour runs in both passes of the hour, as in every other hour.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str) -> ZoneInfo:
    """The zone called ``name``; ``ValueError`` naming it if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; expected an IANA name like UTC, "
            "Europe/Berlin or America/New_York"
        ) from None


def instants(wall: datetime, tz: ZoneInfo, *, every_hour: bool) -> list[datetime]:
    """The UTC instants at which a job set for naive ``wall`` in ``tz`` runs."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if _names(first, wall, tz) and _names(second, wall, tz):  # repeated hour
        return [first, second] if every_hour else [first]
    if every_hour:  # in the gap: this hour does not exist today
        return []
    # fold=1 reads the wall time with the offset after the change, so it lies
    # before the change; fold=0 with the one before, so after it.
    return [_change_between(second, first, tz)]


def _names(instant: datetime, wall: datetime, tz: ZoneInfo) -> bool:
    return instant.astimezone(tz).replace(tzinfo=None) == wall


def _change_between(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The first instant in (before, after] with the offset ``after`` has (to the second)."""
    target = after.astimezone(tz).utcoffset()
    low, high = before, after
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle <= low:
            break
        if middle.astimezone(tz).utcoffset() == target:
            high = middle
        else:
            low = middle
    return high


def local(instant: datetime, tz: ZoneInfo) -> datetime:
    """``instant`` as naive wall-clock time in ``tz``."""
    return instant.astimezone(tz).replace(tzinfo=None)
