"""Handlers written the way Lambda functions are, for the invoker tests.

Each takes ``(event, context)``. The slow ones outlast any timeout the tests
set; :data:`RELEASE` lets a test's teardown end a blocked sync handler so no
thread outlives the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from decimal import Decimal
from typing import Any

from invokers.context import LambdaContext

SLOW_S = 5.0
"""How long the slow handlers take: far past the timeouts the tests use."""

RELEASE = threading.Event()
"""Set to make :func:`slow_sync` return at once instead of after :data:`SLOW_S`."""

STARTED: list[str] = []
"""Request ids of slow handler calls that have begun, in order."""


def echo(event: Any, context: LambdaContext) -> Any:
    return event


async def aecho(event: Any, context: LambdaContext) -> Any:
    await asyncio.sleep(0)
    return event


def describe(event: Any, context: LambdaContext) -> str:
    """The event as Python sees it (``repr``), to compare decodings exactly."""
    return repr(event)


def depth(event: Any, context: LambdaContext) -> int:
    """How deeply the event's arrays nest (``[[]]`` is 2), counted without recursion."""
    levels = 0
    while isinstance(event, list):
        levels += 1
        event = event[0] if event else None
    return levels


def noop(event: Any, context: LambdaContext) -> None:
    return None


def boom(event: Any, context: LambdaContext) -> Any:
    raise ValueError("boom")


def says(event: Any, context: LambdaContext) -> str:
    """Prints ``event["word"]`` (for log capture) and answers it."""
    print("said", event["word"])
    return str(event["word"])


async def aboom(event: Any, context: LambdaContext) -> Any:
    await asyncio.sleep(0)
    raise ValueError("boom")


def exits(event: Any, context: LambdaContext) -> Any:
    sys.exit(3)


GATE = threading.Event()
"""Held shut, :func:`gated` runs until a test opens it."""


async def gated(event: Any, context: LambdaContext) -> str:
    """Runs until :data:`GATE` opens (at most :data:`SLOW_S`), holding its concurrency."""
    STARTED.append(context.aws_request_id)
    for _ in range(int(SLOW_S / 0.01)):
        if GATE.is_set():
            break
        await asyncio.sleep(0.01)
    return "through"


def slow_sync(event: Any, context: LambdaContext) -> str:
    """Blocks its thread like ``time.sleep(SLOW_S)``, unless a test sets :data:`RELEASE`."""
    STARTED.append(context.aws_request_id)
    RELEASE.wait(SLOW_S)
    return "finished"


async def slow_async(event: Any, context: LambdaContext) -> str:
    STARTED.append(context.aws_request_id)
    await asyncio.sleep(SLOW_S)
    return "finished"


async def stubborn(event: Any, context: LambdaContext) -> str:
    """Swallows the cancellation a timeout delivers and returns anyway."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(SLOW_S)
    return "finished anyway"


def unserializable(event: Any, context: LambdaContext) -> Any:
    return {"value": object()}


def decimals(event: Any, context: LambdaContext) -> Any:
    return {"count": Decimal("3"), "price": Decimal("1.5")}


async def _echo_later(event: Any) -> Any:
    await asyncio.sleep(0)
    return event


def deferred(event: Any, context: LambdaContext) -> Any:
    """A sync function that returns an awaitable."""
    return _echo_later(event)


def thread_name(event: Any, context: LambdaContext) -> str:
    return threading.current_thread().name


async def athread_name(event: Any, context: LambdaContext) -> str:
    return threading.current_thread().name


def context_fields(event: Any, context: LambdaContext) -> dict[str, Any]:
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


def current_trace(event: Any, context: LambdaContext) -> dict[str, str]:
    """The trace and span the handler runs in, as OpenTelemetry's API sees them."""
    from opentelemetry import trace

    span = trace.get_current_span().get_span_context()
    return {"trace_id": f"{span.trace_id:032x}", "span_id": f"{span.span_id:016x}"}
