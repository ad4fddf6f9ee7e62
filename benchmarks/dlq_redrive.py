"""How fast ``dlq redrive`` moves dead letters back into the queue, and how fast export is.

    python -m benchmarks.dlq_redrive              # sqlite and postgres, n = 10,000, a table
    python -m benchmarks.dlq_redrive --n 50000 --backend postgres

Each backend gets a fresh migrated store seeded with n dead letters straight
in SQL; the figures are the redrive of all of them (the CLI's path: claim,
idempotent enqueue, mark, 500 at a time), a second redrive of the same ids
(all already redriven: the cost of a re-run), and writing them as JSON Lines.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert

from benchmarks.throughput import postgres_store, sqlite_store
from broker.config.settings import Settings
from broker.ids import new_id
from broker.queue import open_queue
from broker.store.dead_letters import DeadLetterFilter, iter_matching, matching_ids
from broker.store.dlq_lines import to_line
from broker.store.engine import create_engine
from broker.store.history import redrive
from broker.store.migrate import upgrade
from broker.store.schema import dead_letters

BACKENDS = {"sqlite": sqlite_store, "postgres": postgres_store}


@asynccontextmanager
async def seeded(backend: str, n: int) -> AsyncIterator[str]:
    async with BACKENDS[backend](os.environ) as store:
        engine = create_engine(store.database_url)
        try:
            await upgrade(engine)
            dead_at = datetime.now(UTC) - timedelta(hours=1)
            rows = []
            for i in range(n):
                invocation = new_id()
                rows.append(
                    {
                        "id": new_id(),
                        "invocation_id": invocation,
                        "request_id": invocation,
                        "function": "ingest",
                        "payload": b'{"n": %d}' % i,
                        "origin": "api",
                        "source": {},
                        "condition": "RetriesExhausted",
                        "error_type": "TimeoutError",
                        "error_message": "upstream timed out",
                        "attempts": 3,
                        "first_enqueued_at": dead_at,
                        "dead_at": dead_at + timedelta(microseconds=i),
                    }
                )
            async with engine.begin() as conn:
                await conn.execute(insert(dead_letters), rows)
        finally:
            await engine.dispose()
        yield store.database_url


async def measure(backend: str, n: int) -> dict[str, float]:
    async with seeded(backend, n) as url:
        settings = Settings(database_url=url)
        engine = create_engine(url)
        try:
            ids = await matching_ids(engine, DeadLetterFilter(function="ingest"))
            async with open_queue(settings, engine) as queue:
                started = time.perf_counter()
                await redrive(engine, queue, ids, datetime.now(UTC))
                first = time.perf_counter() - started
                started = time.perf_counter()
                await redrive(engine, queue, ids, datetime.now(UTC))
                again = time.perf_counter() - started
            out = io.StringIO()
            started = time.perf_counter()
            async for page in iter_matching(engine, DeadLetterFilter(include_redriven=True)):
                out.write("".join(to_line(row) + "\n" for row in page))
            export = time.perf_counter() - started
        finally:
            await engine.dispose()
    return {"redrive/s": n / first, "re-run/s": n / again, "export/s": n / export}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--backend", choices=sorted(BACKENDS), action="append")
    args = parser.parse_args()
    table = Table("backend", "n", "redrive/s", "re-run/s", "export/s")
    for backend in args.backend or list(BACKENDS):
        figures = asyncio.run(measure(backend, args.n))
        table.add_row(backend, f"{args.n:,}", *(f"{figures[k]:,.0f}" for k in figures))
    Console().print(table)


if __name__ == "__main__":
    main()
