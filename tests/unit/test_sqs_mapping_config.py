"""SQS mappings in ``eventwire.yaml``: Lambda's defaults and rules, errors naming file:line: key."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.aws.names import Queue
from broker.config.mappings import SourceKind, SqsSource
from tests.unit.test_mapping_config import error_of, load

QUEUE = "sqs://sqs.eu-west-1.amazonaws.com/123456789012/orders"


def test_an_sqs_mapping_takes_lambdas_defaults(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"mappings:\n  - {{name: m, source: '{QUEUE}', function: process}}\n"
        "  - name: fifo\n"
        "    source: arn:aws:sqs:eu-west-1:123456789012:jobs.fifo\n"
        "    function: process\n"
        "    batch_size: 500\n"
        "    batch_window: 2s\n"
        "    max_concurrency: 2\n"
        "    endpoint_url: http://localhost:9324\n"
        "    region: eu-west-1\n"
        "    function_response_types: [ReportBatchItemFailures]\n",
    )
    plain, fifo = config.mappings  # type: ignore[attr-defined]
    assert plain.kind is SourceKind.SQS
    assert plain.parsed_source == SqsSource(
        QUEUE, Queue("orders", "123456789012", "eu-west-1", "sqs.eu-west-1.amazonaws.com")
    )
    assert (plain.batch_size, plain.batch_window_s, plain.max_concurrency) == (10, 0.0, None)
    assert plain.starting_position is None and not plain.lane_ordered
    assert not plain.report_batch_item_failures
    assert fifo.parsed_source.queue.fifo
    assert (fifo.batch_size, fifo.batch_window_s, fifo.max_concurrency) == (500, 2.0, 2)
    assert (fifo.endpoint_url, fifo.region) == ("http://localhost:9324", "eu-west-1")
    assert fifo.report_batch_item_failures


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            f"{{name: m, source: '{QUEUE}', function: process, batch_size: 11}}",
            "F:5: mappings.0.batch_size: a batch_size above 10 (11) needs a batch_window "
            "above 0 for sqs sources (as in Lambda)",
        ),
        (
            f"{{name: m, source: '{QUEUE}', function: process, batch_size: 100, batch_window: 0}}",
            "F:5: mappings.0.batch_window: a batch_size above 10 (100) needs a batch_window",
        ),
        (
            f"{{name: m, source: '{QUEUE}', function: process, batch_size: 10001, "
            "batch_window: 1s}",
            "F:5: mappings.0.batch_size: Input should be less than or equal to 10000",
        ),
        (
            f"{{name: m, source: '{QUEUE}', function: process, max_concurrency: 1}}",
            "F:5: mappings.0.max_concurrency: expected 2 to 1000 for sqs sources",
        ),
        (
            f"{{name: m, source: '{QUEUE}', function: process, max_retry_attempts: 3}}",
            "F:5: mappings.0.max_retry_attempts: does not apply to sqs sources: the queue "
            "redelivers",
        ),
        (
            f"{{name: m, source: '{QUEUE}', function: process, on_failure: dlq}}",
            "F:5: mappings.0.on_failure: does not apply to sqs sources",
        ),
        (
            f"{{name: m, source: '{QUEUE}', function: process, starting_position: latest}}",
            "F:5: mappings.0.starting_position: does not apply to sqs sources: an SQS queue "
            "has no position",
        ),
        (
            "{name: m, source: 'kafka://k:9092/t', function: process, region: eu-west-1}",
            "F:5: mappings.0.region: applies to sqs sources",
        ),
        (
            "{name: m, source: 'redis://r:6379/0?stream=s', function: process, "
            "endpoint_url: 'http://x:1'}",
            "F:5: mappings.0.endpoint_url: applies to sqs sources",
        ),
        (
            f"{{name: m, source: '{QUEUE}', function: process, endpoint_url: 'localhost:9324'}}",
            "F:5: mappings.0.endpoint_url: String should match pattern",
        ),
        (
            f"{{name: m, source: '{QUEUE}', function: process, function_response_types: [X]}}",
            "function_response_types: expected [] or [ReportBatchItemFailures], got ['X']",
        ),
        (
            f"{{name: m, source: '{QUEUE}', function: process, filters: [{{data: {{a: [1]}}}}]}}",
            "F:5: mappings.0.filters.0: unknown top-level key 'data'",
        ),
        (
            "{name: m, source: 'arn:aws:sqs:eu-west-1:12:orders', function: process}",
            "F:5: mappings.0.source: 'arn:aws:sqs:eu-west-1:12:orders': account '12' is not "
            "12 digits",
        ),
    ],
)
def test_bad_sqs_mappings_name_the_line_and_key(tmp_path: Path, mapping: str, message: str) -> None:
    assert message in error_of(tmp_path, f"mappings:\n  - {mapping}\n")
