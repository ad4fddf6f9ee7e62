"""Live pool figures (warm, busy, starting processes; cold starts) that ``functions ls`` shows.

An invoker that runs a pool of processes offers :meth:`PoolReporter.pool_stats`;
each ``eventwire serve`` writes its figures to the ``function_pools`` table
every few seconds (:mod:`broker.store.pools`), and ``functions ls`` adds up
those of the processes that wrote recently. What happens to its processes (a cold start
and how long its init took, a process killed) it tells a :class:`PoolObserver` as it
happens: the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class PoolStats:
    idle: int = 0
    busy: int = 0
    starting: int = 0
    cold_starts: int = 0
    cold_start_p50_ms: float | None = None


KILL_REASONS = ("timeout", "memory", "exit")
"""Why a process of a pool ended while it was wanted: killed at its invocation's deadline,
out of memory, or it exited by itself. Stopping idle or at shutdown is none of them."""


class PoolObserver(Protocol):
    """Told, on the event loop, what happens to the processes of a pool."""

    def cold_start(self, function: str, init_s: float) -> None:
        """A process of ``function`` is ready: it took ``init_s`` from spawn to first ask."""
        ...

    def worker_killed(self, function: str, reason: str) -> None:
        """A process of ``function`` ended for ``reason`` (one of :data:`KILL_REASONS`)."""
        ...


@runtime_checkable
class PoolReporter(Protocol):
    """An invoker with a pool of processes to report on."""

    def pool_stats(self) -> PoolStats: ...

    def observe(self, observer: PoolObserver) -> None:
        """Tell ``observer`` what happens to the pool's processes from now on."""
        ...
