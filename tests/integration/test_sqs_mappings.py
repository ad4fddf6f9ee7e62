"""SQS mappings against a real SQS HTTP API (moto's server), run by a whole service.

Each test makes its own queues (short visibility timeouts, so that what a failure
leaves comes back within a second or two) and its own function, whose handler
(``tests.mapping_handlers:record``) records every event it gets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.store.engine import create_engine
from broker.store.schema import invocations
from pollers.mapping_run import MAX_PENDING_BATCHES
from tests import mapping_handlers as handlers
from tests.support.mappings import mapping_service
from tests.support.moto import (  # noqa: F401
    ACCOUNT,
    REGION,
    MotoServer,
    SqsQueue,
    counts,
    is_empty,
    make_queue,
    moto_server,
    redrive_policy,
    send,
)
from tests.support.stores import QUEUES, Store, store_for
from tests.support.waiting import eventually

FAST = {"VisibilityTimeout": "1"}


@pytest.fixture
def server(moto_server: MotoServer) -> MotoServer:  # noqa: F811
    return moto_server


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}")


def fn() -> str:
    return f"f{uuid.uuid4().hex[:10]}"


def config(queue: SqsQueue, function: str, **mapping: Any) -> dict[str, Any]:
    return {
        "functions": {function: {"handler": "tests.mapping_handlers:record", "timeout": "10s"}},
        "mappings": [
            {"name": function, "source": queue.source_uri, "function": function, **mapping}
        ],
    }


def bodies(function: str) -> list[dict[str, Any]]:
    """The bodies (decoded) of every record ``function`` received, in the order it ran."""
    return [json.loads(r["body"]) for event in handlers.CALLS[function] for r in event["Records"]]


def ns(function: str) -> list[int]:
    return [body["n"] for body in bodies(function)]


def numbered(numbers: range | list[int], **extra: Any) -> list[str]:
    return [json.dumps({"n": n, **extra}) for n in numbers]


async def test_the_event_is_lambdas_sqs_event_field_for_field(
    server: MotoServer, store: Store
) -> None:
    queue = await make_queue(server)
    f = fn()
    attributes = {
        "kind": {"DataType": "String", "StringValue": "order"},
        "count": {"DataType": "Number", "StringValue": "3"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01hi"},
    }
    before_ms = int(time.time() * 1000) - 1000
    async with mapping_service(store, config(queue, f, batch_size=1)):
        [message_id] = await send(server, queue, ['{"hello": "world"}'], attributes=attributes)
        await eventually(lambda: handlers.CALLS[f], 20, "the event")
    [event] = handlers.CALLS[f]
    [record] = event["Records"]
    assert list(event) == ["Records"]
    assert record["messageId"] == message_id
    assert record["receiptHandle"]
    assert record["body"] == '{"hello": "world"}'
    assert record["md5OfBody"] == hashlib.md5(b'{"hello": "world"}').hexdigest()
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue.name}"
    assert record["awsRegion"] == REGION
    attrs = record["attributes"]
    assert attrs["ApproximateReceiveCount"] == "1"
    assert int(attrs["SentTimestamp"]) >= before_ms
    assert int(attrs["ApproximateFirstReceiveTimestamp"]) >= int(attrs["SentTimestamp"])
    assert attrs["SenderId"]
    assert not {"MessageGroupId", "MessageDeduplicationId", "SequenceNumber"} & set(attrs)
    assert record["messageAttributes"] == {
        "kind": {
            "stringValue": "order",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "count": {
            "stringValue": "3",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        },
        "blob": {
            "binaryValue": "AAFoaQ==",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }


async def test_a_batch_that_succeeds_is_deleted(server: MotoServer, store: Store) -> None:
    queue = await make_queue(server, attributes=FAST)
    f = fn()
    async with mapping_service(store, config(queue, f, batch_size=30, batch_window="300ms")):
        await send(server, queue, numbered(range(45)))
        await eventually(lambda: sorted(ns(f)) == list(range(45)), 20, "every message")
        await eventually(lambda: is_empty(server, queue), 10, "the queue emptied")
    # Deleted, not merely invisible: past the visibility timeout nothing comes back.
    assert max(len(e["Records"]) for e in handlers.CALLS[f]) > 10  # several receives a batch
    assert sorted(ns(f)) == list(range(45))


async def test_a_failed_batch_comes_back_and_reaches_the_queues_dead_letter_queue(
    server: MotoServer, store: Store
) -> None:
    dead = await make_queue(server)
    queue = await make_queue(server, attributes={**FAST, **redrive_policy(dead, 2)})
    f = fn()

    def fail(event: Any) -> None:
        raise RuntimeError("always")

    handlers.RULES[f] = fail
    async with mapping_service(store, config(queue, f, batch_size=5, batch_window="200ms")):
        await send(server, queue, numbered(range(3)))
        await eventually(lambda: _holds(server, dead, 3), 30, "the queue's DLQ")
        # Each receive ran once (Lambda does not retry an SQS batch itself): two receives.
        receive_counts = sorted(
            int(r["attributes"]["ApproximateReceiveCount"])
            for e in handlers.CALLS[f]
            for r in e["Records"]
        )
        assert receive_counts == [1, 1, 1, 2, 2, 2]
        assert await is_empty(server, queue)


@pytest.mark.parametrize("backend", QUEUES)
async def test_partial_batch_responses_keep_only_the_listed_messages(
    server: MotoServer, backend: str, tmp_path: Path
) -> None:
    queue = await make_queue(server, attributes=FAST)
    f = fn()

    def two_fails_once(event: Any) -> dict[str, Any]:
        failures = [
            {"itemIdentifier": r["messageId"]}
            for r in event["Records"]
            if json.loads(r["body"])["n"] == 2 and r["attributes"]["ApproximateReceiveCount"] == "1"
        ]
        return {"batchItemFailures": failures}

    handlers.RULES[f] = two_fails_once
    mapping = {
        "batch_size": 5,
        "batch_window": "500ms",
        "function_response_types": ["ReportBatchItemFailures"],
    }
    async with (
        store_for(backend, tmp_path) as store,
        mapping_service(store, config(queue, f, **mapping)),
    ):
        await send(server, queue, numbered(range(5)))
        await eventually(lambda: ns(f).count(2) == 2, 20, "message 2 again")
        await eventually(lambda: is_empty(server, queue), 10, "the queue emptied")
    assert sorted(ns(f)) == [0, 1, 2, 2, 3, 4]
    again = [r for e in handlers.CALLS[f] for r in e["Records"] if json.loads(r["body"])["n"] == 2]
    assert [r["attributes"]["ApproximateReceiveCount"] for r in again] == ["1", "2"]


async def test_a_slow_handlers_messages_stay_invisible_past_the_timeout(
    server: MotoServer, store: Store
) -> None:
    queue = await make_queue(server, attributes=FAST)
    f = fn()
    finished = asyncio.Event()

    async def slow(event: Any) -> None:
        await asyncio.sleep(3.5)  # the handler's own work: thrice the visibility timeout
        finished.set()

    handlers.RULES[f] = slow
    async with mapping_service(store, config(queue, f, batch_size=1)):
        await send(server, queue, numbered([7]))
        await eventually(lambda: handlers.CALLS[f], 20, "the slow invocation")
        await asyncio.wait_for(finished.wait(), 10)
        await eventually(lambda: is_empty(server, queue), 10, "the message deleted")
    assert ns(f) == [7]  # once: the heartbeat kept it from coming back meanwhile


async def test_fifo_groups_run_in_order_and_a_failure_blocks_only_its_group(
    server: MotoServer, store: Store
) -> None:
    queue = await make_queue(server, fifo=True, attributes=FAST)
    f = fn()
    order: list[tuple[str, int, str]] = []

    def fail_a2_once(event: Any) -> None:
        for record in event["Records"]:
            body = json.loads(record["body"])
            count = record["attributes"]["ApproximateReceiveCount"]
            order.append((body["g"], body["n"], count))
        if any(
            json.loads(r["body"]) == {"g": "a", "n": 2}
            and r["attributes"]["ApproximateReceiveCount"] == "1"
            for r in event["Records"]
        ):
            raise RuntimeError("a2 fails the first time")

    handlers.RULES[f] = fail_a2_once
    async with mapping_service(store, config(queue, f, batch_size=1, max_concurrency=4)):
        await send(server, queue, [json.dumps({"g": "a", "n": n}) for n in (1, 2, 3)], group="a")
        await send(server, queue, [json.dumps({"g": "b", "n": n}) for n in (1, 2, 3)], group="b")
        await eventually(lambda: len(order) == 7, 30, "every message, a2 twice")
        await eventually(lambda: is_empty(server, queue), 10, "the queue emptied")
    a = [(n, count) for g, n, count in order if g == "a"]
    b = [(n, count) for g, n, count in order if g == "b"]
    assert [n for n, _ in a] == [1, 2, 2, 3]  # a3 waited for a2 to come back
    assert a[1][1] == "1" and a[2][1] == "2"
    assert [n for n, _ in b] == [1, 2, 3]
    # b went on while a2 waited out its visibility timeout.
    assert order.index(("b", 3, "1")) < order.index(("a", 2, "2"))
    [record] = handlers.CALLS[f][0]["Records"]
    assert record["attributes"]["MessageGroupId"] in ("a", "b")
    assert record["attributes"]["MessageDeduplicationId"]
    assert record["attributes"]["SequenceNumber"]


async def test_filters_match_the_body_and_attributes_and_delete_the_rest(
    server: MotoServer, store: Store
) -> None:
    queue = await make_queue(server, attributes=FAST)
    f = fn()
    filters = [
        {"body": {"type": ["even"]}},
        {"messageAttributes": {"keep": {"stringValue": ["yes"]}}},
    ]
    keep = {"keep": {"DataType": "String", "StringValue": "yes"}}
    async with mapping_service(store, config(queue, f, batch_size=10, filters=filters)):
        await send(
            server,
            queue,
            [json.dumps({"n": n, "type": "even" if n % 2 == 0 else "odd"}) for n in range(10)],
        )
        await send(server, queue, numbered([11], type="odd"), attributes=keep)
        await send(server, queue, ["not json"])
        await eventually(lambda: sorted(ns(f)) == [0, 2, 4, 6, 8, 11], 20, "the matching ones")
        # What no filter matched is deleted, not left to come back.
        await eventually(lambda: is_empty(server, queue), 10, "the queue emptied")
    assert sorted(ns(f)) == [0, 2, 4, 6, 8, 11]


async def test_max_concurrency_bounds_the_batches_running_and_receiving_stops_when_backed_up(
    server: MotoServer, store: Store
) -> None:
    queue = await make_queue(server, attributes={"VisibilityTimeout": "5"})
    f = fn()
    gate = handlers.GATES[f] = asyncio.Event()
    lanes = 2
    total = lanes * MAX_PENDING_BATCHES + 100
    engine = create_engine(store.database_url)

    async def enqueued() -> int:
        async with engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(invocations)) or 0)

    try:
        async with mapping_service(store, config(queue, f, batch_size=1, max_concurrency=lanes)):
            await send(server, queue, numbered(range(total)))
            await eventually(lambda: len(handlers.CALLS[f]) == lanes, 20, "a batch per lane")
            limit = lanes * (MAX_PENDING_BATCHES + 1)
            await eventually(lambda: _at_least(enqueued, lanes * MAX_PENDING_BATCHES), 20)
            # Stays there: the pollers received what the lanes had room for, no more,
            # and the rest waits in the queue (visible).
            for _ in range(10):
                assert await enqueued() <= limit
                assert len(handlers.CALLS[f]) == lanes  # max_concurrency: two at once
                await asyncio.sleep(0.1)
            # Held: what the lanes took, up to READ_AHEAD_BATCHES batches' worth or two
            # receives waiting to be batched (20), and a receive per poller beyond that.
            visible, _ = await counts(server, queue)
            assert visible >= total - limit - 20 - 10 * lanes
            gate.set()
            await eventually(lambda: sorted(ns(f)) == list(range(total)), 60, "every message")
            await eventually(lambda: is_empty(server, queue), 10, "the queue emptied")
    finally:
        gate.set()
        await engine.dispose()


async def _holds(server: MotoServer, queue: SqsQueue, visible: int) -> bool:
    return await counts(server, queue) == (visible, 0)


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def test_a_queue_that_does_not_exist_makes_the_mapping_failing(
    server: MotoServer, store: Store
) -> None:
    from broker.store.mappings import FAILING, list_mappings

    missing = SqsQueue(f"{server.endpoint}/{ACCOUNT}/nowhere", "nowhere", "")
    f = fn()
    engine = create_engine(store.database_url)

    async def failing() -> str | None:
        [row] = await list_mappings(engine)
        return row.status_reason if row.status == FAILING else None

    try:
        async with mapping_service(store, config(missing, f)):
            reason = await eventually(failing, 20, "the mapping failing")
    finally:
        await engine.dispose()
    assert "does not exist" in reason and "nowhere" in reason


async def test_a_fifo_partial_response_keeps_the_rest_of_the_failed_group(
    server: MotoServer, store: Store
) -> None:
    queue = await make_queue(server, fifo=True, attributes=FAST)
    f = fn()

    def a2_fails_once(event: Any) -> dict[str, Any]:
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]}
                for r in event["Records"]
                if json.loads(r["body"]) == {"g": "a", "n": 2}
                and r["attributes"]["ApproximateReceiveCount"] == "1"
            ]
        }

    handlers.RULES[f] = a2_fails_once
    mapping = {"batch_size": 10, "batch_window": "500ms", "report_batch_item_failures": True}
    async with mapping_service(store, config(queue, f, **mapping)):
        await send(server, queue, [json.dumps({"g": "a", "n": n}) for n in (1, 2, 3)], group="a")
        await send(server, queue, [json.dumps({"g": "b", "n": n}) for n in (1, 2)], group="b")
        await eventually(lambda: len(bodies(f)) == 7, 30, "a2 and a3 again")
        await eventually(lambda: is_empty(server, queue), 10, "the queue emptied")
    runs = [(b["g"], b["n"]) for b in bodies(f)]
    first, again = runs[:5], runs[5:]
    assert sorted(first) == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)]
    # a3 was not reported, but it follows a2 in its group: it came back with it, in order.
    assert again == [("a", 2), ("a", 3)]
