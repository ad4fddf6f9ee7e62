"""What every command shares: settings from flags and environment, running async code,
opening the store, and printing for people (Rich tables) or scripts (``--json``)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config.settings import Settings, load_settings
from broker.errors import UsageError
from broker.observability.trace_config import from_environment
from broker.queue.base import InvocationQueue
from broker.store.engine import UNREACHABLE, create_engine, dialect_of, unusable
from broker.store.migrate import require_schema

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")


def settings(ctx: typer.Context) -> Settings:
    """The settings of this run: the root command's flags over ``EVENTWIRE_*``."""
    root = ctx.find_root()
    cached = root.meta.get("settings")
    if isinstance(cached, Settings):
        return cached
    value = load_settings(**root.meta.get("overrides", {}))
    root.meta["settings"] = value
    return value


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@asynccontextmanager
async def open_store(config: Settings, *, reader: bool = False) -> AsyncIterator[AsyncEngine]:
    """The SQL store for a read (``reader``) or admin command; it must exist and be migrated."""
    _require_sqlite_file(config.database_url)
    engine = create_engine(config.database_url, reader=reader)
    try:
        try:
            await require_schema(engine)
        except UNREACHABLE as exc:
            raise unusable(config.database_url, exc) from None
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def open_enqueuing(config: Settings, engine: AsyncEngine) -> AsyncIterator[InvocationQueue]:
    """The queue of a command that enqueues (invoke, redrive, trigger): with ``OTEL_*``
    set, each invocation's trace starts here, and its spans are exported before the
    command ends."""
    from broker.queue import open_queue  # the queue's modules, only for commands that enqueue

    tracing = from_environment(os.environ)
    try:
        async with open_queue(config, engine, tracing=tracing) as queue:
            yield queue
    finally:
        tracing.shutdown()


def _require_sqlite_file(url: str) -> None:
    """Reading an SQLite store that does not exist would create an empty one: say so instead."""
    if dialect_of(url) == "sqlite":
        database = make_url(url).database
        if database and database != ":memory:" and not Path(database).exists():
            raise UsageError(
                f"no Eventwire database at {database} (EVENTWIRE_DATABASE_URL={url}); "
                "run `eventwire serve` or `eventwire migrate` first"
            )


def confirm_deletion(
    command: str, yes: bool, count: Callable[[], int], question: Callable[[int], str]
) -> bool:
    """Whether ``command`` is to delete what it found: at once with ``--yes``; else, on a
    terminal only, once the user agrees to ``question(n)`` for the ``count()`` found
    (False when there is nothing to delete; a no aborts)."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{command} asks for confirmation and stdin is not a terminal; pass --yes")
    found = count()
    if found:
        typer.confirm(question(found), abort=True, err=True)
    return found > 0


def print_error(message: str) -> None:
    """``error: message`` on stderr, on one line; the message is text, never Rich markup
    (``pip install 'eventwire[kafka]'`` keeps its brackets)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


def print_json(data: Any) -> None:
    """One JSON document on stdout (bytes payloads must be decoded by the caller)."""
    typer.echo(json.dumps(data, indent=2, default=str))
