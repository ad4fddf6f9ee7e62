"""Bringing a database's schema to the revision this Eventwire needs.

Alembic (``migrations/``) owns the schema. Eventwire runs it in-process, on its
own async engine: each command runs inside one ``engine.begin()`` transaction
whose connection is handed to ``migrations/env.py``, so it works from inside a
running event loop and a failed migration leaves nothing half-applied (both
PostgreSQL and SQLite have transactional DDL).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations
from broker.errors import SchemaOutOfDateError
from broker.store.schema import UTCDateTime, metadata

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config() -> Config:
    """The Alembic configuration of the packaged ``migrations`` directory."""
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    # The ini puts the checkout on sys.path for the alembic CLI; Eventwire is
    # importable already and must not grow sys.path at every migration.
    config.set_main_option("prepend_sys_path", "")
    return config


def context_options(dialect_name: str) -> dict[str, Any]:
    """How migrations run and compare, for ``env.py`` and the schema check alike."""
    return {
        "target_metadata": metadata,
        "compare_type": True,
        "compare_server_default": True,
        "render_as_batch": dialect_name == "sqlite",
        "render_item": _render_item,
    }


def _render_item(kind: str, obj: Any, _context: AutogenContext) -> str | Literal[False]:
    """Autogenerate writes UTCDateTime as the plain type it stores, keeping revisions
    free of imports from ``broker`` (a revision must not change when the code does)."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def head_revision() -> str:
    """The revision this Eventwire's code is written against."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS_DIR}: the package is incomplete")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision, or None for a database Eventwire never migrated."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_revision)


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database up to ``revision``, in one transaction."""
    await _run(engine, command.upgrade, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"``: no tables), in one transaction."""
    await _run(engine, command.downgrade, revision)


async def _run(engine: AsyncEngine, step: Callable[[Config, str], None], revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_run_on, step, revision)


def _run_on(connection: Connection, step: Callable[[Config, str], None], revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    step(config, revision)


async def ensure_schema(engine: AsyncEngine, *, migrate: bool) -> None:
    """Make sure the schema is at :func:`head_revision`, or say what to run.

    An embedded SQLite database is always migrated: it belongs to this
    process. A PostgreSQL database is shared, so it is migrated only when
    asked (``eventwire migrate``, ``eventwire serve --migrate``).
    """
    await _at_head(engine, upgrade_to_head=migrate or engine.dialect.name == "sqlite")


async def require_schema(engine: AsyncEngine) -> None:
    """For a command that uses the store but never migrates it: the schema is at
    :func:`head_revision`, or :class:`SchemaOutOfDateError` says what to run."""
    await _at_head(engine, upgrade_to_head=False)


async def _at_head(engine: AsyncEngine, *, upgrade_to_head: bool) -> None:
    head = head_revision()
    current = await current_revision(engine)
    if current == head:
        return
    if current is not None and not _known(current):
        raise SchemaOutOfDateError(
            f"database schema is at {current}, which this Eventwire does not know "
            f"(it needs {head}): was the database migrated by a newer Eventwire?"
        )
    if upgrade_to_head:
        await upgrade(engine)
        return
    raise SchemaOutOfDateError(
        (f"database schema is at revision {current}" if current else "the database is empty")
        + f", this Eventwire needs revision {head}: "
        "run `eventwire migrate` (or start with `eventwire serve --migrate`)"
    )


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False
