"""How fast the invocation pipeline runs, per queue backend.

For each backend, on a fresh, migrated store::

    1. enqueue, one invocation per call      → enqueue_single_per_s
       (these rows are deleted again before step 2)
    2. enqueue n invocations, 500 per call   → enqueue_per_s
       (nothing is served yet, so nothing is consumed)
    3. start a service (one dispatcher, the in-process python invoker, the
       async no-op handler) and time it from its start to the n-th
       completion                            → invocations_per_s
    4. with the service idle, enqueue one invocation at a time from a client
       queue on its own engine (as ``eventwire invoke`` would) and wait for
       it to finish; enqueue-to-start latency = the attempt's ``started_at``
       minus the wall-clock time when the client's enqueue returned
       (committed)                            → p50_ms, p99_ms

Run from the repository root::

    python -m benchmarks.throughput [--backend sqlite|postgres|redis|all] [-n 20000] [--json]

A backend is one entry in :data:`BACKENDS`: a context manager that makes an
empty store and removes it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from broker.aio import loop
from broker.config.settings import Settings
from broker.ids import new_id
from broker.loading import parse_config
from broker.models import NewInvocation, State
from broker.observability.logs import configure
from broker.observability.metrics import (
    DROP_REASONS,
    ERROR_REASONS,
    FunctionMetrics,
    Metrics,
)
from broker.observability.tracing import NO_TRACING, Tracing
from broker.queue import InvocationQueue, open_queue
from broker.queue.redis import connect
from broker.service import Service
from broker.store.engine import create_engine
from broker.store.migrate import upgrade
from broker.store.schema import attempts, invocations

FUNCTION = "noop"
HANDLER = "examples.functions:noop"
PAYLOAD = b"{}"
BATCH_SIZE = 500
SINGLE_MAX = 2000
"""At most this many invocations are enqueued one per call (it is slow and linear)."""

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

progress = Console(stderr=True, highlight=False)


def say(backend: str, what: str, value: str) -> None:
    progress.print(f"{backend:<9} {what:<22} {value}")


# ---------------------------------------------------------------- backends


@dataclass(frozen=True, slots=True)
class Store:
    """Where a backend's run keeps its data: the SQL store and, if separate, the queue."""

    database_url: str
    queue_url: str | None = None
    queue_prefix: str = "eventwire"


Backend = Callable[[Mapping[str, str]], AbstractAsyncContextManager[Store]]
"""Makes an empty store (given the environment, for server addresses); removes it after."""


@asynccontextmanager
async def sqlite_store(_env: Mapping[str, str]) -> AsyncIterator[Store]:
    with tempfile.TemporaryDirectory(prefix="eventwire_bench_") as folder:
        yield Store(f"sqlite+aiosqlite:///{Path(folder) / 'eventwire.db'}")


