"""Handlers used by the quickstart. Written for AWS Lambda; they run on Eventwire unchanged."""

from __future__ import annotations

import asyncio
from typing import Any


def hello(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Greets whoever the event names."""
    return {"message": f"hello, {event.get('name', 'world')}", "request_id": context.aws_request_id}


def flaky(event: dict[str, Any], context: Any) -> None:
    """Always fails: shows retries with backoff, then the dead-letter queue."""
    raise RuntimeError(f"flaky failed on request {context.aws_request_id}")


def record_failure(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An on-failure destination: receives Lambda's invocation record."""
    request = event["requestContext"]
    return {"failed": request["requestId"], "condition": request["condition"]}


async def noop(event: dict[str, Any], context: Any) -> None:
    """Does nothing, asynchronously: what the benchmarks run."""
    await asyncio.sleep(0)


async def slow(event: dict[str, Any], context: Any) -> None:
    """Takes 50 ms: a function that falls behind its producers (the memory benchmark)."""
    await asyncio.sleep(0.05)
