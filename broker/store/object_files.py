"""The SQL behind dir:// object notifications: which files were reported, as what.

A row per (notification, file) holds the size and mtime of the version last
reported, written after its invocation was enqueued; a restart compares the
directory with these rows and reports only what changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.store.schema import object_files

oc = object_files.c


@dataclass(frozen=True, slots=True)
class SeenFile:
    path: str  # relative to the watched directory, with '/'
    size: int
    mtime_ns: int
    etag: str


def path_hash(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()


async def seen_files(engine: AsyncEngine, notification: str) -> dict[str, SeenFile]:
    """Every file ``notification`` has reported, by path."""
    stmt = select(oc.path, oc.size, oc.mtime_ns, oc.etag).where(oc.notification == notification)
    async with engine.connect() as conn:
        return {row.path: SeenFile(*row) for row in await conn.execute(stmt)}


async def record_seen(
    engine: AsyncEngine, notification: str, file: SeenFile, now: datetime
) -> None:
    """Remember ``file`` as reported (replacing an older version of it)."""
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    values = {
        "notification": notification,
        "path_hash": path_hash(file.path),
        "path": file.path,
        "size": file.size,
        "mtime_ns": file.mtime_ns,
        "etag": file.etag,
        "seen_at": now,
    }
    stmt = insert(object_files).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[oc.notification, oc.path_hash],
        set_={key: stmt.excluded[key] for key in ("size", "mtime_ns", "etag", "seen_at")},
    )
    async with engine.begin() as conn:
        await conn.execute(stmt)


async def forget_seen(engine: AsyncEngine, notification: str, path: str) -> None:
    """The file is gone and its removal reported."""
    stmt = delete(object_files).where(
        oc.notification == notification, oc.path_hash == path_hash(path)
    )
    async with engine.begin() as conn:
        await conn.execute(stmt)
