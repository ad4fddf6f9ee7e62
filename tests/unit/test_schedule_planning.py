"""Which due slots fire after downtime (catch_up), and what overlapping runs allow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pollers.schedule.planning import CatchUp, overlap_allows, plan_slots

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
# Every 10 minutes for the last 3 hours: the service was down for most of it.
DUE = [NOW - timedelta(minutes=10 * i) for i in range(18, -1, -1)]


def plan(catch_up: CatchUp, window_h: float = 1) -> tuple[list[datetime], list[datetime]]:
    result = plan_slots(
        DUE,
        NOW,
        catch_up=catch_up,
        catch_up_window_s=window_h * 3600,
        grace_s=60,
    )
    return result.fire, result.missed


def test_slots_within_the_grace_period_always_fire() -> None:
    fire, missed = plan("none")
    assert fire == [NOW]  # on time
    assert missed == DUE[:-1]


def test_catch_up_latest_fires_the_most_recent_missed_slot_in_the_window() -> None:
    fire, missed = plan("latest")
    assert fire == [NOW - timedelta(minutes=10), NOW]
    assert len(missed) == 17


def test_catch_up_all_fires_every_missed_slot_in_the_window() -> None:
    fire, missed = plan("all")
    assert fire == [NOW - timedelta(minutes=10 * i) for i in range(6, -1, -1)]
    assert missed == DUE[:12]


def test_a_leader_handover_within_grace_misses_nothing() -> None:
    due = [NOW - timedelta(seconds=50), NOW - timedelta(seconds=20)]
    result = plan_slots(due, NOW, catch_up="none", catch_up_window_s=3600, grace_s=60)
    assert result.fire == due and result.missed == []


@pytest.mark.parametrize(
    ("overlap", "previous", "fires"),
    [
        ("allow", ("running", 1), True),
        ("skip", None, True),
        ("skip", ("succeeded", 1), True),
        ("skip", ("failed", 3), True),
        ("skip", ("running", 1), False),
        ("skip", ("pending", 0), False),  # queued, not started
        ("skip", ("pending", 1), False),  # waiting for a retry
        ("buffer_one", ("running", 1), True),  # this one waits behind it
        ("buffer_one", ("pending", 1), True),
        ("buffer_one", ("pending", 0), False),  # one is already waiting
        ("buffer_one", ("succeeded", 1), True),
    ],
)
def test_overlap(overlap: str, previous: tuple[str, int] | None, fires: bool) -> None:
    assert overlap_allows(overlap, previous) is fires  # type: ignore[arg-type]
