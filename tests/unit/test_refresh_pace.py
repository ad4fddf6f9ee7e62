"""A reader asks for lane depths as often as its fastest full lane needs, and no more."""

from __future__ import annotations

from pollers.mapping_run import (
    DEPTH_REFRESH_S,
    FULL_REFRESH_S,
    MAX_PENDING_BATCHES,
    RefreshPace,
)

FULL = MAX_PENDING_BATCHES


def test_at_first_lanes_are_looked_at_as_often_as_allowed() -> None:
    assert RefreshPace().interval_s == FULL_REFRESH_S


def test_lanes_that_finish_nothing_in_between_are_looked_at_less_often() -> None:
    pace = RefreshPace()
    seen = []
    for _ in range(20):
        pace.observe({"a": FULL, "b": FULL}, {"a": FULL, "b": FULL})
        seen.append(pace.interval_s)
    assert seen == sorted(seen) and seen[0] > FULL_REFRESH_S
    assert seen[-1] == DEPTH_REFRESH_S


def test_an_eighth_to_a_quarter_of_a_lane_finished_in_between_keeps_the_pace() -> None:
    pace = RefreshPace()
    pace.observe({"a": FULL}, {"a": FULL})
    interval = pace.interval_s
    pace.observe({"a": FULL, "b": FULL}, {"a": FULL - FULL // 8, "b": FULL})
    pace.observe({"a": FULL, "b": FULL}, {"a": FULL, "b": FULL - FULL // 4})
    assert pace.interval_s == interval


def test_the_fastest_lane_finishing_more_makes_the_pace_quicker() -> None:
    pace = RefreshPace()
    for _ in range(10):
        pace.observe({"a": FULL}, {"a": FULL})
    slow = pace.interval_s
    pace.observe({"a": FULL, "b": FULL}, {"a": FULL, "b": FULL - FULL // 4 - 1})
    assert pace.interval_s == slow / 2


def test_a_full_lane_found_nearly_dry_makes_the_reader_look_as_often_as_allowed() -> None:
    pace = RefreshPace()
    for _ in range(10):
        pace.observe({"a": FULL}, {"a": FULL})
    pace.observe({"a": FULL, "b": FULL - 1}, {"a": MAX_PENDING_BATCHES // 4, "b": 0})
    assert pace.interval_s == FULL_REFRESH_S
