"""Writing settlements in batches: one transaction for everything that finished meanwhile.

``submit`` returns once the settlement is durable. While a batch is being
written the next one collects, so under load a transaction carries many
settlements and when idle a lone one is written at once; up to
``max_in_flight`` batches are written at the same time, so one slow commit
does not hold up every slot behind it. If the store is
unreachable the batch is retried with backoff; a lease that expired in the
meantime is reported lost (another dispatcher will run the invocation again).
A settlement answers with the lease the queue chained to it, if any
(``Settlement.chain_lease_s``); one whose submitter is gone is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from broker.models import Lease, Settlement
from broker.queue.base import InvocationQueue

log = logging.getLogger("eventwire.dispatch")

Settled = tuple[bool, Lease | None]
"""Whether a settlement's lease was still held, and the lease chained to it."""


class Settler:
    def __init__(
        self,
        queue: InvocationQueue,
        clock: Callable[[], datetime],
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._pending: list[tuple[Settlement, asyncio.Future[Settled]]] = []
        self._ready = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name="eventwire-settler")
        return self._task

    async def submit(self, settlement: Settlement) -> Settled:
        """Persist ``settlement``; whether its lease was still held, and the lease chained
        to it.

        Cancelling the caller cancels only the wait: the settlement is written all the same
        (and a lease chained to it given back).
        """
        future: asyncio.Future[Settled] = asyncio.get_running_loop().create_future()
        self._pending.append((settlement, future))
        self._ready.set()
        return await future

    async def close(self) -> None:
        """Write what is pending, then stop."""
        self._closing = True
        self._ready.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        writing: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._pending:
                    if len(writing) >= self.max_in_flight:
                        await self._finish_one(writing)
                        continue
                    batch, self._pending = (
                        self._pending[: self.max_batch],
                        self._pending[self.max_batch :],
                    )
                    task = asyncio.create_task(self._write(batch))
                    task.add_done_callback(lambda _t: self._ready.set())
                    writing.add(task)
                for task in [t for t in writing if t.done()]:
                    writing.discard(task)
                    task.result()  # a write that failed for good stops the settler
                if self._closing and not self._pending:
                    while writing:
                        await self._finish_one(writing)
                    return
        finally:
            for task in writing:
                task.cancel()

    @staticmethod
    async def _finish_one(writing: set[asyncio.Task[None]]) -> None:
        """Wait for one write to end; a write that failed for good stops the settler."""
        done, _ = await asyncio.wait(writing, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            writing.discard(task)
            task.result()

    async def _settle(self, settlements: list[Settlement]) -> dict[str, Lease | None]:
        """The queue's answer to ``settlements``, retried with backoff for as long as the store
        is unavailable. The first try goes without tenacity: it is the one that nearly always
        succeeds, and tenacity's machinery costs about as much as a Redis settle itself."""
        try:
            return await self.queue.settle(settlements, self.clock())
        except Exception as exc:
            log.warning("settle: store unavailable (%s); retrying", exc)
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.1, max=5),
            retry=retry_if_exception_type(Exception),
            before_sleep=lambda state: log.warning(
                "settle: store unavailable (%s); retrying",
                state.outcome and state.outcome.exception(),
            ),
        ):
            with attempt:
                return await self.queue.settle(settlements, self.clock())
        raise AssertionError("retried without end: never here")

    async def _write(self, batch: list[tuple[Settlement, asyncio.Future[Settled]]]) -> None:
        try:
            held = await self._settle([s for s, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        unclaimed = []
        for settlement, future in batch:
            ok = settlement.lease_token in held
            chained = held.get(settlement.lease_token)
            if not ok:
                log.warning(
                    "settle: lease lost for invocation %s; it will run again",
                    settlement.invocation_id,
                )
            if future.done():  # the submitter was cancelled
                if chained is not None:
                    unclaimed.append(chained.token)
            else:
                future.set_result((ok, chained))
        if unclaimed:
            with contextlib.suppress(Exception):  # else the leases expire, as a crash's do
                await self.queue.release(unclaimed)