@asynccontextmanager
async def postgres_store(env: Mapping[str, str]) -> AsyncIterator[Store]:
    """A database ``eventwire_bench_<random>`` on ``EVENTWIRE_BENCH_POSTGRES_URL``'s server."""
    server = env.get("EVENTWIRE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    name = f"eventwire_bench_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield Store(make_url(server).set(database=name).render_as_string(hide_password=False))
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@asynccontextmanager
async def redis_store(env: Mapping[str, str]) -> AsyncIterator[Store]:
    """The queue under a fresh prefix on ``EVENTWIRE_BENCH_REDIS_URL``, history in PostgreSQL."""
    url = env.get("EVENTWIRE_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    prefix = f"eventwire-bench-{uuid.uuid4().hex[:12]}"
    async with postgres_store(env) as sql:
        try:
            yield Store(sql.database_url, url, prefix)
        finally:
            await clear_redis(url, prefix)


async def clear_redis(url: str, prefix: str) -> None:
    client = connect(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


async def redis_commands(url: str | None) -> int:
    """Commands the Redis server has run so far (``INFO commandstats``); 0 without Redis."""
    if url is None:
        return 0
    client = connect(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return sum(int(v["calls"]) for v in stats.values())


BACKENDS: dict[str, Backend] = {
    "sqlite": sqlite_store,
    "postgres": postgres_store,
    "redis": redis_store,
}


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Result:
    backend: str
    n: int
    metrics: bool
    invocations_per_s: float
    """End to end: n completions / (service start → n-th completion)."""
    enqueue_per_s: float
    """Batched: 500 invocations per ``enqueue`` call."""
    enqueue_single_per_s: float
    """One invocation per ``enqueue`` call."""
    p50_ms: float
    """Idle enqueue-to-start latency, median."""
    p99_ms: float
    cpu_us_per_invocation: float
    """This process's CPU time (user + system) from service start to the n-th completion, / n."""
    redis_commands_per_invocation: float | None = None
    """Redis commands run per invocation, enqueue to recorded history (Redis only)."""
    history_lag_s: float | None = None
    """After the n-th completion, until the SQL history had all n (Redis only)."""
    tracing: bool = False


@dataclass(frozen=True, slots=True)
class Options:
    n: int
    concurrency: int
    latency_samples: int
    metrics: bool = True
    """False: the dispatcher's figures go nowhere (:func:`unmeasured`), to show their cost."""
    tracing: bool = False
    """True: each attempt makes its spans (:func:`discarding_tracing`), to show their cost."""


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------- phases


def _new() -> NewInvocation:
    return NewInvocation(id=new_id(), function=FUNCTION, payload=PAYLOAD)


async def enqueue_one_at_a_time(queue: InvocationQueue, count: int) -> float:
    """Invocations per second with one ``enqueue`` call (one transaction) each."""
    t0 = time.perf_counter()
    for _ in range(count):
        await queue.enqueue([_new()])
    return count / (time.perf_counter() - t0)


async def enqueue_batched(queue: InvocationQueue, count: int, batch_size: int) -> float:
    """Invocations per second with ``batch_size`` invocations per ``enqueue`` call."""
    batches = [
        [_new() for _ in range(min(batch_size, count - start))]
        for start in range(0, count, batch_size)
    ]
    t0 = time.perf_counter()
    for batch in batches:
        await queue.enqueue(batch)
    return count / (time.perf_counter() - t0)


@dataclass(slots=True)
class Serving:
    service: Service
    task: asyncio.Task[None]

    def succeeded(self) -> int:
        assert self.service.dispatcher is not None
        return self.service.dispatcher.stats.succeeded

    async def until_succeeded(self, count: int, timeout_s: float) -> None:
        """Poll until ``count`` invocations succeeded; fail if the service dies or time runs out.

        A settle is persisted before it is counted, so the count is what the store holds.
        """
        what = f"{count:,} completions"
        deadline = time.monotonic() + timeout_s
        while self.succeeded() < count:
            if self.task.done():
                self.task.result()
                raise RuntimeError(f"the service stopped while waiting for {what}")
            if time.monotonic() > deadline:
                stats = self.service.dispatcher.stats if self.service.dispatcher else None
                raise TimeoutError(f"no {what} after {timeout_s:.0f}s ({stats})")
            await asyncio.sleep(0.002)


class _Nowhere:
    """A counter, gauge or histogram that keeps nothing."""

    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...

    def observe(self, amount: float) -> None: ...


class _Unmeasured(Metrics):
    def function(self, name: str) -> FunctionMetrics:
        nowhere: Any = _Nowhere()
        return FunctionMetrics(
            invocations=nowhere,
            errors=dict.fromkeys(ERROR_REASONS, nowhere),
            duration=nowhere,
            concurrent=nowhere,
            event_age=nowhere,
            retries=nowhere,
            dropped=dict.fromkeys(DROP_REASONS, nowhere),
            dead_letters=nowhere,
        )

    def received_from(self, name: str, source: str) -> Any:
        return _Nowhere()


def unmeasured() -> Metrics:
    """Metrics whose figures go nowhere: the service without the cost of measuring."""
    return _Unmeasured()


def discarding_tracing() -> Tracing:
    """OpenTelemetry's tracing, spans batched as in production and then dropped: what
    making them costs, without a collector's."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from broker.observability.otel import OtelTracing

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    return OtelTracing(provider)


@asynccontextmanager
async def serving(
    settings: Settings, *, metrics: bool = True, tracing: bool = False
) -> AsyncIterator[Serving]:
    """A service for the no-op function, in this event loop; yields once it is leasing."""
    config = parse_config({"functions": {FUNCTION: {"handler": HANDLER}}})
    service = Service(
        settings,
        config,
        migrate=True,
        tracing=discarding_tracing() if tracing else NO_TRACING,
    )
    if not metrics:
        service.metrics = unmeasured()
    task = asyncio.create_task(service.run(handle_signals=False), name="bench-service")
    started = asyncio.create_task(service.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if started not in done:
        started.cancel()
        if task.done():
            task.result()
        raise RuntimeError("the service did not start within 60s")
    try:
        yield Serving(service, task)
    finally:
        service.stop()
        await asyncio.wait_for(task, 60)


async def drain(running: Serving, n: int) -> tuple[float, float]:
    """Completions per second, from now (the service just started) to the n-th one, and
    this process's CPU microseconds per completion meanwhile."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    await running.until_succeeded(n, 60 + n / 20)
    cpu_s = time.process_time() - cpu0
    return n / (time.perf_counter() - t0), cpu_s / n * 1e6


async def idle_latencies(
    running: Serving, client: InvocationQueue, engine: AsyncEngine, samples: int
) -> list[float]:
    """Enqueue-to-start latency in ms of ``samples`` invocations enqueued to an idle service."""
    rng = random.Random(0)
    committed: dict[str, datetime] = {}
    for _ in range(samples):
        # Let the dispatcher settle into waiting; jitter so polling backends are not aliased.
        await asyncio.sleep(rng.uniform(0.01, 0.03))
        before = running.succeeded()
        item = _new()
        await client.enqueue([item])
        committed[item.id] = datetime.now(UTC)
        await running.until_succeeded(before + 1, 30)
    deadline = time.monotonic() + 60
    while True:  # a queue outside SQL records its history a moment later
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(attempts.c.invocation_id, attempts.c.started_at).where(
                    attempts.c.invocation_id.in_(list(committed))
                )
            )
            started = {r.invocation_id: r.started_at for r in rows}
            await conn.rollback()
        if len(started) == len(committed) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return [(started[i] - at).total_seconds() * 1000 for i, at in committed.items()]


async def until_recorded(engine: AsyncEngine, n: int, name: str, timeout_s: float = 120) -> None:
    """Wait until the SQL history shows ``n`` succeeded invocations."""
    deadline = time.monotonic() + timeout_s
    while (done := await count_succeeded(engine)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: {done:,} invocations recorded, expected {n:,}")
        await asyncio.sleep(0.01)
    if done != n:
        raise RuntimeError(f"{name}: {done:,} invocations succeeded, expected {n:,}")


async def count_succeeded(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).where(invocations.c.state == State.SUCCEEDED.value)
        )
        await conn.rollback()
    return int(count or 0)


async def run_backend(name: str, store: Store, options: Options) -> Result:
    settings = Settings(
        database_url=store.database_url,
        queue_url=store.queue_url,
        queue_prefix=store.queue_prefix,
        concurrency=options.concurrency,
    )
    n = options.n
    engine = create_engine(store.database_url)
    try:
        await upgrade(engine)
        async with open_queue(settings, engine) as client:
            single = min(n, SINGLE_MAX)
            single_per_s = await enqueue_one_at_a_time(client, single)
            say(name, "enqueue, one per call", f"{single_per_s:,.0f}/s ({single:,})")
            async with engine.begin() as conn:
                await conn.execute(delete(invocations))
            if store.queue_url is not None:
                await clear_redis(store.queue_url, store.queue_prefix)
            commands = await redis_commands(store.queue_url)
            batched_per_s = await enqueue_batched(client, n, BATCH_SIZE)
            say(name, f"enqueue, {BATCH_SIZE} per call", f"{batched_per_s:,.0f}/s ({n:,})")
            async with serving(
                settings, metrics=options.metrics, tracing=options.tracing
            ) as running:
                per_s, cpu_us = await drain(running, n)
                say(name, "end to end", f"{per_s:,.0f}/s ({n:,}), {cpu_us:.0f} µs CPU each")
                t_done = time.perf_counter()
                await until_recorded(engine, n, name)
                lag_s = time.perf_counter() - t_done
                commands = await redis_commands(store.queue_url) - commands
                latencies = await idle_latencies(running, client, engine, options.latency_samples)
            p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
            say(name, "idle enqueue → start", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    finally:
        await engine.dispose()
    redis = store.queue_url is not None
    if redis:
        say(name, "redis commands", f"{commands / n:.1f} per invocation")
        say(name, "history lag", f"{lag_s:.2f} s after the last completion")
    return Result(
        backend=name,
        n=n,
        metrics=options.metrics,
        invocations_per_s=round(per_s, 1),
        enqueue_per_s=round(batched_per_s, 1),
        enqueue_single_per_s=round(single_per_s, 1),
        p50_ms=round(p50, 3),
        p99_ms=round(p99, 3),
        cpu_us_per_invocation=round(cpu_us, 1),
        redis_commands_per_invocation=round(commands / n, 2) if redis else None,
        history_lag_s=round(lag_s, 3) if redis else None,
        tracing=options.tracing,
    )


# ---------------------------------------------------------------- output


def table(results: Sequence[Result]) -> Table:
    out = Table(title="Eventwire throughput (no-op handler, one serve process)")
    out.add_column("backend")
    out.add_column("n", justify="right")
    out.add_column("metrics")
    out.add_column("tracing")
    out.add_column("end-to-end inv/s", justify="right")
    out.add_column(f"enqueue/s (batched {BATCH_SIZE})", justify="right")
    out.add_column("enqueue/s (one at a time)", justify="right")
    out.add_column("idle start p50 ms", justify="right")
    out.add_column("p99 ms", justify="right")
    out.add_column("CPU µs/inv", justify="right")
    out.add_column("redis cmds/inv", justify="right")
    for r in results:
        out.add_row(
            r.backend,
            f"{r.n:,}",
            "on" if r.metrics else "off",
            "on" if r.tracing else "off",
            f"{r.invocations_per_s:,.0f}",
            f"{r.enqueue_per_s:,.0f}",
            f"{r.enqueue_single_per_s:,.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.cpu_us_per_invocation:.0f}",
            "-"
            if r.redis_commands_per_invocation is None
            else f"{r.redis_commands_per_invocation:.1f}",
        )
    return out


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description="Enqueue n no-op invocations and time until all complete, per backend.",
    )
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("-n", type=int, default=20_000, help="invocations (default 20000)")
    parser.add_argument("--json", action="store_true", help="one JSON object per backend")
    parser.add_argument("--concurrency", type=int, default=64, help="dispatcher slots")
    parser.add_argument(
        "--latency-samples", type=int, default=200, help="idle invocations timed one by one"
    )
    parser.add_argument(
        "--metrics",
        choices=["on", "off", "both"],
        default="on",
        help="both: each backend with metrics off, then on, to show what they cost",
    )
    parser.add_argument(
        "--tracing",
        choices=["on", "off", "both"],
        default="off",
        help="on: each attempt makes its spans (batched, then dropped); both: off, then on",
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.latency_samples < 1:
        parser.error("-n, --concurrency and --latency-samples must be at least 1")
    return args


async def run(
    names: Sequence[str],
    options: Options,
    env: Mapping[str, str],
    *,
    as_json: bool,
    kinds: Sequence[tuple[bool, bool]] = ((True, False),),
) -> None:
    """Each backend once per ``kinds`` (metrics on?, tracing on?)."""
    results = []
    for name in names:
        for metrics, tracing in kinds:
            async with BACKENDS[name](env) as store:
                chosen = replace(options, metrics=metrics, tracing=tracing)
                result = await run_backend(name, store, chosen)
            results.append(result)
            if as_json:
                print(json.dumps(asdict(result)), flush=True)
    if not as_json:
        console = Console()
        if not console.is_terminal:
            console.width = 140  # a piped table keeps one line per row
        console.print(table(results))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    configure("WARNING")
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    names = list(BACKENDS) if args.backend == "all" else [args.backend]
    options = Options(n=args.n, concurrency=args.concurrency, latency_samples=args.latency_samples)
    choices = {"on": (True,), "off": (False,), "both": (False, True)}
    kinds = [(m, t) for m in choices[args.metrics] for t in choices[args.tracing]]
    loop.run(run(names, options, dict(os.environ), as_json=args.json, kinds=kinds))


if __name__ == "__main__":
    main()
