"""The embedded SQLite queue: ``BEGIN IMMEDIATE`` transactions, polling for other processes.

SQLite lets one writer in at a time, so a lease transaction (which reads,
then writes) is never interleaved with another. There is no notification
between processes: an idle dispatcher is woken at once by enqueues in its own
process and polls (``poll_interval_s``) for enqueues made by others, such as
``eventwire invoke`` from another shell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.models import FunctionLimits
from broker.queue.sql import Clock, SqlQueue, utcnow


class SqliteQueue(SqlQueue):
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Clock = utcnow,
        poll_interval_s: float = 0.05,
        account_concurrency: int | None = None,
        keep_succeeded_payloads: bool = True,
    ) -> None:
        super().__init__(
            engine,
            clock=clock,
            account_concurrency=account_concurrency,
            keep_succeeded_payloads=keep_succeeded_payloads,
        )
        self.poll_interval_s = poll_interval_s

    def _candidates(self, n: int, *, by_function: bool) -> Any:
        # SQLite keeps no statistics: from the function index it would walk a function's
        # whole history, so the scan stays on the partial index of unfinished invocations.
        return super()._candidates(n, by_function=False)

    async def wait(self, functions: Mapping[str, FunctionLimits], timeout_s: float) -> None:
        await super().wait(functions, min(timeout_s, self.poll_interval_s))
