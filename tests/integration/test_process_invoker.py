"""The process invoker's pool with real worker processes (the packaged Python bootstrap)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.config.models import FunctionConfig
from broker.functions.invoker import InvokeRequest, InvokerInitError
from broker.models import FunctionError, Success, SystemFault
from invokers.capture import LOG_LIMIT_BYTES
from invokers.process import ProcessInvoker
from tests.support.waiting import eventually


def config(handler: str, **kw: Any) -> FunctionConfig:
    return FunctionConfig.model_validate({"invoker": "process", "handler": handler, **kw})


def request(payload: Any = None, timeout_s: float = 3.0, request_id: str = "r-1") -> InvokeRequest:
    return InvokeRequest(
        request_id=request_id,
        invocation_id="i-1",
        function="f",
        function_arn="arn:aws:lambda:local:000000000000:function:f",
        payload=json.dumps(payload or {}).encode(),
        deadline=datetime.now(UTC) + timedelta(seconds=timeout_s),
        attempt=1,
    )


@asynccontextmanager
async def pool(handler: str, **kw: Any) -> AsyncIterator[ProcessInvoker]:
    invoker = ProcessInvoker("f", config(handler, **kw))
    try:
        await invoker.start()
        yield invoker
    finally:
        await invoker.close()


def pids(invoker: ProcessInvoker) -> set[int]:
    return {w.pid for w in invoker._workers if w.pid is not None}


def gone(pid_set: set[int]) -> Callable[[], bool]:
    return lambda: (
        not any(os.path.exists(f"/proc/{pid}/status") and _running(pid) for pid in pid_set)
    )


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_warm_processes_start_with_the_pool_and_serve_in_turn() -> None:
    async with pool("tests.runtime_handlers.echo", warm=2, concurrency=2) as invoker:
        stats = invoker.pool_stats()
        assert (stats.idle, stats.cold_starts) == (2, 2)
        assert stats.cold_start_p50_ms is not None and stats.cold_start_p50_ms > 0
        outcomes = await asyncio.gather(
            *(invoker.invoke(request({"n": n}, request_id=f"r-{n}")) for n in range(6))
        )
        assert all(isinstance(o, Success) for o in outcomes)
        answered = [json.loads(o.payload) for o in outcomes if isinstance(o, Success)]
        assert [a["event"]["n"] for a in answered] == list(range(6))
        assert len({a["pid"] for a in answered}) == 2  # never more than `concurrency`
        assert invoker.pool_stats().cold_starts == 2  # the warm ones served everything


async def test_processes_start_on_demand_and_idle_ones_stop() -> None:
    async with pool(
        "tests.runtime_handlers.echo", warm=0, concurrency=2, idle_timeout="200ms"
    ) as invoker:
        assert invoker.pool_stats().idle == 0
        outcome = await invoker.invoke(request())
        assert isinstance(outcome, Success)
        assert invoker.pool_stats().cold_starts == 1
        started = pids(invoker)
        await eventually(lambda: not invoker._workers, 5, "the idle process to be stopped")
        await eventually(gone(started), 5, "the idle process to exit")


async def test_an_init_failure_is_reported_with_the_runtime_message() -> None:
    with pytest.raises(InvokerInitError) as caught:
        async with pool("tests.no_such_module.handler", warm=1):
            pass
    assert str(caught.value) == (
        "Runtime.ImportModuleError: Unable to import module 'tests.no_such_module': "
        "No module named 'tests.no_such_module'"
    )
    invoker = ProcessInvoker("f", config("tests.no_such_module.handler"))
    await invoker.start()
    try:
        outcome = await invoker.invoke(request())
        assert isinstance(outcome, FunctionError)
        assert outcome.error_type == "Runtime.ImportModuleError"
    finally:
        await invoker.close()


async def test_a_command_that_cannot_run_is_an_error_not_a_hang() -> None:
    cfg = FunctionConfig.model_validate({"invoker": "process", "command": ["/nonexistent/boot"]})
    invoker = ProcessInvoker("f", cfg)
    await invoker.start()
    try:
        outcome = await invoker.invoke(request())
        assert isinstance(outcome, FunctionError)
        assert outcome.error_type == "Runtime.InvalidEntrypoint"
        assert "/nonexistent/boot" in outcome.message
    finally:
        await invoker.close()


async def test_function_errors_carry_type_trace_and_output() -> None:
    async with pool("tests.runtime_handlers.fail") as invoker:
        outcome = await invoker.invoke(request({"x": 1}))
    assert isinstance(outcome, FunctionError)
    assert (outcome.error_type, outcome.message) == ("ValueError", "bad event {'x': 1}")
    assert any("raise ValueError" in frame for frame in outcome.trace)
    assert outcome.log == "about to fail"


async def test_output_past_the_cap_is_cut_and_counted() -> None:
    async with pool("tests.runtime_handlers.chatty") as invoker:
        outcome = await invoker.invoke(request({"lines": 2000}))
    assert isinstance(outcome, Success)
    assert outcome.log.startswith("line 0 ")
    assert len(outcome.log.encode()) < LOG_LIMIT_BYTES + 100
    assert outcome.log.endswith("more bytes]")


async def test_waiting_past_the_deadline_for_a_busy_pool_is_a_system_fault(tmp_path: Any) -> None:
    async with pool("tests.runtime_handlers.hang", concurrency=1, timeout="1s") as invoker:
        first = asyncio.create_task(invoker.invoke(request({"pids": str(tmp_path / "p")}, 1.0)))
        await eventually(lambda: invoker.pool_stats().busy == 1, 5, "the first to run")
        second = await invoker.invoke(request({"pids": str(tmp_path / "q")}, 0.2, "r-2"))
        assert isinstance(second, SystemFault) and second.error_type == "Runtime.Unavailable"
        timed_out = await first
        assert isinstance(timed_out, FunctionError) and timed_out.timed_out
        assert timed_out.log == "hanging"


async def test_close_stops_every_process() -> None:
    invoker = ProcessInvoker("f", config("tests.runtime_handlers.noop", warm=2, concurrency=2))
    await invoker.start()
    started = pids(invoker)
    assert len(started) == 2
    await invoker.close()
    await eventually(gone(started), 5, "the processes to exit")
    outcome = await invoker.invoke(request())
    assert isinstance(outcome, SystemFault) and outcome.error_type == "Invoker.Closed"


async def test_waiting_for_a_free_process_does_not_eat_the_timeout() -> None:
    async with pool("tests.runtime_handlers.nap", concurrency=1, warm=1, timeout="1s") as invoker:
        first, second = await asyncio.gather(
            invoker.invoke(request({"s": 0.6}, 1.0, "r-1")),
            invoker.invoke(request({"s": 0.6}, 1.0, "r-2")),
        )
    assert isinstance(first, Success) and isinstance(second, Success), (first, second)
    assert json.loads(second.payload) > 900  # the whole second, though it waited 0.6 s


async def test_a_crashed_warm_process_is_replaced(tmp_path: Any) -> None:
    async with pool("tests.runtime_handlers.crash_once", warm=1, concurrency=1) as invoker:
        crashed = await invoker.invoke(request({"marker": str(tmp_path / "m")}))
        assert isinstance(crashed, FunctionError) and crashed.error_type == "Runtime.ExitError"
        await eventually(lambda: invoker.pool_stats().idle == 1, 5, "a replacement to be warm")
        assert invoker.pool_stats().cold_starts == 2
        again = await invoker.invoke(request({"marker": str(tmp_path / "m")}))
        assert isinstance(again, Success)
