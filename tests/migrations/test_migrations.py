"""The migrations build exactly the schema of ``broker/store/schema.py``, on both backends.

This is the ``alembic check`` guarantee (a model change without its revision
fails here), plus the in-process migration API Eventwire starts with.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.errors import SchemaOutOfDateError
from broker.store.engine import create_engine
from broker.store.migrate import (
    context_options,
    current_revision,
    downgrade,
    ensure_schema,
    head_revision,
    upgrade,
)
from broker.store.schema import attempts, metadata
from tests.support.postgres import fresh_database

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database: a tmp_path SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}")
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    async with fresh_database() as url:
        engine = create_engine(url)
        try:
            yield engine
        finally:
            await engine.dispose()


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts=context_options(connection.dialect.name))
    return list(compare_metadata(context, metadata))


def _table_names(connection: Connection) -> set[str]:
    return set(sa.inspect(connection).get_table_names())


def _partial_indexes(connection: Connection) -> dict[str, str]:
    """Index name → its WHERE predicate, for every partial index on an Eventwire table."""
    where_key = f"{connection.dialect.name}_where"
    found = {}
    for table in metadata.tables:
        for index in sa.inspect(connection).get_indexes(table):
            where = index.get("dialect_options", {}).get(where_key)
            if where is not None:
                found[index["name"] or ""] = str(where)
    return found


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    await upgrade(engine)

    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []


async def test_partial_indexes_keep_their_predicate(engine: AsyncEngine) -> None:
    # compare_metadata does not look at an index's WHERE clause: check it here.
    await upgrade(engine)

    async with engine.connect() as conn:
        found = await conn.run_sync(_partial_indexes)

    dialect = engine.dialect.name
    expected = {
        str(index.name)
        for table in metadata.tables.values()
        for index in table.indexes
        if index.dialect_options[dialect]["where"] is not None
    }
    states = {
        "ix_invocations_active": {"'pending'", "'running'"},
        "ix_invocations_lane": {"'pending'", "'running'"},
        "ix_invocations_delayed": {"'pending'"},
        "ix_invocations_leased": {"'running'"},
    }
    assert set(found) == expected == set(states)
    for name, predicate in found.items():
        assert "state" in predicate
        assert {s for s in ("'pending'", "'running'") if s in predicate} == states[name]


async def test_sequence_keys_autoincrement(engine: AsyncEngine) -> None:
    await upgrade(engine)
    row = {
        "invocation_id": "0192a4f0-0000-7000-8000-000000000000",
        "started_at": datetime.now(UTC),
        "duration_ms": 1.5,
        "status": "succeeded",
    }

    async with engine.begin() as conn:
        await conn.execute(attempts.insert(), [{**row, "number": 1}, {**row, "number": 2}])
    async with engine.connect() as conn:
        seqs = (await conn.execute(sa.select(attempts.c.seq).order_by(attempts.c.number))).all()

    assert [seq for (seq,) in seqs] == [1, 2]


async def test_current_revision_is_none_then_head(engine: AsyncEngine) -> None:
    path_before = list(sys.path)
    assert await current_revision(engine) is None

    await upgrade(engine)

    assert await current_revision(engine) == head_revision()
    assert sys.path == path_before


async def test_downgrade_to_base_drops_everything_and_upgrade_works_again(
    engine: AsyncEngine,
) -> None:
    await upgrade(engine)

    await downgrade(engine, "base")

    async with engine.connect() as conn:
        assert await conn.run_sync(_table_names) & set(metadata.tables) == set()
    assert await current_revision(engine) is None

    await upgrade(engine)

    async with engine.connect() as conn:
        assert await conn.run_sync(_table_names) >= set(metadata.tables)
        assert await conn.run_sync(_differences) == []
    assert await current_revision(engine) == head_revision()


async def test_ensure_schema_without_migrate(engine: AsyncEngine) -> None:
    if engine.dialect.name == "sqlite":
        # An embedded database belongs to this process: it is always migrated.
        await ensure_schema(engine, migrate=False)
        assert await current_revision(engine) == head_revision()
        return

    with pytest.raises(SchemaOutOfDateError) as raised:
        await ensure_schema(engine, migrate=False)

    message = str(raised.value)
    assert "\n" not in message
    assert "empty" in message
    assert head_revision() in message
    assert "eventwire migrate" in message
    assert await current_revision(engine) is None


async def test_ensure_schema_with_migrate(engine: AsyncEngine) -> None:
    await ensure_schema(engine, migrate=True)
    assert await current_revision(engine) == head_revision()

    await ensure_schema(engine, migrate=False)  # at head: nothing to do, on both backends
    assert await current_revision(engine) == head_revision()


async def test_ensure_schema_refuses_a_revision_it_does_not_know(engine: AsyncEngine) -> None:
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfacef00d'"))

    with pytest.raises(SchemaOutOfDateError, match=r"f00dfacef00d.*newer Eventwire"):
        await ensure_schema(engine, migrate=True)
