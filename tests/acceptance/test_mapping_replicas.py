"""Two ``serve`` processes share a mapping on one PostgreSQL store, one kind of source at a
time; one dies by SIGKILL while records remain, and the other finishes the work: every
record is invoked, none in two invocations.

* Kafka: the consumer group gives each process partitions; the survivor is assigned the
  dead one's once its session times out, and reads them again from the last commit.
* RabbitMQ: both consume the queue; the dead one's unacknowledged messages come back,
  redelivered, to the survivor.
* Redis Streams: one process reads the stream at a time; the other takes it over once
  the reader's lock lapses (``claim_idle``) and claims what it left pending.

The process that dies kills itself right after one of its enqueues
(:mod:`tests.support.crash_serve`): the batch is in the queue and still at the
source, the moment when a second invocation of the same records could be made.

The function (``tests.mapping_handlers:sink``) writes each batch's records with its
request id to a file: a record under two request ids was in two invocations. An
invocation the dead process was running is run again by the survivor under the same
request id once its lease runs out; that is one invocation, not two.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kafka import (  # noqa: F401
    create_topic,
    kafka_bootstrap,
    produce_numbered,
    unique_topic,
)
from tests.support.processes import Serve, clean_env, eventwire, wait_for
from tests.support.rabbitmq import RabbitQueue, rabbitmq_queue  # noqa: F401
from tests.support.redis_streams import RedisStream, redis_stream  # noqa: F401
from tests.support.sink import sink_entries
from tests.support.stores import database_url
from tests.support.waiting import eventually

FUNCTION = """
functions:
  sink:
    handler: tests.mapping_handlers:sink
    timeout: 2s
mappings:
  - name: {name}
    source: {source}
    function: sink
