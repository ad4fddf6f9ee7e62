"""SQS → queue → no-op function, against a bare receive/delete loop on the same server.

One run, against one SQS server (moto's, started in a process of its own on a free port,
unless ``--endpoint`` names another: ElasticMQ, LocalStack)::

    1. a fresh standard queue with n messages of about 100 bytes of JSON; a bare
       aiobotocore loop (five pollers: ReceiveMessage of ten, then DeleteMessageBatch)
       empties it: the server's own pace;
    2. another queue with n messages; one ``Service`` with a mapping on it (batch size
       10, max_concurrency 5) and an async no-op function, on a fresh store of
       --backend; timed from the first record invoked to the n-th, and on until the
       queue is empty (every message deleted).

The ratio (Eventwire's records/s over the bare loop's) is what the mapping costs on top
of receiving and deleting: the heartbeat, shaping Lambda's event, recording the batch,
enqueueing, leasing, invoking, settling and following the outcome.

Run from the repository root::

    python -m benchmarks.sqs [-n 2000] [--backend sqlite|postgres|redis] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.kafka import Counter, serving
from broker.loading import parse_config
from broker.observability.logs import configure
from tests.support.moto import ENVIRONMENT, REGION
from tests.support.services import free_port

POLLERS = 5
PAD = "x" * 60

COUNTER = Counter()


async def count(event: dict[str, Any], context: Any) -> None:
    """The no-op function: counts the messages it was given."""
    if COUNTER.records == 0:
        COUNTER.first_at = time.perf_counter()
    COUNTER.records += len(event["Records"])
    COUNTER.invocations += 1
    if COUNTER.records >= COUNTER.target and COUNTER.done is not None:
        COUNTER.done_at = time.perf_counter()
        COUNTER.done.set()


@contextlib.contextmanager
def moto(endpoint: str | None) -> Iterator[str]:
    """``endpoint``, or moto's server in a process of its own (not sharing our GIL)."""
    if endpoint:
        yield endpoint
        return
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@contextlib.asynccontextmanager
async def sqs(endpoint: str) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=endpoint
    ) as client:
        yield client


async def wait_up(endpoint: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with sqs(endpoint) as client:
                await client.list_queues()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def filled_queue(endpoint: str, n: int) -> str:
    """A new queue holding ``n`` messages; answers its URL."""
    async with sqs(endpoint) as client:
        name = f"eventwire-bench-{uuid.uuid4().hex[:8]}"
        url = (await client.create_queue(QueueName=name))["QueueUrl"]
        for start in range(0, n, 10):
            entries = [
                {"Id": str(i), "MessageBody": json.dumps({"n": i, "pad": PAD})}
                for i in range(start, min(start + 10, n))
            ]
            await client.send_message_batch(QueueUrl=url, Entries=entries)
    return str(url)


async def bare(endpoint: str, n: int) -> float:
    """Records/s of five pollers receiving ten at a time and deleting what they got."""
    url = await filled_queue(endpoint, n)
    done = 0
    async with sqs(endpoint) as client:

        async def poll() -> None:
            nonlocal done
            while done < n:
                answer = await client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                messages = answer.get("Messages", [])
                if messages:
                    entries = [
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ]
                    await client.delete_message_batch(QueueUrl=url, Entries=entries)
                    done += len(messages)

        started = time.perf_counter()
        await asyncio.gather(*(poll() for _ in range(POLLERS)))
        return n / (time.perf_counter() - started)


async def eventwire(endpoint: str, n: int, backend: str) -> tuple[float, float, int]:
    """Records/s to the n-th invocation, and to the queue empty; invocations."""
    url = await filled_queue(endpoint, n)
    source = "sqs://" + url.split("://", 1)[1]
    config = parse_config(
        {
            "functions": {"noop": {"handler": "benchmarks.sqs:count"}},
            "mappings": [
                {
                    "name": f"bench-{uuid.uuid4().hex[:8]}",
                    "source": source,
                    "function": "noop",
                    "max_concurrency": POLLERS,
                    "endpoint_url": endpoint,
                }
            ],
        }
    )
    # The service imports this module by name; run as ``__main__`` it is another copy.
    from benchmarks.sqs import COUNTER as counter

    counter.__init__(target=n, done=asyncio.Event())  # type: ignore[misc]
    async with serving(config, backend):
        assert counter.done is not None
        await asyncio.wait_for(counter.done.wait(), 600)
        async with sqs(endpoint) as client:
            while True:
                found = await client.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )
                if not any(int(v) for v in found["Attributes"].values()):
                    break
                await asyncio.sleep(0.05)
        emptied_at = time.perf_counter()
    invoked = n / (counter.done_at - counter.first_at)
    return invoked, n / (emptied_at - counter.first_at), counter.invocations


async def main_async(args: argparse.Namespace) -> None:
    with moto(args.endpoint) as endpoint:
        await wait_up(endpoint)
        table = Table(
            title=f"SQS → Eventwire ({args.backend}) against a bare receive/delete loop, "
            f"{args.n:,} messages, batches of 10, {POLLERS} pollers"
        )
        for column in ("run", "bare rec/s", "eventwire rec/s", "to empty rec/s", "ratio"):
            table.add_column(column, justify="right")
        for run in range(args.runs):
            base = await bare(endpoint, args.n)
            invoked, emptied, _ = await eventwire(endpoint, args.n, args.backend)
            table.add_row(
                str(run + 1),
                f"{base:,.0f}",
                f"{invoked:,.0f}",
                f"{emptied:,.0f}",
                f"{emptied / base:.2f}",
            )
        Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="messages (default 2,000)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "redis"], default="sqlite")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--endpoint", help="an SQS server to use instead of moto's")
    args = parser.parse_args()
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    configure("WARNING", "text")
    logging.getLogger("botocore").setLevel(logging.ERROR)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
