"""SQS → queue → no-op function: records/s through an SQS mapping, against a bare
aiobotocore receive/delete loop on the same server, in one run.

One run, on moto's SQS server (started here on a free port; ``--endpoint`` names
another, e.g. ElasticMQ)::

    1. a fresh queue, n messages of about 100 bytes of JSON sent 10 per call
    2. the bare loop: --pollers tasks each receiving up to 10 messages (long polling)
       and deleting them with one DeleteMessageBatch, until n are deleted
    3. the queue filled again; one ``Service`` with a mapping on it (batch size 10,
       --pollers pollers) and an async no-op function, on a fresh store of
       --backend; timed from the first record invoked to the n-th

The ratio says what Eventwire costs over the least any consumer must do with SQS
(receive, delete); what a record costs here besides: shape Lambda's SQS event,
enqueue, lease, invoke, settle, then the delete once the invocation succeeded.

Run from the repository root::

    python -m benchmarks.sqs [-n 1000] [--backend sqlite|redis|postgres] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.kafka import Counter, store
from broker.config.settings import Settings
from broker.loading import parse_config
from broker.observability.logs import configure
from broker.service import Service

REGION = "us-east-1"
BATCH_SIZE = 10
COUNTER = Counter()


async def count(event: dict[str, Any], context: Any) -> None:
    """The no-op function: counts the messages it was given."""
    n = len(event["Records"])
    if COUNTER.records == 0:
        COUNTER.first_at = time.perf_counter()
    COUNTER.records += n
    COUNTER.invocations += 1
    if COUNTER.records >= COUNTER.target and COUNTER.done is not None:
        COUNTER.done_at = time.perf_counter()
        COUNTER.done.set()


@contextlib.contextmanager
def sqs_server(endpoint: str | None) -> Iterator[str]:
    """``endpoint``, or moto's server on a free port while the block runs; the
    environment botocore reads points at it."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    if endpoint is not None:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        yield endpoint
        return
    from moto.server import ThreadedMotoServer

    from tests.support.services import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    try:
        yield os.environ["AWS_ENDPOINT_URL"]
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def sqs(endpoint: str) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=endpoint
    ) as client:
        yield client


async def fill(client: Any, url: str, n: int) -> None:
    pad = "x" * 60
    sends = []
    for start in range(0, n, 10):
        entries = [
            {"Id": str(i), "MessageBody": json.dumps({"n": i, "type": "order", "pad": pad})}
            for i in range(start, min(n, start + 10))
        ]
        sends.append(client.send_message_batch(QueueUrl=url, Entries=entries))
        if len(sends) == 20:
            await asyncio.gather(*sends)
            sends.clear()
    await asyncio.gather(*sends)


async def bare(endpoint: str, n: int, pollers: int) -> float:
    """Records/s of ``pollers`` tasks receiving and deleting as fast as they can."""
    async with sqs(endpoint) as client:
        url = (await client.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        await fill(client, url, n)
        done = 0
        started = time.perf_counter()

        async def poll() -> None:
            nonlocal done
            while done < n:
                got = await client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                messages = got.get("Messages", [])
                if not messages:
                    continue
                await client.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )
                done += len(messages)

        await asyncio.gather(*(poll() for _ in range(pollers)))
        elapsed = time.perf_counter() - started
        await client.delete_queue(QueueUrl=url)
    return n / elapsed


async def eventwire(endpoint: str, n: int, backend: str, pollers: int) -> tuple[float, int]:
    async with sqs(endpoint) as client:
        url = (await client.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        await fill(client, url, n)
    config = parse_config(
        {
            "functions": {"noop": {"handler": "benchmarks.sqs:count"}},
            "mappings": [
                {
                    "name": f"bench-{uuid.uuid4().hex[:8]}",
                    "source": "sqs://" + url.split("://", 1)[1],
                    "function": "noop",
                    "batch_size": BATCH_SIZE,
                    "pollers": pollers,
                }
            ],
        }
    )
    # The service imports this module by name; run as ``__main__`` it is another copy.
    from benchmarks.sqs import COUNTER as counter

    counter.__init__(target=n, done=asyncio.Event())  # type: ignore[misc]
    try:
        async with store(backend, "sqlite") as where:
            service = Service(Settings(**where), config, migrate=True)
            task = asyncio.create_task(service.run(handle_signals=False))
            try:
                assert counter.done is not None
                await asyncio.wait_for(counter.done.wait(), 600)
            finally:
                service.stop()
                await task
    finally:
        async with sqs(endpoint) as client:
            await client.delete_queue(QueueUrl=url)
    return n / (counter.done_at - counter.first_at), counter.invocations


async def main_async(args: argparse.Namespace, endpoint: str) -> None:
    table = Table(
        title=f"SQS → Eventwire ({args.backend}), {args.n:,} messages, batches of "
        f"{BATCH_SIZE}, {args.pollers} pollers, against a bare receive/delete loop"
    )
    for column in ("run", "bare loop rec/s", "eventwire rec/s", "ratio", "invocations"):
        table.add_column(column, justify="right")
    for run in range(args.runs):
        plain = await bare(endpoint, args.n, args.pollers)
        rate, invocations = await eventwire(endpoint, args.n, args.backend, args.pollers)
        table.add_row(
            str(run + 1), f"{plain:,.0f}", f"{rate:,.0f}", f"{rate / plain:.2f}", f"{invocations:,}"
        )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000, help="messages (default 1,000)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "redis"], default="sqlite")
    parser.add_argument("--pollers", type=int, default=5, help="receivers (default 5, Lambda's)")
    parser.add_argument("--endpoint", help="an SQS endpoint to use instead of moto's server")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    configure("WARNING", "text")
    logging.getLogger("botocore").setLevel(logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs each request
    with sqs_server(args.endpoint) as endpoint:
        asyncio.run(main_async(args, endpoint))


if __name__ == "__main__":
    main()
