"""A Kafka mapping's figures at ``/metrics``: records polled, filtered out and enqueued
add up to what was produced, and its lag and iterator age fall to zero once it has
caught up."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.acceptance.test_metrics import scrape
from tests.support.kafka import (  # noqa: F401
    create_topic,
    kafka_bootstrap,
    produce_numbered,
    unique_topic,
)
from tests.support.metrics import METRICS_URL, value
from tests.support.processes import Serve, clean_env, wait_for

RECORDS = 1_000
PARTITIONS = 2


def test_a_kafka_mappings_records_and_lag(kafka_bootstrap: str, tmp_path: Path) -> None:  # noqa: F811
    topic = unique_topic("metrics")
    asyncio.run(create_topic(kafka_bootstrap, topic, partitions=PARTITIONS))
    asyncio.run(produce_numbered(kafka_bootstrap, topic, RECORDS, PARTITIONS))
    config = tmp_path / "eventwire.yaml"
    config.write_text(
        f"""
functions:
  count:
    handler: tests.handlers:noop
mappings:
  - name: numbers
    source: kafka://{kafka_bootstrap}/{topic}
    function: count
    batch_size: 100
    batch_window: 50ms
    starting_position: trim_horizon
    filters:
      - value: {{n: [{{numeric: [">=", 100]}}]}}
"""
    )
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'ew.db'}")
    serve = Serve(config, env, tmp_path / "serve.log", "--metrics-listen", "127.0.0.1:0")
    try:
        serve.wait_serving()
        url = serve.logged(METRICS_URL, "the metrics URL")

        def records() -> dict[str, float]:
            samples = scrape(url)
            name = "eventwire_mapping_records_total"
            return {
                outcome: value(samples, name, mapping="numbers", outcome=outcome)
                for outcome in ("polled", "filtered", "enqueued")
            }

        # Enqueued is counted once the batch is in the queue, a moment after it was polled.
        expected = {"polled": RECORDS, "filtered": 100, "enqueued": RECORDS - 100}
        wait_for(lambda: records() == expected, 60, f"{expected}")

        def caught_up() -> bool:
            samples = scrape(url)
            lag = value(samples, "eventwire_mapping_lag", mapping="numbers")
            age = value(samples, "eventwire_mapping_iterator_age_seconds", mapping="numbers")
            seen = ("eventwire_mapping_lag", frozenset({("mapping", "numbers")})) in samples
            return seen and lag == 0 and age == 0

        wait_for(caught_up, 30, "the lag and iterator age at zero")
        assert value(scrape(url), "eventwire_mapping_backpressure", mapping="numbers") == 0
    finally:
        assert serve.stop() == 0, serve.log()
