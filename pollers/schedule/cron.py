"""Cron expressions: EventBridge's six fields and standard five, on local wall-clock time.

croniter does the iteration. EventBridge's syntax is translated onto it here:
its field order ``Minutes Hours Day-of-month Month Day-of-week Year``, the
``?`` that one of the day fields must be, day-of-week numbered 1 = SUN … 7 =
SAT, ``nL`` (the last given weekday of the month), a lone ``L`` in
day-of-week (Saturday) and the year field. ``LW`` (the last weekday of the
month), which croniter lacks, is a filter applied here.

Everything in this module works on naive datetimes: the wall clock of the
schedule's zone. Turning them into instants (DST) is :mod:`pollers.schedule.zones`.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from croniter import CroniterBadDateError, CroniterError, croniter

DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
MONTH_NAMES = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
]  # fmt: skip
EVENTBRIDGE_FIELDS = ["Minutes", "Hours", "Day-of-month", "Month", "Day-of-week", "Year"]
YEARS = (1970, 2199)

_STEP = re.compile(r"^(\*|[A-Z0-9]+(?:-[A-Z0-9]+)?)(?:/(\d+))?$")


class CronSyntaxError(ValueError):
    """What is wrong with a cron expression (without the expression; the caller adds it)."""


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed cron expression, ready to iterate.

    ``croniter_expr`` is the 7-field croniter form (``M H DOM MON DOW S YEAR``);
    ``last_weekday`` asks for the ``LW`` filter; ``every_hour`` says the hour
    field matches all 24 hours (then DST gaps are skipped and repeated hours
    fire twice, like any other hour).
    """

    croniter_expr: str
    every_hour: bool
    last_weekday: bool = False

    def after(self, start: datetime) -> Iterator[datetime]:
        """Matching wall-clock minutes strictly after naive ``start``, in order."""
        position = start
        while True:
            try:
                found = croniter(self.croniter_expr, position).get_next(datetime)
            except CroniterBadDateError:
                return
            if self.last_weekday and found.day != last_weekday_of(found.year, found.month):
                position = datetime(found.year, found.month, found.day, 23, 59)
                continue
            yield found
            position = found


def last_weekday_of(year: int, month: int) -> int:
    day = calendar.monthrange(year, month)[1]
    while calendar.weekday(year, month, day) >= 5:
        day -= 1
    return day


# ---------------------------------------------------------------- EventBridge


def parse_eventbridge(body: str) -> Cron:
    """``Minutes Hours Day-of-month Month Day-of-week Year`` as in ``cron(...)``."""
    fields = body.upper().split()
    if len(fields) != 6:
        raise CronSyntaxError(
            f"cron() takes 6 fields ({' '.join(EVENTBRIDGE_FIELDS)}), got {len(fields)}; "
            "a standard 5-field cron is written without cron(...)"
        )
    minute, hour, dom, month, dow, year = fields
    for name, value in zip(EVENTBRIDGE_FIELDS, fields, strict=True):
        if "?" in value and (name not in ("Day-of-month", "Day-of-week") or value != "?"):
            raise CronSyntaxError(f"{name} {value!r}: '?' stands alone, in a day field only")
    if (dom == "?") == (dow == "?"):
        raise CronSyntaxError(
            f"one of Day-of-month and Day-of-week must be '?' (got {dom!r} and {dow!r})"
        )
    _numeric("Minutes", minute, 0, 59)
    _numeric("Hours", hour, 0, 23)
    _numeric("Month", month, 1, 12, MONTH_NAMES)
    _numeric("Year", year, *YEARS)
    day_of_month, last_weekday = _day_of_month(dom)
    day_of_week = "*" if dow == "?" else _day_of_week(dow)
    expr = f"{minute} {hour} {day_of_month} {month} {day_of_week} 0 {year}"
    _check_croniter(expr)
    return Cron(expr, every_hour=_every_hour(hour), last_weekday=last_weekday)


