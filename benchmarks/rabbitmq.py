"""RabbitMQ → queue → no-op function: records/s through a RabbitMQ mapping.

One run::

    1. declare a fresh queue on the local RabbitMQ and publish n messages of
       about 100 bytes of JSON, each with a message_id
    2. one ``Service`` with a mapping on the queue (batch size 100, window
       500 ms, max_concurrency 5) and an async no-op function, on a fresh store
       of --backend; timed from the first record invoked to the n-th

What a record costs here: consume, shape Lambda's RabbitMQ event, record the
batch as unacknowledged, enqueue, ack, confirm the acks (a round trip on the
channel), forget the record, lease, invoke, settle.

Run from the repository root::

    python -m benchmarks.rabbitmq [-n 50000] [--backend postgres|sqlite|redis] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import uuid
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.kafka import Counter, serving
from broker.loading import parse_config
from broker.observability.logs import configure
from tests.support.rabbitmq import RABBITMQ_URL

BATCH_SIZE = 100


COUNTER = Counter()


async def count(event: dict[str, Any], context: Any) -> None:
    """The no-op function: counts the messages it was given."""
    n = sum(len(messages) for messages in event["rmqMessagesByQueue"].values())
    if COUNTER.records == 0:
        COUNTER.first_at = time.perf_counter()
    COUNTER.records += n
    COUNTER.invocations += 1
    if COUNTER.records >= COUNTER.target and COUNTER.done is not None:
        COUNTER.done_at = time.perf_counter()
        COUNTER.done.set()


async def publish(queue: str, n: int) -> None:
    import aio_pika

    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        pad = "x" * 60
        for i in range(n):
            body = json.dumps({"n": i, "type": "order_created", "pad": pad}).encode()
            await channel.default_exchange.publish(
                aio_pika.Message(body, message_id=f"m{i}"), routing_key=queue
            )
    finally:
        await connection.close()


async def drop(queue: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
    finally:
        await connection.close()


async def eventwire(n: int, backend: str) -> tuple[float, int]:
    queue = f"eventwire-bench-{uuid.uuid4().hex[:8]}"
    await publish(queue, n)
    source = f"{RABBITMQ_URL.rstrip('/')}/%2F?queue={queue}"
    config = parse_config(
        {
            "functions": {"noop": {"handler": "benchmarks.rabbitmq:count"}},
            "mappings": [
                {
                    "name": f"bench-{uuid.uuid4().hex[:8]}",
                    "source": source,
                    "function": "noop",
                    "batch_size": BATCH_SIZE,
                    "max_concurrency": 5,
                }
            ],
        }
    )
    # The service imports this module by name; run as ``__main__`` it is another copy.
    from benchmarks.rabbitmq import COUNTER as counter

    counter.__init__(target=n, done=asyncio.Event())  # type: ignore[misc]
    try:
        async with serving(config, backend):
            assert counter.done is not None
            await asyncio.wait_for(counter.done.wait(), 600)
    finally:
        await drop(queue)
    return n / (counter.done_at - counter.first_at), counter.invocations


async def main_async(args: argparse.Namespace) -> None:
    table = Table(
        title=f"RabbitMQ → Eventwire ({args.backend}), {args.n:,} messages, "
        f"batches of {BATCH_SIZE}, max_concurrency 5"
    )
    for column in ("run", "eventwire rec/s", "invocations"):
        table.add_column(column, justify="right")
    for run in range(args.runs):
        rate, invocations = await eventwire(args.n, args.backend)
        table.add_row(str(run + 1), f"{rate:,.0f}", f"{invocations:,}")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50_000, help="messages (default 50,000)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "redis"], default="postgres")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    configure("WARNING", "text")
    logging.getLogger("aio_pika").setLevel(logging.ERROR)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
