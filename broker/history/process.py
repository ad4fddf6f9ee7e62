"""The Redis queue's history writer, run by ``serve`` in a child process.

Copying the history stream into SQL is about a quarter of what a serving
process does per invocation on the Redis queue; in a child of its own it runs
on another core instead of taking the dispatcher's. The parent writes one
JSON line to the child's stdin (the settings and the writer's owner name) and
keeps the pipe open: the child stops — after writing what is there — when the
pipe closes, whether the parent asked (``stop()``) or died. A child that
exits on its own is started again, with backoff; meanwhile the history waits
in Redis, and another process's writer may take over the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from broker.aio import loop
from broker.aio.waits import wait_set
from broker.config.settings import Settings
from broker.observability.logs import configure
from broker.queue import is_redis

log = logging.getLogger("eventwire.history")

STOP_TIMEOUT_S = 60.0
"""How long ``stop()`` lets the child write what is left before killing it."""
STABLE_S = 30.0
"""A child that ran this long before exiting is restarted after the shortest delay."""


@asynccontextmanager
async def copying_history(settings: Settings, owner: str) -> AsyncIterator[None]:
    """While open, a supervised child copies the Redis queue's history into the SQL store
    at ``settings.database_url`` (and writes what is left when it closes). A SQL queue
    keeps its history itself: then this does nothing."""
    if not is_redis(settings.effective_queue_url):
        yield
        return
    # Unique even for two services in one process: the lease tells writers apart.
    process = HistoryProcess(settings, f"{owner}/{uuid.uuid4().hex[:8]}")
    await process.start()
    try:
        yield
    finally:
        await process.stop()


class HistoryProcess:
    """Runs :class:`~broker.history.writer.HistoryWriter` in a supervised child."""

    def __init__(self, settings: Settings, owner: str) -> None:
        self.settings = settings
        self.owner = owner
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="eventwire-history")

    async def stop(self) -> None:
        """Let the child write what is left, then reap it (kill it after STOP_TIMEOUT_S)."""
        self._stopping.set()
        if self._supervisor is not None:
            await self._supervisor

    async def _spawn(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "broker.history.process",
            stdin=asyncio.subprocess.PIPE,
        )
        assert self._process.stdin is not None
        hello = {"settings": self.settings.model_dump(mode="json"), "owner": self.owner}
        self._process.stdin.write(json.dumps(hello).encode() + b"\n")
        await self._process.stdin.drain()

    async def _supervise(self) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            process = self._process
            assert process is not None
            exited = asyncio.ensure_future(process.wait())
            stopping = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if self._stopping.is_set():
                await self._reap(process, exited)
                return
            failures = 1 if time.monotonic() - started > STABLE_S else failures + 1
            delay = min(0.1 * 2**failures, 10.0)
            log.warning(
                "history: the writer process exited (code %s); starting another in %.1fs",
                process.returncode,
                delay,
            )
            await wait_set(self._stopping, delay)
            if self._stopping.is_set():
                return
            with contextlib.suppress(OSError):  # the old process stays reaped: tried again
                await self._spawn()

    @staticmethod
    async def _reap(process: asyncio.subprocess.Process, exited: asyncio.Future[int]) -> None:
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.shield(exited)
        except TimeoutError:
            log.warning("history: the writer process did not stop; killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await exited


# ---------------------------------------------------------------- the child


async def _child() -> None:
    from broker.history.writer import HistoryWriter
    from broker.queue.redis import connect, key_prefix
    from broker.store.engine import create_engine

    running = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await running.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    hello = json.loads(await stdin.readline())
    settings = Settings.model_validate(hello["settings"])
    configure(settings.log_level, settings.log_format)
    engine = create_engine(settings.database_url)
    client = connect(settings.effective_queue_url)
    writer = HistoryWriter(
        client,
        key_prefix(settings.queue_prefix),
        engine,
        owner=hello["owner"],
        keep_succeeded_payloads=settings.keep_succeeded_payloads,
    )
    loop.tune_gc()
    task = asyncio.create_task(writer.run())
    try:
        closed = asyncio.ensure_future(stdin.read())  # returns at EOF: stop
        await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
        writer.stop()
        await task
    finally:
        await client.aclose()
        await engine.dispose()


def main() -> None:
    # Signals meant for the service (Ctrl-C reaches the whole process group, a supervisor
    # may signal every process) are the parent's to act on: this child stops when its
    # stdin closes, after writing what is there.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    loop.run(_child())


if __name__ == "__main__":
    main()