def _day_of_month(value: str) -> tuple[str, bool]:
    if value == "?":
        return "*", False
    if value == "LW":
        return "*", True
    parts = []
    for token in value.split(","):
        if token == "L":
            parts.append("L")
        elif token.endswith("W") and token[:-1].isdigit():
            _in_range("Day-of-month", token, int(token[:-1]), 1, 31)
            parts.append(token)
        else:
            _numeric("Day-of-month", token, 1, 31)
            parts.append(token)
    return ",".join(parts), False


def _day_of_week(value: str) -> str:
    """EventBridge day-of-week (1 = SUN … 7 = SAT) in croniter's numbering (0 = SUN)."""
    parts: list[str] = []
    for token in value.split(","):
        if token == "L":
            parts.append("6")  # a lone L is the last day of the week: Saturday
        elif token.endswith("L"):
            parts.append(f"L{_weekday(token[:-1], token) - 1}")
        elif "#" in token:
            day, _, nth = token.partition("#")
            if not nth.isdigit() or not 1 <= int(nth) <= 5:
                raise CronSyntaxError(f"Day-of-week {token!r}: the week after '#' is 1 to 5")
            parts.append(f"{_weekday(day, token) - 1}#{nth}")
        else:
            parts.extend(str(day - 1) for day in _expand("Day-of-week", token, 1, 7, DAY_NAMES))
    return ",".join(parts)


def _weekday(text: str, token: str) -> int:
    if text in DAY_NAMES:
        return DAY_NAMES.index(text) + 1
    if text.isdigit() and 1 <= int(text) <= 7:
        return int(text)
    raise CronSyntaxError(f"Day-of-week {token!r}: expected 1-7 (1 = SUN) or SUN-SAT")


def _numeric(name: str, value: str, low: int, high: int, names: list[str] | None = None) -> None:
    for token in value.split(","):
        _expand(name, token, low, high, names)


def _expand(
    name: str, token: str, low: int, high: int, names: list[str] | None = None
) -> list[int]:
    """The values of one list item: ``*``, ``5``, ``MON``, ``1-5``, ``*/15``, ``10/5``, ``1-9/2``.

    ``10/5`` is EventBridge's "from 10 on, every 5".
    """
    match = _STEP.match(token)
    if match is None:
        raise CronSyntaxError(f"{name} {token!r} is not a value, range or step")
    span, step_text = match.groups()
    step = int(step_text) if step_text else 1
    if step < 1:
        raise CronSyntaxError(f"{name} {token!r}: the step must be 1 or more")
    if span == "*":
        start, end = low, high
    else:
        first, _, last = span.partition("-")
        start = _value(name, first, token, low, high, names)
        end = (
            _value(name, last, token, low, high, names) if last else (high if step_text else start)
        )
        if end < start:
            raise CronSyntaxError(f"{name} {token!r}: a range runs from low to high")
    return list(range(start, end + 1, step))


def _value(name: str, text: str, token: str, low: int, high: int, names: list[str] | None) -> int:
    if names and text in names:
        return names.index(text) + low
    if not text.isdigit():
        raise CronSyntaxError(f"{name} {token!r}: {text!r} is not a number")
    return _in_range(name, token, int(text), low, high)


def _in_range(name: str, token: str, number: int, low: int, high: int) -> int:
    if not low <= number <= high:
        raise CronSyntaxError(f"{name} {token!r}: {number} is out of range {low}-{high}")
    return number


def _every_hour(hour_field: str) -> bool:
    try:
        hours: set[int] = set()
        for token in hour_field.split(","):
            hours.update(_expand("Hours", token, 0, 23))
    except CronSyntaxError:
        return False
    return len(hours) == 24


# ---------------------------------------------------------------- standard cron


def parse_standard(text: str) -> Cron:
    """Standard 5-field cron (``M H DOM MON DOW``, 0 or 7 = Sunday), as croniter reads it."""
    fields = text.split()
    if len(fields) != 5:
        raise CronSyntaxError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    expr = f"{' '.join(fields)} 0 *"
    _check_croniter(expr)
    return Cron(expr, every_hour=_every_hour(fields[1].upper()))


def _check_croniter(expr: str) -> None:
    try:
        croniter(expr, datetime(2000, 1, 1))
    except (CroniterError, ValueError, KeyError) as exc:
        raise CronSyntaxError(str(exc).replace(expr, "").strip(" :") or "not valid") from None
