"""Shaping a slot into an invocation: EventBridge's Scheduled Event, keyed by schedule and slot.

The event is the one EventBridge sends a Lambda function::

    {"version": "0", "id": "…", "detail-type": "Scheduled Event",
     "source": "aws.events", "account": "…", "time": "2026-11-24T05:00:00Z",
     "region": "…", "resources": ["arn:aws:events:…:rule/nightly-report"],
     "detail": {…}}

``time`` is the slot, not the moment it ran, and ``id`` is derived from the
schedule and slot, so a slot fired twice (after a leader change) is the same
event, and its idempotency key ``schedule:NAME:SLOT`` makes the second
enqueue return the first invocation.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.config.models import ScheduleConfig
from broker.config.settings import Settings
from broker.ids import new_id
from broker.models import NewInvocation, Origin
from broker.sources.schedules import ScheduleSource, Timeline
from pollers.schedule.expressions import parse

_NAMESPACE = uuid.UUID("5c4e0d1e-7d0b-4b8e-9a52-6576656e7477")


def iso(instant: datetime) -> str:
    text = instant.astimezone(UTC).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")


def slot_key(name: str, slot: datetime) -> str:
    return f"schedule:{name}:{iso(slot)}"


def lane(name: str) -> str:
    return f"schedule:{name}"


def flex_offset_s(name: str, slot: datetime, window_s: float) -> float:
    """Where in its flexible window a slot runs: spread, but the same on every replica."""
    if window_s <= 0:
        return 0.0
    digest = hashlib.sha256(slot_key(name, slot).encode()).digest()
    return int.from_bytes(digest[:8], "big") % int(window_s * 1000) / 1000


def scheduled_event(
    name: str, schedule: ScheduleConfig, settings: Settings, slot: datetime, event_id: str
) -> dict[str, Any]:
    if schedule.event_source == "aws.events":
        resource = f"arn:aws:events:{settings.region}:{settings.account_id}:rule/{name}"
    else:
        resource = (
            f"arn:aws:scheduler:{settings.region}:{settings.account_id}:schedule/default/{name}"
        )
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "Scheduled Event",
        "source": schedule.event_source,
        "account": settings.account_id,
        "time": iso(slot),
        "region": settings.region,
        "resources": [resource],
        "detail": schedule.payload or {},
    }


def overrides(schedule: ScheduleConfig) -> dict[str, Any]:
    """The schedule's changes to its function's retries and destinations, for the dispatcher."""
    found: dict[str, Any] = {}
    if schedule.retry is not None:
        found["retry"] = schedule.retry.model_dump(mode="json", exclude_none=True)
    for key in ("on_success", "on_failure"):
        if getattr(schedule, key) is not None:
            found[key] = getattr(schedule, key)
    return found


class Source:
    """:class:`broker.sources.schedules.ScheduleSource` for the core (config checks, CLI)."""

    def timeline(self, expression: str, timezone: str) -> Timeline:
        return parse(expression, timezone)

    def invocation(
        self,
        name: str,
        schedule: ScheduleConfig,
        settings: Settings,
        slot: datetime,
        *,
        manual: bool = False,
    ) -> NewInvocation:
        key = f"schedule:{name}:manual:{new_id()}" if manual else slot_key(name, slot)
        event_id = str(uuid.uuid5(_NAMESPACE, key))
        event = scheduled_event(name, schedule, settings, slot, event_id)
        fire_at = None
        if not manual and schedule.flexible_window_s:
            fire_at = slot + timedelta(
                seconds=flex_offset_s(name, slot, schedule.flexible_window_s)
            )
        source: dict[str, Any] = {"schedule": name, "slot": iso(slot)}
        if manual:
            source["manual"] = True
        if found := overrides(schedule):
            source["overrides"] = found
        return NewInvocation(
            id=new_id(),
            function=schedule.function,
            payload=json.dumps(event, separators=(",", ":")).encode(),
            origin=Origin.SCHEDULE,
            lane=lane(name) if schedule.overlap == "buffer_one" else None,
            idempotency_key=key,
            available_at=fire_at,
            first_enqueued_at=fire_at,
            source=source,
        )


SOURCE: ScheduleSource = Source()
