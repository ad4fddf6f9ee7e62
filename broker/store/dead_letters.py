"""The SQL behind DLQ operations at scale: filters, and moving dead letters in and out.

A :class:`DeadLetterFilter` selects dead letters by function, error type,
time of death, origin and text in the error message; ``dlq ls``,
``redrive``, ``export`` and ``purge`` all select with it. Export pages
through the selection in (dead_at, id) order, so a million dead letters
never sit in memory; import inserts rows by id and skips those present, so
importing a file twice changes nothing (and a poller's
:func:`add_dead_letters`, keyed by where the event was read, keeps one per
event however often it is read).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.models import DeadLetter, Origin
from broker.store.history import DeadLetterRow, _dead_letter
from broker.store.schema import dead_letters

d = dead_letters.c
PAGE = 1000


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters; every criterion given must hold (an empty one holds for all)."""

    function: str | None = None
    error_types: tuple[str, ...] = ()
    since: datetime | None = None  # died at or after
    before: datetime | None = None  # died before
    origins: tuple[Origin, ...] = ()
    grep: str | None = None  # in the error message, any case
    include_redriven: bool = False

    @property
    def narrows(self) -> bool:
        """Whether it says more than "this function's" (a filter a redrive may select by)."""
        return bool(self.error_types or self.since or self.before or self.origins or self.grep)

    def clauses(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.function is not None:
            found.append(d.function == self.function)
        if self.error_types:
            found.append(d.error_type.in_(self.error_types))
        if self.since is not None:
            found.append(d.dead_at >= self.since)
        if self.before is not None:
            found.append(d.dead_at < self.before)
        if self.origins:
            found.append(d.origin.in_([origin.value for origin in self.origins]))
        if self.grep:
            found.append(d.error_message.icontains(self.grep, autoescape=True))
        if not self.include_redriven:
            found.append(d.redriven_at.is_(None))
        return found


async def list_matching(
    engine: AsyncEngine, where: DeadLetterFilter, *, limit: int
) -> list[DeadLetterRow]:
    """The newest ``limit`` dead letters that match, newest first."""
    stmt = (
        select(dead_letters)
        .where(*where.clauses())
        .order_by(d.dead_at.desc(), d.id.desc())
        .limit(limit)
    )
    async with engine.connect() as conn:
        return [_dead_letter(row) for row in await conn.execute(stmt)]


async def count_matching(engine: AsyncEngine, where: DeadLetterFilter) -> int:
    stmt = select(func.count()).select_from(dead_letters).where(*where.clauses())
    async with engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def matching_ids(engine: AsyncEngine, where: DeadLetterFilter) -> list[str]:
    """Ids of the matching dead letters, oldest first (the order a redrive goes in)."""
    stmt = select(d.id).where(*where.clauses()).order_by(d.dead_at, d.id)
    async with engine.connect() as conn:
        return list((await conn.execute(stmt)).scalars())


async def purge_matching(engine: AsyncEngine, where: DeadLetterFilter) -> int:
    """Delete the matching dead letters; answers how many."""
    async with engine.begin() as conn:
        return (await conn.execute(delete(dead_letters).where(*where.clauses()))).rowcount


async def iter_matching(
    engine: AsyncEngine, where: DeadLetterFilter, page: int = PAGE
) -> AsyncIterator[list[DeadLetterRow]]:
    """Every matching dead letter, oldest first, ``page`` at a time."""
    after: tuple[datetime, str] | None = None
    while True:
        stmt = select(dead_letters).where(*where.clauses())
        if after is not None:
            stmt = stmt.where(
                or_(d.dead_at > after[0], and_(d.dead_at == after[0], d.id > after[1]))
            )
        stmt = stmt.order_by(d.dead_at, d.id).limit(page)
        async with engine.connect() as conn:
            rows = [_dead_letter(row) for row in await conn.execute(stmt)]
        if not rows:
            return
        yield rows
        after = (rows[-1].dead_at, rows[-1].id)


async def import_dead_letters(
    engine: AsyncEngine, rows: Sequence[Mapping[str, Any]], page: int = PAGE
) -> int:
    """Insert ``rows`` (``dead_letters`` columns) unless their id is present; answers how
    many were new."""
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    created = 0
    for start in range(0, len(rows), page):
        chunk = list(rows[start : start + page])
        ids = [row["id"] for row in chunk]
        async with engine.begin() as conn:
            before = await conn.execute(
                select(func.count()).select_from(dead_letters).where(d.id.in_(ids))
            )
            present = int(before.scalar_one())
            await conn.execute(insert(dead_letters).on_conflict_do_nothing(), chunk)
            after = await conn.execute(
                select(func.count()).select_from(dead_letters).where(d.id.in_(ids))
            )
            created += int(after.scalar_one()) - present
    return created


async def add_dead_letters(engine: AsyncEngine, letters: Sequence[DeadLetter]) -> int:
    """Keep ``letters`` (events that were never invoked: a poller gives up on them before)
    unless their id is present; answers how many were new."""
    return await import_dead_letters(
        engine,
        [letter.as_row() for letter in letters],
    )
