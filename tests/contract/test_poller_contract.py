"""The contract every mapping poller passes: Kafka, RabbitMQ and Redis Streams alike.

Each scenario runs a whole service (SQLite store, in-process handlers from
``tests.mapping_handlers``) against the real source, bound through a small
:class:`Side` per transport that publishes records and names the source.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from broker.store.engine import create_engine
from broker.store.schema import dead_letters
from tests import mapping_handlers as handlers
from tests.support.kafka import create_topic, kafka_bootstrap, unique_topic  # noqa: F401
from tests.support.mappings import mapping_service, numbers
from tests.support.rabbitmq import RabbitQueue, rabbitmq_queue  # noqa: F401
from tests.support.redis_streams import RedisStream, redis_stream  # noqa: F401
from tests.support.stores import Store
from tests.support.waiting import eventually

KINDS = ["kafka", "redis", "rabbitmq"]


@dataclass
class Side:
    kind: str
    uri: str
    options: dict[str, Any] = field(default_factory=dict)
    target: Any = None

    @property
    def ordered(self) -> bool:
        return self.kind != "rabbitmq"

    async def publish(self, numbers: list[int], extra: dict[str, Any] | None = None) -> None:
        bodies = [
            json.dumps({"n": n, **(extra or {}), "type": "even" if n % 2 == 0 else "odd"})
            for n in numbers
        ]
        await publish(self, [b.encode() for b in bodies])


async def publish(side: Side, bodies: list[bytes]) -> None:
    if side.kind == "kafka":
        from aiokafka import AIOKafkaProducer

        bootstrap, topic = side.target
        if not side.options.get("created"):
            await create_topic(bootstrap, topic)
            side.options["created"] = True
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            for body in bodies:
                await producer.send(topic, body, partition=0)
            await producer.flush()
        finally:
            await producer.stop()
    elif side.kind == "redis":
        from redis.asyncio import Redis

        stream: RedisStream = side.target
        client = Redis.from_url(stream.url)
        try:
            async with client.pipeline(transaction=False) as pipe:
                for body in bodies:
                    # A stream entry's fields are the record's data (filters see them).
                    fields = {k: str(v) for k, v in json.loads(body).items()}
                    pipe.xadd(stream.key, fields)  # type: ignore[arg-type]
                await pipe.execute()
        finally:
            await client.aclose()
    else:
        import aio_pika

        queue: RabbitQueue = side.target
        connection = await aio_pika.connect(queue.url)
        try:
            channel = await connection.channel()
            for body in bodies:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, message_id=uuid.uuid4().hex), routing_key=queue.name
                )
        finally:
            await connection.close()


@pytest.fixture(params=KINDS)
def side(request: pytest.FixtureRequest) -> Side:
    """The source under test (a Kafka topic is created by the first publish)."""
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        topic = unique_topic()
        return Side(
            "kafka",
            f"kafka://{bootstrap}/{topic}",
            {"starting_position": "trim_horizon", "batch_window": "50ms"},
            (bootstrap, topic),
        )
    if request.param == "redis":
        stream = request.getfixturevalue("redis_stream")
        return Side("redis", stream.source_uri(), {"starting_position": "trim_horizon"}, stream)
    queue = request.getfixturevalue("rabbitmq_queue")
    return Side("rabbitmq", queue.source_uri, {"batch_window": "50ms"}, queue)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}")


def fn() -> str:
    return f"f{uuid.uuid4().hex[:10]}"


def config(side: Side, function: str, **mapping: Any) -> dict[str, Any]:
    return {
        "functions": {
            function: {"handler": "tests.mapping_handlers:record", "timeout": "5s"},
            "sink": {"handler": "tests.mapping_handlers:record"},
        },
        "mappings": [
            {
                "name": function,
                "source": side.uri,
                "function": function,
                **{k: v for k, v in side.options.items() if k != "created"},
                **mapping,
            }
        ],
    }


def delivered(function: str) -> list[int]:
    return [n for event in handlers.CALLS[function] for n in numbers(event)]


def succeeded(function: str, side: Side) -> list[int]:
    """Numbers of the records each call got done: all of a batch that succeeded, minus those
    reported as failed (for ordered sources, minus everything from the lowest failed one)."""
    out = []
    for event, result in handlers.RESULTS[function]:
        if result == "raised":
            continue
        reported = {str(f["itemIdentifier"]) for f in (result or {}).get("batchItemFailures", [])}
        failed = [n for n in numbers(event) if str(identifier(side, event, n)) in reported]
        if side.ordered and failed:
            out += [n for n in numbers(event) if n < min(failed)]
        else:
            out += [n for n in numbers(event) if n not in failed]
    return out


async def test_records_arrive_filtered_batched_and_in_order(side: Side, store: Store) -> None:
    f = fn()
    cfg = (
        config(
            side, f, batch_size=7, filters=[{side_key(side): {"type": ["even"]}}], max_concurrency=1
        )
        if side.kind == "rabbitmq"
        else config(side, f, batch_size=7, filters=[{side_key(side): {"type": ["even"]}}])
    )
    await side.publish(list(range(40)))
    async with mapping_service(store, cfg):
        await eventually(lambda: len(delivered(f)) >= 20, 30, "the even records")
    assert delivered(f) == list(range(0, 40, 2))
    assert all(len(numbers(e)) <= 7 for e in handlers.CALLS[f])


def side_key(side: Side) -> str:
    return {"kafka": "value", "redis": "data", "rabbitmq": "data"}[side.kind]


def identifier(side: Side, event: dict[str, Any], n: int) -> Any:
    from broker.events.batches import event_items

    for (group, record), number in zip(event_items(event), numbers(event), strict=True):
        if number != n:
            continue
        if side.kind == "kafka":
            return f"{group}-{record['offset']}"
        if side.kind == "redis":
            return record["kinesis"]["sequenceNumber"]
        return record["basicProperties"]["messageId"]
    return None


async def test_partial_batch_failure_retries_only_what_failed(side: Side, store: Store) -> None:
    f = fn()
    failed_once: set[int] = set()

    def answer(event: dict[str, Any]) -> dict[str, Any]:
        fresh = [n for n in numbers(event) if n % 5 == 3 and n not in failed_once]
        failed_once.update(fresh)
        return {
            "batchItemFailures": [{"itemIdentifier": identifier(side, event, n)} for n in fresh]
        }

    handlers.RULES[f] = answer
    await side.publish(list(range(20)))
    async with mapping_service(
        store, config(side, f, batch_size=10, report_batch_item_failures=True)
    ):
        await eventually(lambda: sorted(succeeded(f, side)) == list(range(20)), 30, "every record")
    calls = [numbers(e) for e in handlers.CALLS[f]]
    retries = [call for call in calls if call and call[0] in failed_once]
    assert retries, "the failed records were invoked again"
    if side.ordered:
        # A retry holds the lowest failed record of the batch and everything after it.
        for retry in retries:
            assert retry == sorted(retry) and retry[-1] - retry[0] == len(retry) - 1
    else:
        # A queue's retry holds exactly the failed messages.
        assert all(set(retry) <= failed_once for retry in retries)


async def test_poison_record_goes_to_on_failure_and_the_rest_continue_in_order(
    side: Side, store: Store
) -> None:
    f = fn()

    def answer(event: dict[str, Any]) -> None:
        if 7 in numbers(event):
            raise ValueError("poison")

    handlers.RULES[f] = answer
    await side.publish(list(range(16)))
    cfg = config(
        side,
        f,
        batch_size=8,
        bisect_on_error=True,
        max_retry_attempts=1,
        on_failure="function:sink",
    )
    if side.kind == "rabbitmq":
        cfg["mappings"][0]["max_concurrency"] = 1
    handlers.CALLS.pop("sink", None)
    async with mapping_service(store, cfg):
        await eventually(lambda: len(handlers.CALLS["sink"]) >= 1, 30, "the failure record")
        await eventually(lambda: sorted(succeeded(f, side)) == [n for n in range(16) if n != 7], 30)
        engine = create_engine(store.database_url)
        try:

            async def letters() -> list[Any]:
                async with engine.connect() as conn:
                    return list((await conn.execute(select(dead_letters))).all())

            [letter] = await eventually(letters, 10, "the dead letter")
        finally:
            await engine.dispose()
    assert numbers(json.loads(letter.payload)) == [7]
    [record] = handlers.CALLS["sink"]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    if side.ordered:
        assert succeeded(f, side) == [n for n in range(16) if n != 7]


async def test_a_record_over_the_payload_limit_goes_to_on_failure_and_the_source_moves_on(
    side: Side, store: Store
) -> None:
    from broker.store.mappings import list_mappings

    f = fn()
    await side.publish([0, 1, 2, 3])
    await side.publish([4], {"pad": "x" * 10_000})
    await side.publish([5, 6, 7, 8, 9])
    cfg = config(side, f, batch_size=10, on_failure="function:sink")
    cfg["limits"] = {"async_payload": 8192}
    handlers.CALLS.pop("sink", None)
    async with mapping_service(store, cfg):
        await eventually(lambda: len(handlers.CALLS["sink"]) >= 1, 30, "the failure record")
        await eventually(lambda: sorted(delivered(f)) == [0, 1, 2, 3, 5, 6, 7, 8, 9], 30)
        engine = create_engine(store.database_url)
        try:

            async def letters() -> list[Any]:
                async with engine.connect() as conn:
                    return list((await conn.execute(select(dead_letters))).all())

            async def checkpointed() -> bool:
                [row] = await list_mappings(engine)
                return row.lag == 0

            [letter] = await eventually(letters, 10, "the dead letter")
            # Read past, acknowledged: nothing of the source is left to read.
            await eventually(checkpointed, 10, "the mapping's lag back to 0")
        finally:
            await engine.dispose()
    if side.ordered:
        assert delivered(f) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert numbers(json.loads(letter.payload)) == [4]  # the DLQ keeps the record itself
    assert letter.error_type == "MaximumPayloadSizeExceeded"
    assert "over the payload limit" in letter.error_message
    [record] = handlers.CALLS["sink"]
    assert record["requestContext"]["condition"] == "MaximumPayloadSizeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["responseContext"] is None  # never invoked
    assert "payload" not in record
    info = {
        "kafka": lambda: record["KafkaBatchInfo"]["recordsInfo"],
        "redis": lambda: record["KinesisBatchInfo"],
        "rabbitmq": lambda: record["RabbitMQBatchInfo"],
    }[side.kind]()
    if side.kind == "kafka":
        [where] = info.values()
        assert where["firstRecordOffset"] == where["lastRecordOffset"] == "4"
    elif side.kind == "redis":
        assert info["batchSize"] == 1 and info["startSequenceNumber"] == info["endSequenceNumber"]
    else:
        assert info["batchSize"] == 1 and info["payloadSize"] > 8192


async def test_a_slow_function_pauses_reading_instead_of_filling_the_queue(
    side: Side, store: Store
) -> None:
    from sqlalchemy import func

    from broker.store.mappings import list_mappings
    from broker.store.schema import invocations
    from pollers.mapping_run import MAX_PENDING_BATCHES

    f = fn()
    gate = handlers.GATES[f] = asyncio.Event()
    n = 5 * 2 * MAX_PENDING_BATCHES  # twice as many batches as a lane may hold
    await side.publish(list(range(n)))
    cfg = (
        config(side, f, batch_size=5, max_concurrency=1)
        if side.kind == "rabbitmq"
        else config(side, f, batch_size=5)
    )
    async with mapping_service(store, cfg):
        await eventually(lambda: len(handlers.CALLS[f]) == 1, 30, "the first batch")
        engine = create_engine(store.database_url)
        try:

            async def enqueued() -> int:
                async with engine.connect() as conn:
                    return int(
                        await conn.scalar(select(func.count()).select_from(invocations)) or 0
                    )

            await eventually(lambda: _true_after(enqueued, MAX_PENDING_BATCHES), 10)
            for _ in range(3):
                await service_tick()
                assert await enqueued() <= MAX_PENDING_BATCHES + 1

            async def running() -> bool:
                [row] = await list_mappings(engine)
                return row.status == "running" and (row.lag is None or row.lag > 0)

            # Still reading, not failing: holding back while records wait at the source.
            await eventually(running, 10, "the mapping reported running")
            assert await enqueued() <= MAX_PENDING_BATCHES + 1
        finally:
            await engine.dispose()
        gate.set()
        await eventually(lambda: len(delivered(f)) >= n, 60, "every record once the gate opens")
    assert sorted(delivered(f)) == list(range(n))


async def _true_after(count: Any, at_least: int) -> bool:
    return bool(await count() >= at_least)


async def service_tick() -> None:
    """Give the poller time to read ahead if it were going to (it polls every 100 ms)."""
    await asyncio.sleep(0.3)
