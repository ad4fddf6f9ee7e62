"""The ``mappings:`` section: Lambda's defaults, sources, and errors naming file:line: key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.config.mappings import (
    AmqpSource,
    KafkaSource,
    RedisStreamSource,
    SourceKind,
    parse_source,
)
from broker.errors import ConfigError
from broker.loading import load_config

FUNCTIONS = "functions:\n  process: {handler: 'm:f'}\n  audit: {handler: 'm:g'}\n"

ISSUE_EXAMPLE = """
mappings:
  - name: orders
    source: kafka://localhost:9092/orders
    function: process
    batch_size: 100
    batch_window: 500ms
    starting_position: trim_horizon
    filters: [{value: {type: [order_created]}}]
    report_batch_item_failures: true
    bisect_on_error: true
    max_retry_attempts: 5
    max_record_age: 1h
    on_failure: dlq
  - name: emails
    source: amqp://guest:guest@localhost:5672/%2F?queue=emails
    function: process
    batch_size: 10
    max_concurrency: 5
  - name: clicks
    source: redis://localhost:6379/0?stream=clicks&group=eventwire
    function: process
"""


def load(tmp_path: Path, mappings: str) -> object:
    path = tmp_path / "eventwire.yaml"
    path.write_text(FUNCTIONS + mappings)
    return load_config(path)


def error_of(tmp_path: Path, mappings: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, mappings)
    return str(caught.value).replace(f"{tmp_path / 'eventwire.yaml'}", "F")


def test_the_issue_example_loads_with_lambdas_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, ISSUE_EXAMPLE)
    orders, emails, clicks = config.mappings  # type: ignore[attr-defined]
    assert orders.kind is SourceKind.KAFKA
    assert orders.parsed_source == KafkaSource(
        "kafka://localhost:9092/orders", ("localhost:9092",), "orders", None
    )
    assert orders.consumer_group == "orders"
    assert (orders.batch_size, orders.batch_window_s) == (100, 0.5)
    assert orders.starting_position == "trim_horizon"
    assert (orders.max_retry_attempts, orders.max_record_age_s) == (5, 3600)
    assert orders.record_filter.matches(b'{"type": "order_created"}')
    assert not orders.record_filter.matches(b'{"type": "order_deleted"}')
    assert orders.lane_ordered and not emails.lane_ordered

    assert emails.parsed_source == AmqpSource(
        "amqp://guest:guest@localhost:5672/%2F?queue=emails",
        "amqp://guest:guest@localhost:5672/%2F",
        "emails",
        "/",
    )
    assert (emails.batch_size, emails.batch_window_s, emails.max_concurrency) == (10, 0.5, 5)
    assert emails.starting_position is None and emails.consumer_group is None

    assert clicks.parsed_source == RedisStreamSource(
        "redis://localhost:6379/0?stream=clicks&group=eventwire",
        "redis://localhost:6379/0",
        "clicks",
        "eventwire",
    )
    assert clicks.consumer_group == "eventwire"
    assert (clicks.batch_size, clicks.batch_window_s) == (100, 0.0)
    assert clicks.starting_position == "latest"
    assert (clicks.max_retry_attempts, clicks.max_record_age_s) == (-1, None)
    assert clicks.enabled and not clicks.bisect_on_error and not clicks.report_batch_item_failures
    assert clicks.record_filter.accepts_all
    assert clicks.claim_idle_s == 5.0


def test_a_file_without_mappings_has_none(tmp_path: Path) -> None:
    assert load(tmp_path, "").mappings == []  # type: ignore[attr-defined]


def test_at_timestamp_takes_a_starting_timestamp(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "mappings:\n  - {name: m, source: 'kafka://k:9092/t', function: process,\n"
        "     starting_position: at_timestamp, starting_timestamp: '2026-01-31T12:00:00'}\n",
    )
    mapping = config.mappings[0]  # type: ignore[attr-defined]
    assert mapping.starting_timestamp == datetime(2026, 1, 31, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "kafka://a:9092,b:9093/orders?group=g1",
            KafkaSource(
                "kafka://a:9092,b:9093/orders?group=g1", ("a:9092", "b:9093"), "orders", "g1"
            ),
        ),
        (
            "amqps://u:p@mq:5671/prod?queue=q&heartbeat=30",
            AmqpSource(
                "amqps://u:p@mq:5671/prod?queue=q&heartbeat=30",
                "amqps://u:p@mq:5671/prod?heartbeat=30",
                "q",
                "prod",
            ),
        ),
        (
            "redis://r:6379?stream=s",
            RedisStreamSource("redis://r:6379?stream=s", "redis://r:6379", "s", None),
        ),
    ],
)
def test_source_uris(uri: str, expected: object) -> None:
    assert parse_source(uri) == expected


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            "{name: m, source: 'kafka://k:9092/t', function: nope}",
            "F:5: mappings.0.function: mapping 'm' targets unknown function 'nope'; "
            "configured functions: audit, process",
        ),
        (
            "{name: m, source: 'nats://q', function: process}",
            "F:5: mappings.0.source: unknown source 'nats://q'; expected kafka://host:port/topic",
        ),
        (
            "{name: m, source: 'sqs://q', function: process}",
            "F:5: mappings.0.source: 'sqs://q' names no queue; expected sqs://HOST/ACCOUNT/QUEUE",
        ),
        (
            "{name: m, source: 'kafka://k:9092', function: process}",
            "F:5: mappings.0.source: 'kafka://k:9092' names no topic",
        ),
        (
            "{name: m, source: 'kafka://k/t', function: process}",
            "F:5: mappings.0.source: 'kafka://k/t': bootstrap server 'k' is not host:port",
        ),
        (
            "{name: m, source: 'amqp://h:5672/%2F', function: process}",
            "F:5: mappings.0.source: 'amqp://h:5672/%2F' names no queue; add ?queue=NAME",
        ),
        (
            "{name: m, source: 'redis://h:6379/0', function: process}",
            "names no stream; add ?stream=KEY",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, batch_size: 0}",
            "F:5: mappings.0.batch_size: Input should be greater than or equal to 1",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, batch_size: 10001}",
            "mappings.0.batch_size: Input should be less than or equal to 10000",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, batch_window: 6m}",
            "mappings.0.batch_window: Input should be less than or equal to 300",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, max_retry_attempts: -2}",
            "mappings.0.max_retry_attempts: Input should be greater than or equal to -1",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, max_record_age: 8d}",
            "mappings.0.max_record_age: expected -1 (no limit) or a duration up to 7d",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, starting_position: first}",
            "mappings.0.starting_position: Input should be 'latest', 'trim_horizon' or",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process,"
            " starting_position: at_timestamp}",
            "F:5: mappings.0.starting_position: starting_timestamp is required with, and only "
            "with, at_timestamp",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, max_concurrency: 3}",
            "F:5: mappings.0.max_concurrency: applies to amqp and sqs sources",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, claim_idle: 30s}",
            "F:5: mappings.0.claim_idle: applies to redis stream sources",
        ),
        (
            "{name: m, source: 'redis://r:6379?stream=s', function: process, claim_idle: 500ms}",
            "mappings.0.claim_idle: Input should be greater than or equal to 1",
        ),
        (
            "{name: m, source: 'amqp://h/%2F?queue=q', function: process,"
            " starting_position: latest}",
            "F:5: mappings.0.starting_position: applies to kafka and redis stream sources",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, on_failure: 'function:x'}",
            "F:5: mappings.0.on_failure: unknown function 'x' in destination 'function:x'",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, on_failure: 'nats:q'}",
            "mappings.0.on_failure: unknown destination 'nats:q'",
        ),
        (
            "{name: 'm n', source: 'kafka://k:9092/t', function: process}",
            "mappings.0.name: mapping name 'm n' must be 1-64 letters",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, batchsize: 5}",
            "F:5: mappings.0.batchsize: unknown key 'batchsize'; expected one of: batch_size, "
            "batch_window,",
        ),
        ("{name: m, function: process}", "F:5: mappings.0.source: required key is missing"),
    ],
)
def test_bad_mappings_name_the_line_and_key(tmp_path: Path, mapping: str, message: str) -> None:
    assert message in error_of(tmp_path, f"mappings:\n  - {mapping}\n")


def test_filter_errors_point_at_the_pattern(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        "mappings:\n"
        "  - name: m\n"
        "    source: kafka://k:9092/t\n"
        "    function: process\n"
        "    filters:\n"
        "      - {value: {type: [a]}}\n"
        "      - {value: {amount: [{numeric: ['>', 'ten']}]}}\n",
    )
    assert (
        message
        == "F:10: mappings.0.filters.1: value.amount[0].numeric: '>' needs a number, got 'ten'"
    )


def test_filters_name_the_data_key_of_their_source(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        "mappings:\n  - {name: m, source: 'redis://r:6379?stream=s', function: process,\n"
        "     filters: [{value: {a: [1]}}]}\n",
    )
    assert "mappings.0.filters.0: unknown top-level key 'value'; a pattern filters on 'data'" in (
        message
    )
    config = load(
        tmp_path,
        "mappings:\n  - {name: m, source: 'amqp://h/%2F?queue=q', function: process,\n"
        "     filters: [{body: {a: [1]}}, {data: [{prefix: 'x'}]}]}\n",
    )
    record_filter = config.mappings[0].record_filter  # type: ignore[attr-defined]
    assert record_filter.matches(b'{"a": 1}') and record_filter.matches(b"xyz")


def test_more_than_five_filters_is_an_error(tmp_path: Path) -> None:
    filters = ", ".join(["{value: {a: [1]}}"] * 6)
    message = error_of(
        tmp_path,
        f"mappings:\n  - {{name: m, source: 'kafka://k:9092/t', function: process,\n"
        f"     filters: [{filters}]}}\n",
    )
    assert "mappings.0.filters: 6 filter patterns; a mapping has at most 5" in message


def test_mapping_names_are_unique(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        "mappings:\n"
        "  - {name: m, source: 'kafka://k:9092/t', function: process}\n"
        "  - {name: m, source: 'kafka://k:9092/u', function: process}\n",
    )
    assert message == "F:6: mappings.1.name: mapping name 'm' is already used by mappings.0"


def test_claim_idle_is_how_long_a_silent_stream_reader_keeps_its_stream(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "mappings:\n  - {name: m, source: 'redis://r:6379?stream=s', function: process,"
        " claim_idle: 30s}\n",
    )
    [mapping] = config.mappings  # type: ignore[attr-defined]
    assert mapping.claim_idle_s == 30.0
