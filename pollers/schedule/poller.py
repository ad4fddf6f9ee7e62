"""The scheduler: a poller whose source is the clock.

Every ``serve`` process runs one; the one holding the leader lease fires.
Each pass it renews the lease, reads every schedule's row (so ``pause`` and
``resume`` from another shell take effect), and for each active schedule
enqueues the slots that came due since its cursor, then moves the cursor
(compare-and-set: a pass that lost the race changes nothing). Each slot's
invocation has the idempotency key ``schedule:NAME:SLOT``, so a slot fired
again (by a leader that lost its lease mid-pass, or after a crash between
enqueue and cursor) is still one invocation.

A follower wakes when the lease it saw expires, so a killed leader is
replaced within one lease period; slots that came due meanwhile are at most
that late and fire (see :mod:`pollers.schedule.planning`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.config.models import ScheduleConfig
from broker.dispatch.retry import STORE_BACKOFF, backoff_delay
from broker.models import NewInvocation
from broker.sources.pollers import PollerContext
from broker.store.schedules import (
    ACTIVE,
    COMPLETED,
    DELETED,
    Advance,
    ScheduleRow,
    advance,
    invocation_state,
    lead,
    list_schedules,
    register_schedules,
    step_down,
)
from pollers.schedule.expressions import Timeline, parse
from pollers.schedule.planning import overlap_allows, plan_slots
from pollers.schedule.source import SOURCE, iso

log = logging.getLogger("eventwire.scheduler")

ROLE = "scheduler"


@dataclass
class SchedulerStats:
    passes: int = 0
    fired: int = 0
    missed: int = 0
    skipped: int = 0


class SchedulePoller:
    name = "schedule"

    def __init__(self, context: PollerContext) -> None:
        self.context = context
        self.engine = context.engine
        self.timer = context.timer
        self.owner = context.owner
        self.lease_s = context.settings.scheduler_lease_s
        self.grace_s = 2 * self.lease_s
        self.schedules: dict[str, ScheduleConfig] = dict(context.config.schedules)
        self.timelines: dict[str, Timeline] = {
            name: parse(s.expression, s.timezone) for name, s in self.schedules.items()
        }
        self.stats = SchedulerStats()
        self.leading = False
        self._stop = asyncio.Event()
        self._rng = random.Random()

    def stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        now = self.timer.now()
        next_slots = {name: t.next_after(now) for name, t in self.timelines.items()}
        await register_schedules(self.engine, self.schedules, next_slots, now)
        log.info("scheduler: %d schedules", len(self.schedules))

    async def run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                now = self.timer.now()
                try:
                    wake = await self._pass(now)
                    failures = 0
                except Exception as exc:
                    failures += 1
                    delay = backoff_delay(failures, STORE_BACKOFF, self._rng)
                    log.warning("scheduler: store unavailable (%s); retrying in %.1fs", exc, delay)
                    wake = now + timedelta(seconds=delay)
                await self.timer.sleep_until(wake, self._stop)
        finally:
            if self.leading:
                try:
                    await step_down(self.engine, ROLE, self.owner, self.timer.now())
                except Exception as exc:
                    log.warning("scheduler: could not give up the lease (%s); it will expire", exc)

    async def _pass(self, now: datetime) -> datetime:
        """One pass; answers when the next one is due."""
        self.stats.passes += 1
        renew_at = now + timedelta(seconds=self.lease_s / 3)
        held = await lead(self.engine, ROLE, self.owner, now, self.lease_s)
        if not held.leader:
            if self.leading:
                log.warning("scheduler: %s leads now; standing by", held.owner)
            self.leading = False
            return min(renew_at, held.expires_at)
        if not self.leading:
            log.info("scheduler: leading as %s", self.owner)
        self.leading = True
        wake = renew_at
        rows = {r.name: r for r in await list_schedules(self.engine, include_deleted=True)}
        for name, schedule in self.schedules.items():
            row = rows.get(name)
            if row is None or row.state != ACTIVE:
                continue
            upcoming = await self._schedule_pass(name, schedule, row, now)
            if upcoming is not None:
                wake = min(wake, upcoming)
        return wake

    async def _schedule_pass(
        self, name: str, schedule: ScheduleConfig, row: ScheduleRow, now: datetime
    ) -> datetime | None:
        timeline = self.timelines[name]
        upcoming = timeline.next_after(now)
        due = timeline.between(row.cursor_at, now)
        if not due and upcoming is not None:
            return upcoming
        plan = plan_slots(
            due,
            now,
            catch_up=schedule.catch_up,
            catch_up_window_s=schedule.catch_up_window_s,
            grace_s=self.grace_s,
        )
        if plan.missed:
            self.stats.missed += len(plan.missed)
            self.context.metrics.schedule(name).missed.inc(len(plan.missed))
            log.warning(
                "⏭ %s: %d missed slots not run (catch_up %s), %s … %s",
                name,
                len(plan.missed),
                schedule.catch_up,
                iso(plan.missed[0]),
                iso(plan.missed[-1]),
            )
        change = await self._fire(name, schedule, row, plan.fire)
        state = ACTIVE
        if upcoming is None:
            state = DELETED if schedule.after_completion == "delete" else COMPLETED
            log.info("scheduler: %s has no more slots; %s", name, state)
        change = Advance(
            cursor_at=now,
            next_slot_at=upcoming,
            state=state,
            last_slot_at=change.last_slot_at,
            last_invocation_id=change.last_invocation_id,
            last_outcome=change.last_outcome,
            missed=len(plan.missed),
            skipped=change.skipped,
        )
        if not await advance(self.engine, name, row.cursor_at, change, now):
            log.info("scheduler: %s was changed meanwhile; its next pass sees the change", name)
        return upcoming

    async def _fire(
        self, name: str, schedule: ScheduleConfig, row: ScheduleRow, slots: list[datetime]
    ) -> Advance:
        """Enqueue ``slots`` as ``overlap`` allows; what to record of the last one."""
        settings = self.context.settings
        previous = row.last_invocation_id
        last: Advance = Advance(cursor_at=row.cursor_at, next_slot_at=None)
        skipped = 0
        batch: list[tuple[datetime, NewInvocation]] = []
        for slot in slots:
            if schedule.overlap != "allow" and previous is not None:
                state = await invocation_state(self.engine, previous)
                if not overlap_allows(schedule.overlap, state):
                    skipped += 1
                    self.stats.skipped += 1
                    self.context.metrics.schedule(name).skipped.inc()
                    log.info(
                        "⏭ %s: slot %s not run: the previous run %s is still %s (overlap %s)",
                        name,
                        iso(slot),
                        previous,
                        state[0] if state else "?",
                        schedule.overlap,
                    )
                    last = Advance(
                        cursor_at=row.cursor_at,
                        next_slot_at=None,
                        last_slot_at=slot,
                        last_outcome="skipped (overlap)",
                    )
                    continue
            item = SOURCE.invocation(name, schedule, settings, slot)
            if schedule.overlap != "allow":
                [enqueued] = await self.context.queue.enqueue([item])
                previous = enqueued.id
                self._fired(name, schedule, slot, enqueued.id, enqueued.created)
                last = Advance(row.cursor_at, None, ACTIVE, slot, enqueued.id, "enqueued")
            else:
                batch.append((slot, item))
        if batch:
            answers = await self.context.queue.enqueue([item for _, item in batch])
            for (slot, _), enqueued in zip(batch, answers, strict=True):
                self._fired(name, schedule, slot, enqueued.id, enqueued.created)
            last = Advance(row.cursor_at, None, ACTIVE, batch[-1][0], answers[-1].id, "enqueued")
        return Advance(
            cursor_at=row.cursor_at,
            next_slot_at=None,
            last_slot_at=last.last_slot_at,
            last_invocation_id=last.last_invocation_id,
            last_outcome=last.last_outcome,
            skipped=skipped,
        )

    def _fired(
        self, name: str, schedule: ScheduleConfig, slot: datetime, invocation: str, created: bool
    ) -> None:
        if created:
            self.stats.fired += 1
            figures = self.context.metrics.schedule(name)
            figures.fires.inc()
            figures.lateness.observe(max(0.0, (self.timer.now() - slot).total_seconds()))
        log.info(
            "⏰ %s: slot %s → %s %s%s",
            name,
            iso(slot),
            schedule.function,
            invocation,
            "" if created else " (already enqueued)",
        )


def create(context: PollerContext) -> SchedulePoller:
    return SchedulePoller(context)
