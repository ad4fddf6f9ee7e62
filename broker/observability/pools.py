"""Live pool figures (warm, busy, starting processes; cold starts) that ``functions ls`` shows.

An invoker that runs a pool of processes offers :meth:`PoolReporter.pool_stats`;
each ``eventwire serve`` writes its figures to the ``function_pools`` table
every few seconds (:mod:`broker.store.pools`), and ``functions ls`` adds up
those of the processes that wrote recently.
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


@runtime_checkable
class PoolReporter(Protocol):
    """An invoker with a pool of processes to report on."""

    def pool_stats(self) -> PoolStats: ...
