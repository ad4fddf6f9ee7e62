"""Handlers for the mapping tests: they record every event they get, per function.

A test gives its function a unique name and, in :data:`RULES`, what the
function answers (or raises) for an event; :data:`GATES` hold a function
until the test opens its gate.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from invokers.context import LambdaContext

CALLS: defaultdict[str, list[Any]] = defaultdict(list)
"""Every event each function received, in the order it ran."""
RESULTS: defaultdict[str, list[tuple[Any, Any]]] = defaultdict(list)
"""Each event with what the function answered (``"raised"`` when it raised)."""
RULES: dict[str, Callable[[Any], Any]] = {}
GATES: dict[str, asyncio.Event] = {}
SINK_DELAY_S = 0.05


async def record(event: Any, context: LambdaContext) -> Any:
    name = context.function_name
    CALLS[name].append(event)
    gate = GATES.get(name)
    if gate is not None:
        await gate.wait()
    rule = RULES.get(name)
    try:
        result = rule(event) if rule else None
        if inspect.isawaitable(result):
            result = await result
    except Exception:
        RESULTS[name].append((event, "raised"))
        raise
    RESULTS[name].append((event, result))
    return result


async def noop(event: Any, context: LambdaContext) -> None:
    await asyncio.sleep(0)


def sink(event: Any, context: LambdaContext) -> None:
    """Append the batch's records and the request id to the file named by
    ``MAPPING_TEST_SINK``: what a run under SIGKILL leaves behind to be checked.

    A record is ``[topic-partition, offset]`` (Kafka), ``[queue, message id]``
    (RabbitMQ), ``[stream, entry id]`` (Redis Streams) or ``[message id, body]`` (SQS,
    with ``receives``: each one's ``ApproximateReceiveCount``); RabbitMQ messages
    delivered again after a consumer died are listed under ``redelivered`` too.
    """
    records, redelivered = _positions(event)
    time.sleep(SINK_DELAY_S)  # slow enough that a kill lands while records remain
    entry: dict[str, Any] = {
        "request": context.aws_request_id,
        "pid": os.getpid(),
        "records": records,
    }
    if _is_sqs(event):
        entry["receives"] = [r["attributes"]["ApproximateReceiveCount"] for r in event["Records"]]
    if redelivered:
        entry["redelivered"] = redelivered
    fd = os.open(os.environ["MAPPING_TEST_SINK"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def _is_sqs(event: dict[str, Any]) -> bool:
    records = event.get("Records") or [{}]
    return bool(records[0].get("eventSource") == "aws:sqs")


def _positions(event: dict[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    if _is_sqs(event):
        return [[record["messageId"], record["body"]] for record in event["Records"]], []
    if "records" in event:
        return [
            [group, record["offset"]]
            for group, items in event["records"].items()
            for record in items
        ], []
    if "rmqMessagesByQueue" in event:
        records, redelivered = [], []
        for group, items in event["rmqMessagesByQueue"].items():
            for message in items:
                position = [group, message["basicProperties"]["messageId"]]
                records.append(position)
                if message["redelivered"]:
                    redelivered.append(position)
        return records, redelivered
    return [
        [record["kinesis"]["partitionKey"], record["kinesis"]["sequenceNumber"]]
        for record in event["Records"]
    ], []
