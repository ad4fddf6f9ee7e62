"""A Kafka mapping's figures at ``/metrics``: records polled, filtered out, enqueued,
invoked, failed, dropped and sent to on-failure add up to what was produced and what
became of it, and its lag (each partition's too) and iterator age fall to zero once it
has caught up."""

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
OUTCOMES = ("polled", "filtered", "enqueued", "invoked", "failed", "dropped", "on_failure")


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
  failing:
    handler: tests.handlers:boom
  audit:
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
  - name: failures
    source: kafka://{kafka_bootstrap}/{topic}
    function: failing
    batch_size: 500
    batch_window: 50ms
    starting_position: trim_horizon
    max_retry_attempts: 1
    on_failure: function:audit
"""
    )
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'ew.db'}")
    serve = Serve(config, env, tmp_path / "serve.log", "--metrics-listen", "127.0.0.1:0")
    try:
        serve.wait_serving()
        url = serve.logged(METRICS_URL, "the metrics URL")

        def records(mapping: str) -> dict[str, float]:
            samples = scrape(url)
            name = "eventwire_mapping_records_total"
            return {
                outcome: value(samples, name, mapping=mapping, outcome=outcome)
                for outcome in OUTCOMES
            }

        # Enqueued is counted once the batch is in the queue, a moment after it was polled;
        # invoked once its attempt is settled.
        passed = RECORDS - 100
        expected = dict.fromkeys(OUTCOMES, 0.0) | {
            "polled": RECORDS, "filtered": 100, "enqueued": passed, "invoked": passed,
        }  # fmt: skip
        wait_for(lambda: records("numbers") == expected, 60, f"{expected}")
        # Each batch of the failing function runs twice (max_retry_attempts: 1), then is
        # given up on: its records are dropped and go to on_failure in a failure record.
        failed = dict.fromkeys(OUTCOMES, float(RECORDS)) | {
            "filtered": 0, "invoked": 2 * RECORDS, "failed": 2 * RECORDS,
        }  # fmt: skip
        wait_for(lambda: records("failures") == failed, 60, f"{failed}")

        def caught_up() -> bool:
            samples = scrape(url)
            lag = value(samples, "eventwire_mapping_lag", mapping="numbers")
            age = value(samples, "eventwire_mapping_iterator_age_seconds", mapping="numbers")
            seen = ("eventwire_mapping_lag", frozenset({("mapping", "numbers")})) in samples
            partitions = {
                dict(labels)["partition"]: figure
                for (name, labels), figure in samples.items()
                if name == "eventwire_mapping_partition_lag" and ("mapping", "numbers") in labels
            }
            each = partitions == {f"{topic}-{p}": 0 for p in range(PARTITIONS)}
            return seen and each and lag == 0 and age == 0

        wait_for(caught_up, 30, "the lag and iterator age at zero")
        assert value(scrape(url), "eventwire_mapping_backpressure", mapping="numbers") == 0
    finally:
        assert serve.stop() == 0, serve.log()
