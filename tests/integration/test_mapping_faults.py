"""Mappings when things go wrong: sources down or gone, bad credentials, records that are
not JSON; and what a user does from another shell: disable, enable, seek."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.store.engine import create_engine
from broker.store.mappings import (
    DISABLED,
    ENABLED,
    MappingRow,
    get_mapping,
    request_seek,
    set_desired,
)
from tests import mapping_handlers as handlers
from tests.support.kafka import create_topic, kafka_bootstrap, unique_topic  # noqa: F401
from tests.support.mappings import mapping_service, numbers
from tests.support.processes import clean_env, eventwire
from tests.support.rabbitmq import RabbitQueue, rabbitmq_queue  # noqa: F401
from tests.support.redis_streams import RedisStream, redis_stream  # noqa: F401
from tests.support.stores import Store
from tests.support.waiting import eventually


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}")


@pytest.fixture
async def engine(store: Store) -> Any:
    engine = create_engine(store.database_url)
    yield engine
    await engine.dispose()


def fn() -> str:
    return f"f{uuid.uuid4().hex[:10]}"


def function(name: str) -> dict[str, Any]:
    return {name: {"handler": "tests.mapping_handlers:record"}}


async def row(engine: AsyncEngine, name: str) -> MappingRow:
    return await get_mapping(engine, name)


async def xadd(stream: RedisStream, count: int, start: int = 0) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(stream.url)
    try:
        for n in range(start, start + count):
            await client.xadd(stream.key, {"n": str(n)})
    finally:
        await client.aclose()


async def group_lag(stream: RedisStream, group: str = "eventwire") -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(stream.url)
    try:
        [info] = [g for g in await client.xinfo_groups(stream.key) if g["name"] == group.encode()]
        return int(info["lag"])
    finally:
        await client.aclose()


def delivered(name: str) -> list[int]:
    return [n for event in handlers.CALLS[name] for n in numbers(event)]


async def test_sources_down_or_refusing_fail_with_a_reason_while_the_rest_runs(
    store: Store,
    engine: AsyncEngine,
    redis_stream: RedisStream,  # noqa: F811
) -> None:
    good, kafka, rabbit = fn(), fn(), fn()
    config = {
        "functions": function(good),
        "mappings": [
            {"name": kafka, "source": "kafka://127.0.0.1:1/orders", "function": good},
            {
                "name": rabbit,
                "source": "amqp://nobody:wrong@127.0.0.1:5672/%2F?queue=q",
                "function": good,
            },
            {
                "name": good,
                "source": redis_stream.source_uri(),
                "function": good,
                "starting_position": "trim_horizon",
            },
        ],
    }
    await xadd(redis_stream, 3)
    async with mapping_service(store, config):
        await eventually(lambda: delivered(good) == [0, 1, 2], 15, "the healthy mapping")
        down = await eventually(lambda: _failing(engine, kafka), 30, "the Kafka mapping failing")
        refused = await eventually(
            lambda: _failing(engine, rabbit), 30, "the RabbitMQ mapping failing"
        )
        assert "cannot reach Kafka at 127.0.0.1:1" in (down.status_reason or "")
        assert (
            "ACCESS_REFUSED" in (refused.status_reason or "")
            or "auth" in (refused.status_reason or "").lower()
        )
        listing = eventwire("mappings", "ls", env=clean_env(**store.env()))
    assert listing.returncode == 0, listing.stderr
    [line] = [line for line in listing.stdout.splitlines() if kafka in line]
    assert "failing" in line and "cannot reach Kafka" in line
    assert (await row(engine, good)).state == ENABLED


async def _failing(engine: AsyncEngine, name: str) -> MappingRow | None:
    found = await row(engine, name)
    return found if found.state == "failing" else None


async def test_a_removed_queue_is_a_failing_state_and_reading_resumes_when_it_is_back(
    store: Store,
    engine: AsyncEngine,
    rabbitmq_queue: RabbitQueue,  # noqa: F811
) -> None:
    import aio_pika

    name = fn()
    config = {
        "functions": function(name),
        "mappings": [{"name": name, "source": rabbitmq_queue.source_uri, "function": name}],
    }
    connection = await aio_pika.connect(rabbitmq_queue.url)
    try:
        channel = await connection.channel()
        async with mapping_service(store, config):
            await eventually(lambda: _state(engine, name, "running"), 15, "running")
            await channel.queue_delete(rabbitmq_queue.name)
            gone = await eventually(lambda: _failing(engine, name), 15, "failing")
            assert f"queue {rabbitmq_queue.name!r}" in (gone.status_reason or "")
            await channel.declare_queue(rabbitmq_queue.name, durable=True)
            await channel.default_exchange.publish(
                aio_pika.Message(b'{"n": 1}', message_id="m1"), routing_key=rabbitmq_queue.name
            )
            await eventually(lambda: delivered(name) == [1], 30, "delivery after the queue is back")
    finally:
        await connection.close()


async def _state(engine: AsyncEngine, name: str, status: str) -> bool:
    return (await row(engine, name)).status == status


async def test_disable_and_enable_take_effect_without_a_restart(
    store: Store,
    engine: AsyncEngine,
    redis_stream: RedisStream,  # noqa: F811
) -> None:
    name = fn()
    config = {
        "functions": function(name),
        "mappings": [{"name": name, "source": redis_stream.source_uri(), "function": name}],
    }
    async with mapping_service(store, config):
        await eventually(lambda: _state(engine, name, "running"), 15, "running")
        await set_desired(engine, name, DISABLED, datetime.now(UTC))
        await eventually(lambda: _state(engine, name, "stopped"), 15, "stopped")
        await xadd(redis_stream, 4)
        assert (await row(engine, name)).state == DISABLED
        assert await group_lag(redis_stream) == 4  # nothing read while disabled
        assert delivered(name) == []
        await set_desired(engine, name, ENABLED, datetime.now(UTC))
        await eventually(lambda: delivered(name) == [0, 1, 2, 3], 15, "delivery once enabled")


async def test_seek_replays_a_stream_from_a_time(
    store: Store,
    engine: AsyncEngine,
    redis_stream: RedisStream,  # noqa: F811
) -> None:
    name = fn()
    config = {
        "functions": function(name),
        "mappings": [
            {
                "name": name,
                "source": redis_stream.source_uri(),
                "function": name,
                "starting_position": "trim_horizon",
            }
        ],
    }
    await xadd(redis_stream, 3)
    async with mapping_service(store, config):
        await eventually(lambda: delivered(name) == [0, 1, 2], 15, "first delivery")
        await request_seek(engine, name, datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC))
        await eventually(lambda: delivered(name) == [0, 1, 2, 0, 1, 2], 15, "the replay")


async def test_entries_a_dead_consumer_left_pending_are_claimed(
    store: Store,
    redis_stream: RedisStream,  # noqa: F811
) -> None:
    from redis.asyncio import Redis

    name = fn()
    client = Redis.from_url(redis_stream.url)
    try:
        await client.xgroup_create(redis_stream.key, "eventwire", id="0", mkstream=True)
        await xadd(redis_stream, 3)
        # Another process read these and died before enqueuing them: never acknowledged.
        await client.xreadgroup("eventwire", "dead-host:1", {redis_stream.key: ">"}, count=3)
        config = {
            "functions": function(name),
            "mappings": [{"name": name, "source": redis_stream.source_uri(), "function": name}],
        }
        async with mapping_service(store, config):
            await eventually(lambda: delivered(name) == [0, 1, 2], 15, "the claimed entries")
        summary = await client.xpending(redis_stream.key, "eventwire")
        assert summary["pending"] == 0
    finally:
        await client.aclose()


async def test_records_that_are_not_json_are_delivered_and_filtered_as_text(
    store: Store,
    kafka_bootstrap: str,  # noqa: F811
) -> None:
    from aiokafka import AIOKafkaProducer

    topic = unique_topic()
    await create_topic(kafka_bootstrap, topic)
    raw, filtered = fn(), fn()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for value in (b"\xff\xfenot json", b'{"type": "a"}', b"ERROR disk full"):
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()
    source = f"kafka://{kafka_bootstrap}/{topic}"
    common = {"source": source, "starting_position": "trim_horizon", "batch_window": "50ms"}
    config = {
        "functions": {**function(raw), **function(filtered)},
        "mappings": [
            {"name": raw, "function": raw, **common},
            {
                "name": filtered,
                "function": filtered,
                "filters": [{"value": {"type": ["a"]}}, {"value": [{"prefix": "ERROR"}]}],
                **common,
            },
        ],
    }

    def values(name: str) -> list[bytes]:
        return [
            base64.b64decode(record["value"])
            for event in handlers.CALLS[name]
            for records in event["records"].values()
            for record in records
        ]

    async with mapping_service(store, config):
        await eventually(lambda: len(values(raw)) == 3, 30, "all three records")
        await eventually(lambda: len(values(filtered)) == 2, 30, "the matching two")
    assert values(raw) == [b"\xff\xfenot json", b'{"type": "a"}', b"ERROR disk full"]
    assert values(filtered) == [b'{"type": "a"}', b"ERROR disk full"]


async def test_a_batch_enqueued_but_never_acknowledged_is_not_invoked_again(
    store: Store,
    rabbitmq_queue: RabbitQueue,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reader dies between enqueuing a batch and acknowledging its messages (here: its
    first enqueue raises once it is done); RabbitMQ redelivers them to the next reader,
    along with newer messages: they must not be invoked again in a batch of another shape."""
    import aio_pika

    from pollers.mapping_run import MappingRun

    name = fn()
    original = MappingRun.enqueue
    crashed = asyncio.Event()

    async def enqueue_then_crash(self: MappingRun, batches: Any, lanes: Any = None) -> None:
        await original(self, batches, lanes)
        if batches and not crashed.is_set():
            crashed.set()
            raise RuntimeError("died after enqueuing, before acknowledging")

    monkeypatch.setattr(MappingRun, "enqueue", enqueue_then_crash)
    config = {
        "functions": function(name),
        "mappings": [
            {
                "name": name,
                "source": rabbitmq_queue.source_uri,
                "function": name,
                "batch_size": 10,
                "batch_window": "100ms",
            }
        ],
    }
    connection = await aio_pika.connect(rabbitmq_queue.url)
    try:
        channel = await connection.channel()

        async def publish(numbers: range) -> None:
            for n in numbers:
                await channel.default_exchange.publish(
                    aio_pika.Message(f'{{"n": {n}}}'.encode(), message_id=f"m{n}"),
                    routing_key=rabbitmq_queue.name,
                )

        async with mapping_service(store, config):
            await publish(range(3))
            await eventually(crashed.is_set, 15, "the batch of the first three enqueued")
            await publish(range(3, 10))  # the next reader gets them with the three again
            await eventually(lambda: sorted(delivered(name)) == list(range(10)), 20, "all ten")
        # Every message acknowledged: none came back when the service closed its channel.
        queue = await channel.declare_queue(rabbitmq_queue.name, passive=True)
        assert queue.declaration_result.message_count == 0
    finally:
        await connection.close()
    assert sorted(delivered(name)) == list(range(10))  # m0..m2 once, in the first batch
    assert numbers(handlers.CALLS[name][0]) == [0, 1, 2]
