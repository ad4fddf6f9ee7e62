"""A queue whose enqueues make spans: each new invocation's ``enqueue`` span, whose
context it carries (:mod:`broker.observability.tracing`). :func:`broker.queue.open_queue`
puts it around the backend when tracing is configured, and only then."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from broker.models import Enqueued, FunctionLimits, Lease, NewInvocation, Settlement
from broker.observability.tracing import Tracing
from broker.queue.base import InvocationQueue


class TracedQueue:
    """``queue``, with an ``enqueue`` span around each invocation it is given."""

    def __init__(self, queue: InvocationQueue, tracing: Tracing) -> None:
        self.queue = queue
        self.tracing = tracing

    async def enqueue(self, batch: Sequence[NewInvocation]) -> list[Enqueued]:
        spans = self.tracing.enqueueing(batch)
        try:
            answers = await self.queue.enqueue(spans.items)
        except BaseException as exc:
            spans.end(None, exc)
            raise
        spans.end(answers, None)
        return answers

    async def lease(
        self, n: int, owner: str, functions: Mapping[str, FunctionLimits], now: datetime
    ) -> list[Lease]:
        return await self.queue.lease(n, owner, functions, now)

    async def extend(self, expiries: Mapping[str, datetime]) -> set[str]:
        return await self.queue.extend(expiries)

    async def settle(
        self, settlements: Sequence[Settlement], now: datetime
    ) -> dict[str, Lease | None]:
        return await self.queue.settle(settlements, now)

    async def release(self, tokens: Sequence[str]) -> None:
        await self.queue.release(tokens)

    async def lane_depths(self, lanes: Sequence[str]) -> dict[str, int]:
        return await self.queue.lane_depths(lanes)

    async def running(self, function: str, now: datetime) -> int:
        return await self.queue.running(function, now)

    async def wait(self, functions: Mapping[str, FunctionLimits], timeout_s: float) -> None:
        await self.queue.wait(functions, timeout_s)

    async def close(self) -> None:
        await self.queue.close()
