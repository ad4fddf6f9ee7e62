"""Pure decisions of the scheduler: which due slots fire, which were missed, what overlaps.

A slot is *due* once its time has come. A due slot no later than ``grace_s``
(two leader-lease periods) fires whatever ``catch_up`` says: that covers a
leader handing over. Older due slots were missed while no scheduler ran and
follow ``catch_up``: ``none`` fires none of them, ``latest`` the most recent
within ``catch_up_window``, ``all`` every one within the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from broker.models import State

CatchUp = Literal["none", "latest", "all"]
Overlap = Literal["allow", "skip", "buffer_one"]


@dataclass(frozen=True, slots=True)
class SlotPlan:
    fire: list[datetime] = field(default_factory=list)
    missed: list[datetime] = field(default_factory=list)


def plan_slots(
    due: list[datetime],
    now: datetime,
    *,
    catch_up: CatchUp,
    catch_up_window_s: float,
    grace_s: float,
) -> SlotPlan:
    on_time = [s for s in due if now - s <= timedelta(seconds=grace_s)]
    late = [s for s in due if now - s > timedelta(seconds=grace_s)]
    window = [s for s in late if now - s <= timedelta(seconds=catch_up_window_s)]
    if catch_up == "all":
        caught = window
    elif catch_up == "latest":
        caught = window[-1:]
    else:
        caught = []
    return SlotPlan(
        fire=sorted([*caught, *on_time]),
        missed=[s for s in late if s not in caught],
    )


def overlap_allows(overlap: Overlap, previous: tuple[str, int] | None) -> bool:
    """Whether a slot fires, given the previous slot's invocation ``(state, attempts)``.

    ``skip``: not while the previous one is unfinished (queued, running, or
    waiting for a retry). ``buffer_one``: one may wait behind a running one
    (the schedule's invocations share a lane, so it starts when that ends),
    but not a second one: a previous invocation that has not started yet is
    the one already waiting.
    """
    if overlap == "allow" or previous is None:
        return True
    state, attempts = previous
    if state not in (State.PENDING.value, State.RUNNING.value):
        return True
    if overlap == "skip":
        return False
    return not (state == State.PENDING.value and attempts == 0)
