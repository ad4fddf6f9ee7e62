"""SIGKILL ``serve`` at random points while it reads 10,000 Kafka records: every record is
invoked, and none is in two invocations (offsets are committed only after a durable
enqueue, whose idempotency key is the batch's position)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from pathlib import Path

from tests.support.kafka import (  # noqa: F401
    create_topic,
    kafka_bootstrap,
    produce_numbered,
    unique_topic,
)
from tests.support.processes import Serve, clean_env, wait_for
from tests.support.sink import sink_entries

RECORDS = 10_000
PARTITIONS = 4
KILLS = 3


async def produce(bootstrap: str, topic: str) -> None:
    await create_topic(bootstrap, topic, partitions=PARTITIONS)
    await produce_numbered(bootstrap, topic, RECORDS, PARTITIONS)


def invoked(sink: Path) -> dict[tuple[str, int], set[str]]:
    """Each record, with the invocations (request ids) that ran it."""
    seen: dict[tuple[str, int], set[str]] = defaultdict(set)
    for entry in sink_entries(sink):
        for group, offset in entry["records"]:
            seen[(group, offset)].add(entry["request"])
    return seen


def test_every_record_is_invoked_once_across_kills(
    kafka_bootstrap: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    topic = unique_topic("kill")
    asyncio.run(produce(kafka_bootstrap, topic))
    config = tmp_path / "eventwire.yaml"
    config.write_text(
        f"""
functions:
  sink:
    handler: tests.mapping_handlers:sink
mappings:
  - name: kill-test
    source: kafka://{kafka_bootstrap}/{topic}
    function: sink
    batch_size: 100
    batch_window: 50ms
    starting_position: trim_horizon
"""
    )
    sink = tmp_path / "sink.jsonl"
    env = clean_env(
        EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'ew.db'}",
        EVENTWIRE_LEASE_GRACE="1s",
        MAPPING_TEST_SINK=str(sink),
    )
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    progress: list[int] = []
    # Kill points: random record counts, so each kill lands mid-run whatever the speed.
    targets = sorted(rng.sample(range(100, RECORDS * 3 // 4), KILLS))
    for run, target in enumerate(targets):
        server = Serve(config, env, tmp_path / f"serve-{run}.log")
        server.wait_serving()

        def reached(at_least: int = target) -> bool:
            return len(invoked(sink)) >= at_least

        wait_for(reached, 60, f"{target} records in run {run}")
        time.sleep(rng.uniform(0.0, 0.05))
        server.kill()
        progress.append(len(invoked(sink)))
    assert progress[-1] < RECORDS, f"the kills came too late to matter: {progress}"
    server = Serve(config, env, tmp_path / "serve-last.log")
    try:
        server.wait_serving()
        wait_for(lambda: len(invoked(sink)) >= RECORDS, 90, "every record")
    finally:
        assert server.stop() == 0, server.log()
    seen = invoked(sink)
    expected = {
        (f"{topic}-{p}", o) for p in range(PARTITIONS) for o in range(RECORDS // PARTITIONS)
    }
    assert set(seen) == expected, f"seed {seed}"
    twice = {record: ids for record, ids in seen.items() if len(ids) > 1}
    print(f"records invoked after each kill: {progress}")
    assert not twice, f"seed {seed}: records in more than one invocation: {list(twice.items())[:5]}"