"""


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    """PostgreSQL: what several ``serve`` processes share in production."""
    async with database_url("postgres", tmp_path) as value:
        yield value


class Replicas:
    """Two ``serve`` processes with one config; the file their function writes to."""

    def __init__(self, tmp_path: Path, url: str, mapping: str) -> None:
        self.sink = tmp_path / "sink.jsonl"
        self.config = tmp_path / "eventwire.yaml"
        self.config.write_text(mapping)
        self.env = clean_env(
            EVENTWIRE_DATABASE_URL=url,
            EVENTWIRE_LEASE_GRACE="1s",
            MAPPING_TEST_SINK=str(self.sink),
        )
        done = eventwire("migrate", env=self.env)
        assert done.returncode == 0, done.stderr
        self.tmp_path = tmp_path
        self.servers: list[Serve] = []

    def start(self, crash_after: int) -> tuple[Serve, Serve]:
        """A ``serve`` process, then one that kills itself once it has enqueued
        ``crash_after`` batches (:mod:`tests.support.crash_serve`)."""
        self.servers.append(self.serve(0))
        self.servers[0].wait_serving()
        return self.servers[0], self.crashing(crash_after)

    def serve(self, n: int, **env: str) -> Serve:
        return Serve(
            self.config,
            {**self.env, **env},
            self.tmp_path / f"serve-{n}.log",
            module="tests.support.crash_serve" if env else "broker.cli",
        )

    def crashing(self, crash_after: int) -> Serve:
        server = self.serve(len(self.servers), CRASH_AFTER_BATCHES=str(crash_after))
        self.servers.append(server)
        server.wait_serving()
        return server

    def killed(self, server: Serve) -> int:
        """Wait for ``server`` to kill itself; answers how many records were invoked then."""
        wait_for(lambda: server.process.poll() is not None, 60, "the process killing itself")
        assert server.process.returncode == -9, server.log()
        server.kill()  # already dead: this closes its log
        return len(self.invoked())

    def invoked(self) -> dict[tuple[str, Any], set[str]]:
        """Each record, with the invocations (request ids) that ran it."""
        seen: dict[tuple[str, Any], set[str]] = defaultdict(set)
        for entry in self.entries():
            for group, position in entry["records"]:
                seen[(group, position)].add(entry["request"])
        return seen

    def entries(self) -> Iterator[dict[str, Any]]:
        return sink_entries(self.sink)

    def stop(self) -> None:
        for server in self.servers:
            if server.process.poll() is None:
                assert server.stop() == 0, server.log()

    def kill_all(self) -> None:
        for server in self.servers:
            server.kill()  # a no-op but closing its log for one that has exited


def once_each(seen: dict[tuple[str, Any], set[str]], expected: set[tuple[str, Any]]) -> None:
    assert set(seen) == expected, f"missing {sorted(expected - set(seen))[:5]}"
    twice = {record: ids for record, ids in seen.items() if len(ids) > 1}
    assert not twice, f"records in more than one invocation: {list(twice.items())[:5]}"


def name() -> str:
    return f"replicas-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- Kafka

PARTITIONS = 4
RECORDS = 2000


def assigned(server: Serve, mapping: str) -> set[str] | None:
    """The partitions ``server`` was last assigned (None before its first assignment)."""
    found = re.findall(rf"mapping {mapping}: assigned (.*)", server.log())
    if not found:
        return None
    last = found[-1].strip()
    return set() if last == "no partitions" else set(last.split(", "))


async def test_kafka_partitions_are_shared_and_a_dead_process_partitions_move(
    kafka_bootstrap: str,  # noqa: F811
    url: str,
    tmp_path: Path,
) -> None:
    topic, mapping = unique_topic("replicas"), name()
    await create_topic(kafka_bootstrap, topic, partitions=PARTITIONS)
    source = f"kafka://{kafka_bootstrap}/{topic}"
    config = FUNCTION.format(name=mapping, source=source) + (
        "    batch_size: 20\n    batch_window: 50ms\n    starting_position: trim_horizon\n"
    )
    replicas = Replicas(tmp_path, url, config)
    try:
        first, second = replicas.start(crash_after=10)
        everything = {f"{topic}-{p}" for p in range(PARTITIONS)}

        def shared() -> bool:
            mine, theirs = assigned(first, mapping), assigned(second, mapping)
            return bool(mine and theirs and mine | theirs == everything)

        # Work is shared: the group gives each process some of the partitions.
        wait_for(shared, 30, "both processes assigned partitions")
        theirs = assigned(second, mapping)
        assert theirs and not theirs & (assigned(first, mapping) or set())

        await produce_numbered(kafka_bootstrap, topic, RECORDS, PARTITIONS)

        left = RECORDS - replicas.killed(second)
        # The survivor is assigned the dead process's partitions once its session times out.
        wait_for(lambda: assigned(first, mapping) == everything, 30, "the survivor has them all")
        wait_for(lambda: len(replicas.invoked()) >= RECORDS, 60, "every record")
        replicas.stop()
    finally:
        replicas.kill_all()
    assert left > RECORDS // 4, f"the kill came too late to matter ({left} left)"
    expected = {
        (f"{topic}-{p}", o) for p in range(PARTITIONS) for o in range(RECORDS // PARTITIONS)
    }
    once_each(replicas.invoked(), expected)


# --------------------------------------------------------------------------- RabbitMQ

MESSAGES = 1500


async def test_rabbitmq_consumers_compete_and_a_dead_one_unacked_messages_come_back(
    rabbitmq_queue: RabbitQueue,  # noqa: F811
    url: str,
    tmp_path: Path,
) -> None:
    import aio_pika

    mapping = name()
    config = FUNCTION.format(name=mapping, source=rabbitmq_queue.source_uri) + (
        "    batch_size: 10\n    batch_window: 50ms\n    max_concurrency: 4\n"
    )
    replicas = Replicas(tmp_path, url, config)
    connection = await aio_pika.connect(rabbitmq_queue.url)
    try:
        channel = await connection.channel()
        first, second = replicas.start(crash_after=10)

        async def consumers() -> int:
            queue = await channel.declare_queue(rabbitmq_queue.name, passive=True)
            return int(queue.declaration_result.consumer_count or 0)

        await eventually(lambda: _at_least(consumers, 2), 30, "both processes consuming")
        for n in range(MESSAGES):
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps({"n": n}).encode(), message_id=f"m{n}"),
                routing_key=rabbitmq_queue.name,
            )
        left = MESSAGES - replicas.killed(second)
        await eventually(lambda: _at_most(consumers, 1), 30, "the dead consumer gone")
        wait_for(lambda: len(replicas.invoked()) >= MESSAGES, 60, "every message")
        replicas.stop()
    finally:
        replicas.kill_all()
        await connection.close()
    assert left > MESSAGES // 4, f"the kill came too late to matter ({left} left)"
    # The dead process held messages it had not acknowledged: they came back, redelivered.
    redelivered = [tuple(r) for entry in replicas.entries() for r in entry.get("redelivered", [])]
    assert redelivered, "no message was redelivered: the dead process held none"
    queue = f"{rabbitmq_queue.name}::/"
    once_each(replicas.invoked(), {(queue, f"m{n}") for n in range(MESSAGES)})
    # The batch it had just enqueued came back unacknowledged, and was not batched again.
    assert "in batches already taken" in first.log()


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def _at_most(count: Any, n: int) -> bool:
    return bool(await count() <= n)


# --------------------------------------------------------------------------- Redis Streams

ENTRIES = 600


async def test_redis_stream_reader_dies_and_the_other_claims_what_it_left_pending(
    redis_stream: RedisStream,  # noqa: F811
    url: str,
    tmp_path: Path,
) -> None:
    from redis.asyncio import Redis

    mapping = name()
    config = FUNCTION.format(name=mapping, source=redis_stream.source_uri()) + (
        "    batch_size: 10\n    starting_position: trim_horizon\n    claim_idle: 1s\n"
    )
    lock = f"eventwire:mapping-lock:{mapping}:{redis_stream.key}"
    replicas = Replicas(tmp_path, url, config)
    client = Redis.from_url(redis_stream.url, decode_responses=True)
    try:
        # The reader is the process that will die: it starts first and takes the lock.
        reader = replicas.crashing(crash_after=10)
        holder = await eventually(lambda: client.get(lock), 30, "one process reading the stream")
        assert holder.endswith(f":{reader.process.pid}")
        standby = replicas.serve(1)
        replicas.servers.append(standby)
        standby.wait_serving()
        async with client.pipeline(transaction=False) as pipe:
            for n in range(ENTRIES):
                pipe.xadd(redis_stream.key, {"n": str(n)})
            ids = await pipe.execute()
        left = ENTRIES - replicas.killed(reader)
        # What it read and never acknowledged (its last batch at least) is pending in its name.
        left_pending = await client.xpending_range(
            redis_stream.key, "eventwire", "-", "+", ENTRIES, consumername=holder
        )
        assert left_pending, "the dead reader left nothing pending"
        wait_for(lambda: "left pending by earlier readers" in standby.log(), 30, "the claim")
        wait_for(lambda: len(replicas.invoked()) >= ENTRIES, 60, "every entry")

        async def nothing_pending() -> bool:
            summary = await client.xpending(redis_stream.key, "eventwire")
            return int(summary["pending"]) == 0

        await eventually(nothing_pending, 10, "every entry acknowledged")
        consumers = await client.xinfo_consumers(redis_stream.key, "eventwire")
        replicas.stop()
    finally:
        replicas.kill_all()
        await client.aclose()
    assert left > ENTRIES // 4, f"the kill came too late to matter ({left} left)"
    assert holder not in {c["name"] for c in consumers}, "the dead consumer was left behind"
    once_each(replicas.invoked(), {(redis_stream.key, entry_id) for entry_id in ids})
