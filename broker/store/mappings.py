"""The SQL behind mappings: what a user asked for, and what the pollers report.

A mapping's row holds its desired state (``enabled``/``disabled``, changed by
``eventwire mappings enable|disable`` from another shell: pollers read it
every second), its seek requests (``generation`` moves on with each, and is
part of every idempotency key, so replayed records are invoked again), and
the status the pollers last reported: ``running``, ``failing`` with the
reason, the lag (records not yet enqueued) and the iterator age.

``mapping_cuts`` holds, per partition, the batch a poller ended early because
its window ran out, written before that batch is enqueued: after a crash the
same records form the same batch again, so its idempotency key matches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config.mappings import MappingConfig
from broker.errors import NotFoundError, UsageError
from broker.store.schema import mapping_cuts, mapping_unacked, mappings

mc = mappings.c
ENABLED = "enabled"
DISABLED = "disabled"
STARTING = "starting"
RUNNING = "running"
FAILING = "failing"
STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class MappingRow:
    name: str
    kind: str
    source: str
    function: str
    desired: str
    generation: int
    seek_to: datetime | None
    status: str
    status_reason: str | None
    lag: int | None
    iterator_age_ms: int | None
    reported_by: str | None
    reported_at: datetime | None

    @property
    def state(self) -> str:
        """``disabled``, ``failing`` or ``enabled``: what ``mappings ls`` shows."""
        if self.desired == DISABLED:
            return DISABLED
        return FAILING if self.status == FAILING else ENABLED


@dataclass(frozen=True, slots=True)
class Cut:
    first: str
    last: str


def redact(uri: str) -> str:
    """``uri`` without its password."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def _hash(mapping: MappingConfig) -> str:
    # Keys added since rows were first written are left out while unset, so an upgrade
    # changes no mapping's hash (a changed hash resets its desired state).
    later = ("object_notifications", "endpoint_url", "region")
    unset = {key for key in later if getattr(mapping, key) is None}
    dumped = mapping.model_dump(mode="json", by_alias=True, exclude=unset)
    data = json.dumps(dumped, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def _insert(engine: AsyncEngine) -> Any:
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


async def register_mappings(
    engine: AsyncEngine, configured: Sequence[MappingConfig], now: datetime
) -> None:
    """Make the rows match the configuration; a mapping's desired state and seeks are kept
    while its ``enabled`` key is unchanged. Rows of mappings no longer configured go."""
    async with engine.begin() as conn:
        existing = {r.name: r for r in await conn.execute(select(mc.name, mc.config_hash))}
        names = {m.name for m in configured}
        gone = set(existing) - names
        if gone:
            await conn.execute(delete(mappings).where(mc.name.in_(gone)))
            await conn.execute(delete(mapping_cuts).where(mapping_cuts.c.mapping.in_(gone)))
            await conn.execute(delete(mapping_unacked).where(mapping_unacked.c.mapping.in_(gone)))
        for mapping in configured:
            values = {
                "kind": mapping.kind.value,
                "source": redact(mapping.source),
                "function": mapping.function,
                "config_hash": _hash(mapping),
                "updated_at": now,
            }
            desired = ENABLED if mapping.enabled else DISABLED
            row = existing.get(mapping.name)
            if row is None:
                await conn.execute(
                    _insert(engine)(mappings)
                    .values(name=mapping.name, desired=desired, status=STARTING, **values)
                    .on_conflict_do_nothing(index_elements=[mc.name])
                )
            elif row.config_hash != values["config_hash"]:
                await conn.execute(
                    update(mappings)
                    .where(mc.name == mapping.name)
                    .values(desired=desired, **values)
                )


def _row(r: Any) -> MappingRow:
    return MappingRow(
        name=r.name,
        kind=r.kind,
        source=r.source,
        function=r.function,
        desired=r.desired,
        generation=r.generation,
        seek_to=r.seek_to,
        status=r.status,
        status_reason=r.status_reason,
        lag=r.lag,
        iterator_age_ms=r.iterator_age_ms,
        reported_by=r.reported_by,
        reported_at=r.reported_at,
    )


async def list_mappings(engine: AsyncEngine) -> list[MappingRow]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(mappings).order_by(mc.name))
        return [_row(r) for r in rows]


async def get_mapping(engine: AsyncEngine, name: str) -> MappingRow:
    async with engine.connect() as conn:
        row = (await conn.execute(select(mappings).where(mc.name == name))).first()
    if row is None:
        raise NotFoundError(f"no mapping named {name!r}; `eventwire mappings ls` lists them")
    return _row(row)


async def set_desired(engine: AsyncEngine, name: str, desired: str, now: datetime) -> None:
    async with engine.begin() as conn:
        result = await conn.execute(
            update(mappings).where(mc.name == name).values(desired=desired, updated_at=now)
        )
    if result.rowcount == 0:
        raise NotFoundError(f"no mapping named {name!r}; `eventwire mappings ls` lists them")


async def request_seek(engine: AsyncEngine, name: str, to: datetime, now: datetime) -> int:
    """Ask the pollers to read ``name`` again from ``to``; answers the new generation."""
    row = await get_mapping(engine, name)
    if row.kind in ("amqp", "sqs"):
        queue = "a RabbitMQ queue" if row.kind == "amqp" else "an SQS queue"
        raise UsageError(
            f"mapping {name!r} reads {queue}, which has no positions to seek to; "
            "seek applies to kafka and redis stream mappings"
        )
    async with engine.begin() as conn:
        await conn.execute(
            update(mappings)
            .where(mc.name == name)
            .values(generation=mc.generation + 1, seek_to=to, updated_at=now)
        )
        await conn.execute(delete(mapping_cuts).where(mapping_cuts.c.mapping == name))
    return row.generation + 1


async def report_status(
    engine: AsyncEngine,
    name: str,
    *,
    status: str,
    reason: str | None,
    lag: int | None,
    iterator_age_ms: int | None,
    owner: str,
    now: datetime,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(mappings)
            .where(mc.name == name)
            .values(
                status=status,
                status_reason=reason,
                lag=lag,
                iterator_age_ms=iterator_age_ms,
                reported_by=owner,
                reported_at=now,
            )
        )


async def load_cuts(engine: AsyncEngine, mapping: str) -> dict[str, Cut]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(mapping_cuts).where(mapping_cuts.c.mapping == mapping))
        return {r.partition: Cut(r.first_position, r.last_position) for r in rows}


async def save_cuts(engine: AsyncEngine, mapping: str, cuts: dict[str, Cut], now: datetime) -> None:
    """Record batches ended early, one per partition (the newest replaces the last)."""
    if not cuts:
        return
    insert = _insert(engine)(mapping_cuts)
    stmt = insert.on_conflict_do_update(
        index_elements=[mapping_cuts.c.mapping, mapping_cuts.c.partition],
        set_={
            "first_position": insert.excluded.first_position,
            "last_position": insert.excluded.last_position,
            "updated_at": insert.excluded.updated_at,
        },
    )
    async with engine.begin() as conn:
        await conn.execute(
            stmt,
            [
                {
                    "mapping": mapping,
                    "partition": partition,
                    "first_position": cut.first,
                    "last_position": cut.last,
                    "updated_at": now,
                }
                for partition, cut in cuts.items()
            ],
        )
