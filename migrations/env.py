"""Alembic's environment for Eventwire: the async template, plus connection sharing.

Eventwire migrates in-process (``broker.store.migrate``): it opens a transaction
on its own engine and hands the connection in as
``config.attributes["connection"]``; the migrations then run on it and commit
with it. Run from the alembic CLI instead, the URL is
``EVENTWIRE_DATABASE_URL`` (default ``sqlite+aiosqlite:///eventwire.db``) and
the engine is the one Eventwire itself would open.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from broker.config.settings import load_settings
from broker.store.engine import create_engine
from broker.store.migrate import context_options

# Any 64-bit number Eventwire alone uses: PostgreSQL processes migrating at
# once (several `eventwire serve --migrate` starting together) take turns.
MIGRATION_LOCK_ID = 0x45_76_65_6E_74_57_69_72  # "EventWir"

config = context.config


def run_migrations_offline() -> None:
    """Write the SQL to stdout (``alembic upgrade --sql``) instead of running it."""
    url = load_settings().database_url
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **context_options(make_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, **context_options(connection.dialect.name))
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_engine(load_settings().database_url)
    try:
        async with engine.begin() as connection:  # one transaction, as in Eventwire
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    shared = config.attributes.get("connection")
    if shared is not None:
        do_run_migrations(shared)
    else:
        asyncio.run(run_async_migrations())


if "connection" not in config.attributes and config.config_file_name is not None:
    # Only the alembic CLI: inside Eventwire, its own logging setup stays as it is.
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
