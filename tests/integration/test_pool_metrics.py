"""What a process pool tells the metrics: its cold starts with their init durations, the
processes killed for timeout or memory or that exited by themselves, and how many are
idle, busy and starting; stopping processes counts as none of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from broker.models import FunctionError
from broker.observability.metrics import Metrics
from invokers.process import ProcessInvoker
from tests.integration.test_process_invoker import config, request
from tests.support.metrics import figure
from tests.support.waiting import eventually


@asynccontextmanager
async def observed(handler: str, **kw: Any) -> AsyncIterator[tuple[ProcessInvoker, Metrics]]:
    metrics = Metrics()
    invoker = ProcessInvoker("f", config(handler, **kw))
    invoker.observe(metrics)
    try:
        await invoker.start()
        yield invoker, metrics
    finally:
        await invoker.close()


def killed(metrics: Metrics, reason: str) -> float:
    return figure(metrics, "eventwire_workers_killed_total", function="f", reason=reason)


async def test_cold_starts_are_counted_with_their_init_duration() -> None:
    async with observed("tests.runtime_handlers.noop", warm=2, concurrency=3) as (inv, metrics):
        assert figure(metrics, "eventwire_cold_starts_total", function="f") == 2
        count = figure(metrics, "eventwire_init_duration_seconds_count", function="f")
        total = figure(metrics, "eventwire_init_duration_seconds_sum", function="f")
        assert count == 2 and 0 < total < 20
        metrics.set_pool("f", inv.pool_stats())
        idle = figure(metrics, "eventwire_pool_workers", function="f", state="idle")
        assert idle == 2
    # Closing the pool stops its processes: not a kill.
    assert all(killed(metrics, reason) == 0 for reason in ("timeout", "memory", "exit"))


async def test_a_process_killed_at_its_deadline_counts_as_a_timeout(tmp_path: Path) -> None:
    async with observed("tests.runtime_handlers.hang", timeout="1s") as (inv, metrics):
        task = asyncio.create_task(inv.invoke(request({"pids": str(tmp_path / "p")}, 1.0)))
        await eventually(lambda: inv.pool_stats().busy == 1, 5, "the invocation to run")
        metrics.set_pool("f", inv.pool_stats())
        assert figure(metrics, "eventwire_pool_workers", function="f", state="busy") == 1
        outcome = await task
        assert isinstance(outcome, FunctionError) and outcome.timed_out
        await eventually(lambda: killed(metrics, "timeout") == 1, 5, "the kill to be counted")
    assert (killed(metrics, "exit"), killed(metrics, "memory")) == (0, 0)


async def test_a_process_out_of_memory_counts_as_memory() -> None:
    async with observed("tests.runtime_handlers.allocate", memory="128MB") as (inv, metrics):
        outcome = await inv.invoke(request({"mb": 512}))
        assert isinstance(outcome, FunctionError)
        assert outcome.error_type == "Runtime.OutOfMemory", outcome
        await eventually(lambda: killed(metrics, "memory") == 1, 5, "the kill to be counted")
    assert (killed(metrics, "exit"), killed(metrics, "timeout")) == (0, 0)


async def test_a_process_that_exits_by_itself_counts_as_exit(tmp_path: Path) -> None:
    async with observed("tests.runtime_handlers.crash_once", warm=1) as (inv, metrics):
        crashed = await inv.invoke(request({"marker": str(tmp_path / "m")}))
        assert isinstance(crashed, FunctionError) and crashed.error_type == "Runtime.ExitError"
        await eventually(lambda: killed(metrics, "exit") == 1, 5, "the exit to be counted")
        # Its replacement's start is a cold start too.
        await eventually(
            lambda: figure(metrics, "eventwire_cold_starts_total", function="f") == 2,
            5,
            "the replacement's cold start",
        )
