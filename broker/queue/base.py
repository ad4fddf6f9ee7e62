"""The ``InvocationQueue`` protocol every queue backend implements.

One contract test suite (``tests/contract/queue_contract.py``) runs against
every backend; a backend is correct when it passes it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from broker.models import Enqueued, FunctionLimits, Lease, NewInvocation, Settlement


class QueueError(Exception):
    """The queue could not do what was asked (the store is unreachable ...)."""


class InvocationQueue(Protocol):
    """A durable queue of invocations with leases, lanes and delayed retries.

    Guarantees a backend gives:

    * ``enqueue`` is atomic for the batch and idempotent by
      ``(function, idempotency_key)``: a second enqueue with the same key
      returns the first invocation's id with ``created=False``.
    * ``lease`` hands out invocations whose ``available_at`` has come, of the
      functions named in ``functions`` only, oldest enqueue first; never more
      running invocations of a function than its ``reserved_concurrency``
      (across every process sharing the store); in a lane only the oldest
      unfinished invocation, and only while no other of that lane is running.
      An invocation whose lease expired is leased again.
    * ``settle`` applies each :class:`Settlement` atomically (the state change,
      the attempt record, follow-on enqueues and the DLQ entry) if its lease is
      still held, and reports which ones were applied; a backend may lease the
      next invocation of a lane with the settlement that ends its predecessor,
      when asked (``Settlement.chain_lease_s``).
    """

    async def enqueue(self, batch: Sequence[NewInvocation]) -> list[Enqueued]:
        """Store ``batch`` in one transaction; answers in the order given."""
        ...

    async def lease(
        self,
        n: int,
        owner: str,
        functions: Mapping[str, FunctionLimits],
        now: datetime,
    ) -> list[Lease]:
        """Take up to ``n`` runnable invocations for ``owner``."""
        ...

    async def extend(self, expiries: Mapping[str, datetime]) -> set[str]:
        """Move held leases (by token) to new expiry times; answers those still held."""
        ...

    async def settle(
        self, settlements: Sequence[Settlement], now: datetime
    ) -> dict[str, Lease | None]:
        """Apply settlements; answers the lease tokens that were still held, each with the
        lease of its lane's next invocation when one was chained to it."""
        ...

    async def release(self, tokens: Sequence[str]) -> None:
        """Give leases back unrun (shutdown): pending again, the attempt not counted."""
        ...

    async def lane_depths(self, lanes: Sequence[str]) -> dict[str, int]:
        """Unfinished (pending or running) invocations in each of ``lanes``; cheap enough
        for a poller to ask every few hundred milliseconds."""
        ...

    async def running(self, function: str, now: datetime) -> int:
        """Invocations of ``function`` running now, leased by any process (what its
        reserved concurrency holds to); one cheap read, for each synchronous call."""
        ...

    async def wait(self, functions: Mapping[str, FunctionLimits], timeout_s: float) -> None:
        """Return when work may be available: an enqueue, a due retry, or ``timeout_s``."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
