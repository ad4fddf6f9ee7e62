"""Schedule expressions: EventBridge cron, standard cron, rate and at, and DST done right."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pollers.schedule.expressions import ExpressionError, Timeline, parse


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type, misc]


def local(zone: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)  # type: ignore[arg-type, misc]


def first(timeline: Timeline, after: datetime, n: int) -> list[datetime]:
    found: list[datetime] = []
    cursor: datetime | None = after
    while len(found) < n and cursor is not None:
        cursor = timeline.next_after(cursor)
        if cursor is not None:
            found.append(cursor)
    return found


def days(expression: str, after: datetime, n: int = 3) -> list[str]:
    return [s.strftime("%Y-%m-%d %a %H:%M") for s in first(parse(expression), after, n)]


# ---------------------------------------------------------------- EventBridge cron


def test_day_of_week_counts_from_sunday_as_one() -> None:
    # 2026-03-01 is a Sunday.
    assert days("cron(0 12 ? * 1 *)", utc(2026, 3, 1)) == [
        "2026-03-01 Sun 12:00",
        "2026-03-08 Sun 12:00",
        "2026-03-15 Sun 12:00",
    ]
    assert days("cron(0 12 ? * 2-6 *)", utc(2026, 3, 6, 13), 2) == [
        "2026-03-09 Mon 12:00",
        "2026-03-10 Tue 12:00",
    ]
    assert days("cron(0 12 ? * MON-FRI *)", utc(2026, 3, 6, 13), 2) == days(
        "cron(0 12 ? * 2-6 *)", utc(2026, 3, 6, 13), 2
    )
    assert days("cron(0 12 ? * L *)", utc(2026, 3, 1), 1) == ["2026-03-07 Sat 12:00"]


def test_last_weekday_and_nth_weekday_of_the_month() -> None:
    assert days("cron(0 9 ? * 6L *)", utc(2026, 3, 1)) == [  # last Friday
        "2026-03-27 Fri 09:00",
        "2026-04-24 Fri 09:00",
        "2026-05-29 Fri 09:00",
    ]
    assert days("cron(0 9 ? * 2#1 *)", utc(2026, 3, 1), 2) == [  # first Monday
        "2026-03-02 Mon 09:00",
        "2026-04-06 Mon 09:00",
    ]
    assert days("cron(0 9 ? * FRI#3 *)", utc(2026, 3, 1), 1) == ["2026-03-20 Fri 09:00"]


def test_day_of_month_last_day_weekday_and_last_weekday() -> None:
    assert days("cron(0 9 L * ? *)", utc(2026, 2, 1), 2) == [
        "2026-02-28 Sat 09:00",
        "2026-03-31 Tue 09:00",
    ]
    # The 15th of February 2026 is a Sunday: the nearest weekday is Monday the 16th.
    assert days("cron(0 9 15W * ? *)", utc(2026, 2, 1), 1) == ["2026-02-16 Mon 09:00"]
    # May 2026 ends on a Sunday: its last weekday is Friday the 29th.
    assert days("cron(0 9 LW * ? *)", utc(2026, 5, 1), 2) == [
        "2026-05-29 Fri 09:00",
        "2026-06-30 Tue 09:00",
    ]


def test_steps_ranges_lists_and_the_year_field() -> None:
    assert days("cron(5/20 10 1 JAN ? 2027-2028)", utc(2026, 6, 1), 4) == [
        "2027-01-01 Fri 10:05",
        "2027-01-01 Fri 10:25",
        "2027-01-01 Fri 10:45",
        "2028-01-01 Sat 10:05",
    ]
    # Past its last year a schedule has no more slots.
    assert parse("cron(0 10 1 1 ? 2027)").next_after(utc(2027, 1, 1, 11)) is None


def test_standard_five_field_cron_counts_sunday_as_zero() -> None:
    assert days("0 12 * * 0", utc(2026, 3, 2), 1) == ["2026-03-08 Sun 12:00"]
    assert days("*/30 9-10 * * 1-5", utc(2026, 3, 6, 10, 10), 2) == [
        "2026-03-06 Fri 10:30",
        "2026-03-09 Mon 09:00",
    ]


# ---------------------------------------------------------------- rate and at


def test_rate_counts_elapsed_time_from_the_epoch() -> None:
    timeline = parse("rate(15 minutes)", "Europe/Berlin")
    assert first(timeline, utc(2026, 3, 29, 0, 50), 3) == [
        utc(2026, 3, 29, 1, 0),  # 02:00 CET → the clocks jump; elapsed time does not
        utc(2026, 3, 29, 1, 15),
        utc(2026, 3, 29, 1, 30),
    ]
    assert parse("rate(1 day)").next_after(utc(2026, 3, 1, 12)) == utc(2026, 3, 2)
    assert parse("rate(2 hours)").between(utc(2026, 3, 1), utc(2026, 3, 1, 6)) == [
        utc(2026, 3, 1, 2),
        utc(2026, 3, 1, 4),
        utc(2026, 3, 1, 6),
    ]


def test_at_is_one_instant_to_the_second_in_its_zone() -> None:
    timeline = parse("at(2026-12-01T09:00:30)", "America/New_York")
    assert timeline.next_after(utc(2026, 11, 1)) == utc(2026, 12, 1, 14, 0, 30)
    assert timeline.next_after(utc(2026, 12, 1, 14, 0, 30)) is None


# ---------------------------------------------------------------- DST

SPRING_FALL = [
    # zone, spring-forward day, fall-back day (both at 02:00 local)
    ("Europe/Berlin", (2026, 3, 29), (2026, 10, 25)),
    ("America/New_York", (2026, 3, 8), (2026, 11, 1)),
]


@pytest.mark.parametrize(("zone", "spring", "fall"), SPRING_FALL)
def test_a_daily_job_in_the_spring_gap_runs_once_at_the_end_of_the_gap(
    zone: str, spring: tuple[int, int, int], fall: tuple[int, int, int]
) -> None:
    y, m, d = spring
    timeline = parse("cron(30 2 * * ? *)", zone)
    slots = timeline.between(local(zone, y, m, d - 1), local(zone, y, m, d + 1, 23))
    assert slots == [
        local(zone, y, m, d - 1, 2, 30),
        local(zone, y, m, d, 3, 0),  # 02:30 does not exist: the first instant after the gap
        local(zone, y, m, d + 1, 2, 30),
    ]


@pytest.mark.parametrize(("zone", "spring", "fall"), SPRING_FALL)
def test_a_daily_job_in_the_repeated_hour_runs_once(
    zone: str, spring: tuple[int, int, int], fall: tuple[int, int, int]
) -> None:
    y, m, d = fall
    # New York repeats 01:00-02:00, Berlin 02:00-03:00.
    hour = 1 if zone.startswith("America") else 2
    timeline = parse(f"cron(30 {hour} * * ? *)", zone)
    day = datetime(y, m, d, hour, 30)
    before, after = day - timedelta(days=1), day + timedelta(days=1)
    slots = timeline.between(local(zone, *before.timetuple()[:3]), local(zone, y, m, d, 23))
    assert slots == [
        local(zone, *before.timetuple()[:5]),
        local(zone, y, m, d, hour, 30, fold=0),  # the first of the two, only
    ]
    assert timeline.next_after(slots[-1]) == local(zone, *after.timetuple()[:5])


@pytest.mark.parametrize(("zone", "spring", "fall"), SPRING_FALL)
def test_an_hourly_job_follows_the_clock_through_both_changes(
    zone: str, spring: tuple[int, int, int], fall: tuple[int, int, int]
) -> None:
    timeline = parse("cron(0 * * * ? *)", zone)
    y, m, d = spring
    day = timeline.between(local(zone, y, m, d) - timedelta(seconds=1), local(zone, y, m, d, 23))
    assert len(day) == 23  # the skipped hour has no run, and no hour runs twice
    assert len(set(day)) == 23
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(day))
    y, m, d = fall
    day = timeline.between(local(zone, y, m, d) - timedelta(seconds=1), local(zone, y, m, d, 23))
    assert len(day) == 25  # the repeated hour runs in both passes
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(day))


def test_next_after_and_between_agree() -> None:
    timeline = parse("cron(*/20 1-3 * * ? *)", "Europe/Berlin")
    start = utc(2026, 10, 24, 22)
    slots = timeline.between(start, utc(2026, 10, 25, 3))
    assert len(slots) == 9  # 01:00 to 03:40 local; the repeated 02:00-02:40 runs once
    assert first(timeline, start, len(slots)) == slots


# ---------------------------------------------------------------- bad expressions


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("cron(0 5 * * * *)", "one of Day-of-month and Day-of-week must be '?'"),
        ("cron(0 5 ? * ? *)", "one of Day-of-month and Day-of-week must be '?'"),
        ("cron(0 5 * * ?)", "cron() takes 6 fields"),
        ("cron(61 5 * * ? *)", "Minutes '61': 61 is out of range 0-59"),
        ("cron(0 5 ? * 8 *)", "Day-of-week '8': 8 is out of range 1-7"),
        ("cron(0 5 ? * 2#6 *)", "the week after '#' is 1 to 5"),
        ("cron(0 5 * * ? 1969)", "Year '1969': 1969 is out of range 1970-2199"),
        ("cron(0 5 5-1 * ? *)", "a range runs from low to high"),
        ("rate(0 minutes)", "the value must be a whole number of 1 or more, got 0"),
        ("rate(5 fortnights)", "unknown unit 'fortnights'; expected minutes, hours or days"),
        ("rate(five minutes)", "expected rate(value unit)"),
        ("at(2026-02-30T00:00:00)", "day is out of range for month"),
        ("at(2026-12-01 09:00)", "expected at(yyyy-mm-ddThh:mm:ss)"),
        ("every day", "expected cron(...), rate(...), at(...) or a standard 5-field cron"),
        ("0 5 * *", "expected cron(...), rate(...), at(...)"),
        ("0 5 * * * *", "expected 5 fields"),
    ],
)
def test_an_invalid_expression_says_why_and_quotes_it(expression: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(expression)
    assert str(caught.value).startswith(f"{expression}: ")
    assert reason in str(caught.value)


def test_an_unknown_zone_is_named() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        parse("rate(1 minute)", "Mars/Olympus")
