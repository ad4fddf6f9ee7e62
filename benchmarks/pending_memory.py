"""Memory of one ``eventwire serve`` on the Redis queue while a million invocations wait.

A real ``serve`` process runs a function that can run only a few at a time
(reserved concurrency 4, a 50 ms handler); this script enqueues ``-n``
invocations of it in batches, as a producer would, and samples the serve
process's resident memory (``VmRSS``) the whole time: before, while the
backlog grows, and while its history is copied into the SQL store. Redis holds
the backlog; the serve process should not.

Run from the repository root::

    python -m benchmarks.pending_memory [-n 1000000] [--batch 1000]

The SQL store is a fresh PostgreSQL database on ``EVENTWIRE_BENCH_POSTGRES_URL``,
the queue a fresh prefix on ``EVENTWIRE_BENCH_REDIS_URL``; both are removed after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.throughput import Store, redis_store
from broker.config.settings import Settings
from broker.ids import new_id
from broker.models import NewInvocation
from broker.queue import open_queue
from broker.queue.redis import connect
from broker.store.engine import create_engine
from broker.store.schema import functions, invocations
from tests.support.processes import children

CONFIG = """
functions:
  slow:
    handler: examples.functions:slow
    reserved_concurrency: 4
    timeout: 10s
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def history_child(pid: int) -> int | None:
    """The history writer process that serve ``pid`` started, once it runs."""
    found = children(pid, "broker.history.process")
    return found[0] if found else None


@dataclass
class Samples:
    """RSS of serve and of its history writer child, over time."""

    pid: int
    child: int | None = None
    values: list[tuple[float, float, float]] = field(default_factory=list)

    def take(self, t0: float) -> float:
        if self.child is None:
            self.child = history_child(self.pid)
        child = rss_mb(self.child) if self.child is not None else 0.0
        value = rss_mb(self.pid)
        self.values.append((time.perf_counter() - t0, value, child))
        return value

    def peak(self, since: float = 0.0, column: int = 1) -> float:
        return max(v[column] for v in self.values if v[0] >= since)


async def sample(samples: Samples, t0: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.take(t0)
        await asyncio.sleep(0.25)


async def recorded(store: Store) -> int:
    engine = create_engine(store.database_url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(invocations)) or 0)
    finally:
        await engine.dispose()


async def redis_memory_mb(url: str) -> float:
    client = connect(url)
    try:
        info = await client.info("memory")
    finally:
        await client.aclose()
    return int(info["used_memory"]) / 2**20


def start_serve(store: Store, folder: Path) -> subprocess.Popen[bytes]:
    config = folder / "eventwire.yaml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWIRE_")}
    env.update(
        EVENTWIRE_DATABASE_URL=store.database_url,
        EVENTWIRE_QUEUE_URL=store.queue_url or "",
        EVENTWIRE_QUEUE_PREFIX=store.queue_prefix,
        EVENTWIRE_LOG_LEVEL="WARNING",
    )
    log = (folder / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "serve", "-c", str(config), "--migrate"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
    )
    return process


async def run(n: int, batch: int) -> Table:
    console = Console(stderr=True, highlight=False)
    async with redis_store(dict(os.environ)) as store:
        assert store.queue_url is not None
        with tempfile.TemporaryDirectory(prefix="eventwire_mem_") as folder:
            serve = start_serve(store, Path(folder))
            try:
                return await measure(serve, store, n, batch, console)
            finally:
                serve.terminate()
                serve.wait(60)


async def measure(
    serve: subprocess.Popen[bytes], store: Store, n: int, batch: int, console: Console
) -> Table:
    assert store.queue_url is not None
    settings = Settings(
        database_url=store.database_url,
        queue_url=store.queue_url,
        queue_prefix=store.queue_prefix,
    )
    engine = create_engine(store.database_url)
    try:
        deadline = time.monotonic() + 60
        while await _functions_registered(engine) == 0:  # serve has migrated and started
            if serve.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("serve did not start")
            await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        samples = Samples(serve.pid)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(samples, t0, stop))
        await asyncio.sleep(2)  # settle into serving
        before, before_child = samples.peak(), samples.peak(0, 2)
        async with open_queue(settings, engine) as queue:
            t_enqueue = time.perf_counter()
            for start in range(0, n, batch):
                await queue.enqueue(
                    [
                        NewInvocation(id=new_id(), function="slow", payload=b"{}")
                        for _ in range(min(batch, n - start))
                    ]
                )
                if start % (batch * 100) == 0:
                    console.print(f"enqueued {start:,} (serve RSS {samples.values[-1][1]:.0f} MB)")
            enqueue_s = time.perf_counter() - t_enqueue
        pending_at = time.perf_counter() - t0
        console.print(f"enqueued {n:,} in {enqueue_s:.1f}s; waiting for the history to catch up")
        while (written := await recorded(store)) < n:
            if serve.poll() is not None:
                raise RuntimeError("serve exited")
            console.print(f"history has {written:,} of {n:,}")
            await asyncio.sleep(2)
        caught_up = time.perf_counter() - t0
        await asyncio.sleep(3)
        stop.set()
        await sampler
        redis_mb = await redis_memory_mb(store.queue_url)
    finally:
        await engine.dispose()
    after, after_child = samples.values[-1][1:]
    out = Table(title=f"serve process memory with {n:,} invocations pending (Redis queue)")
    for column in ("phase", "serve RSS MB", "history writer RSS MB"):
        out.add_column(column, justify="right" if column != "phase" else "left")
    out.add_row("serving, queue empty", f"{before:.0f}", f"{before_child:.0f}")
    out.add_row(
        f"peak while enqueuing ({enqueue_s:.0f}s)",
        f"{samples.peak(2):.0f}",
        f"{samples.peak(2, 2):.0f}",
    )
    out.add_row(
        f"peak while the history caught up ({caught_up - pending_at:.0f}s)",
        f"{samples.peak(pending_at):.0f}",
        f"{samples.peak(pending_at, 2):.0f}",
    )
    out.add_row(f"{n:,} pending, history written", f"{after:.0f}", f"{after_child:.0f}")
    out.add_row("Redis used_memory MB", f"{redis_mb:.0f}", "")
    return out


async def _functions_registered(engine: AsyncEngine) -> int:
    """How many functions the store knows (0 while serve has not set it up)."""
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(functions)) or 0)
    except DBAPIError:  # not migrated yet
        return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pending_memory")
    parser.add_argument("-n", type=int, default=1_000_000, help="invocations to leave pending")
    parser.add_argument("--batch", type=int, default=1000, help="invocations per enqueue call")
    args = parser.parse_args(argv)
    table = asyncio.run(run(args.n, args.batch))
    Console(width=100).print(table)


if __name__ == "__main__":
    main()
