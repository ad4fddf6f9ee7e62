"""External destinations: URIs, configuration errors, the delivery envelope, signatures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from broker.aws.names import Queue, Topic
from broker.destinations import parse_destination
from broker.destinations.external import (
    ExternalDestination,
    Message,
    delivery_function,
    first_kilobyte,
    redacted,
    unwrap,
    wrap,
)
from broker.destinations.sqs_sns import fifo_ids, message_attributes
from broker.destinations.webhook import header_value, sign, verify_signature
from broker.errors import ConfigError
from broker.functions.delivery import served_functions
from broker.loading import load_config, parse_config

AMQP = "amqp://guest:guest@localhost:5672/%2F?exchange=failures&routing_key=ingest"


def error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "eventwire.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("uri", "kind", "options"),
    [
        (
            AMQP,
            "amqp",
            {"url": "amqp://guest:guest@localhost:5672/%2F", "exchange": "failures"},
        ),
        ("kafka://k1:9092,k2:9092/ingested", "kafka", {"servers": "k1:9092,k2:9092"}),
        ("kafka://k1:9092/t?idempotent=false", "kafka", {"topic": "t", "idempotent": False}),
        ("redis://localhost:6379/0?stream=dlq&maxlen=500", "redis", {"stream": "dlq"}),
        ("https://hooks.internal/audit?x=1", "http", {"url": "https://hooks.internal/audit?x=1"}),
        (
            "sqs://sqs.eu-west-1.amazonaws.com/123456789012/orders",
            "sqs",
            {"queue": Queue("orders", "123456789012", "eu-west-1", "sqs.eu-west-1.amazonaws.com")},
        ),
        (
            "arn:aws:sqs:eu-west-1:123456789012:orders",
            "sqs",
            {"queue": Queue("orders", "123456789012", "eu-west-1")},
        ),
        (
            "sqs://arn:aws:sqs:eu-west-1:123456789012:orders",
            "sqs",
            {"queue": Queue("orders", "123456789012", "eu-west-1")},
        ),
        ("sqs://orders", "sqs", {"queue": Queue("orders")}),
        (
            "sns://arn:aws:sns:eu-west-1:123456789012:audit",
            "sns",
            {"topic": Topic("arn:aws:sns:eu-west-1:123456789012:audit", "eu-west-1", "audit")},
        ),
        (
            "arn:aws:sns:eu-west-1:123456789012:audit",
            "sns",
            {"topic": Topic("arn:aws:sns:eu-west-1:123456789012:audit", "eu-west-1", "audit")},
        ),
    ],
)
def test_uris_parse_into_their_target(uri: str, kind: str, options: dict[str, object]) -> None:
    destination = parse_destination(uri)
    assert isinstance(destination, ExternalDestination)
    assert destination.kind == kind
    assert options.items() <= dict(destination.options).items()
    assert destination.function is None
    assert destination.delivery_function == delivery_function(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("amqp://localhost/%2F?routing_key=x", "names no exchange; expected amqp://"),
        ("amqp://localhost/%2F?exchange=", "the default exchange (exchange=) needs routing_key"),
        ("kafka://localhost:9092", "names no topic; expected kafka://host:9092"),
        ("kafka://localhost:9092/t?acks=1", "unexpected query"),
        ("redis://localhost:6379/0", "names no stream"),
        ("redis://localhost/0?stream=s&maxlen=lots", "maxlen should be a positive number"),
        ("https:///path", "has no host"),
        ("nats://queue", "unknown destination 'nats://queue'; expected one of: function:NAME, dlq"),
        ("sqs://orders/", "names no queue; expected sqs://HOST/ACCOUNT/QUEUE"),
        ("sqs://h/12345/orders", "account '12345' is not 12 digits"),
        ("sqs://ord ers", "'ord ers' is not a queue name"),
        ("arn:aws:sqs::123456789012:orders", "names no region"),
        ("arn:aws:lambda:eu-west-1:123456789012:function:f", "is not a queue or topic ARN"),
        ("sns://orders", "is not an SNS topic; expected sns://arn:aws:sns:REGION:ACCOUNT:TOPIC"),
        ("arn:aws:sns:eu-west-1:123:audit", "is not an SNS topic"),
    ],
)
def test_bad_uris_say_what_was_expected(uri: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_destination(uri)
    assert message in str(info.value)


def test_config_errors_name_the_file_line_and_key(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        "functions:\n  f:\n    handler: m:f\n    on_success: kafka://localhost:9092\n",
    )
    assert message.startswith(f"{tmp_path / 'eventwire.yaml'}:4: functions.f.on_success: ")
    assert "names no topic" in message
    message = error_of(
        tmp_path, "functions:\n  f:\n    handler: m:f\n    dead_letter: function:f\n"
    )
    assert ":4: functions.f.dead_letter: expected a queue, topic, stream or webhook URI" in message


def test_destination_settings_must_fit_a_used_destination(tmp_path: Path) -> None:
    head = f"functions:\n  f:\n    handler: m:f\n    on_failure: '{AMQP}'\ndestinations:\n"
    unused = error_of(tmp_path, head + "  'https://elsewhere/x': {timeout: 5s}\n")
    assert ":6: destinations.https://elsewhere/x: no function, schedule or mapping" in unused
    webhook_only = error_of(tmp_path, head + f"  '{AMQP}':\n    signing_secret_env: S\n")
    assert f":7: destinations.{AMQP}.signing_secret_env: only webhooks" in webhook_only
    wrong_retry = error_of(tmp_path, head + f"  '{AMQP}':\n    retry: {{max_atempts: 3}}\n")
    assert "unknown key 'max_atempts'" in wrong_retry
    aws_only = error_of(tmp_path, head + f"  '{AMQP}':\n    endpoint_url: http://localhost:4566\n")
    assert f":7: destinations.{AMQP}.endpoint_url: only SQS queues and SNS topics" in aws_only


def test_sqs_and_sns_destinations_name_the_key_of_a_mistake(tmp_path: Path) -> None:
    head = "functions:\n  f:\n    handler: m:f\n"
    bad_queue = error_of(tmp_path, head + "    on_success: sqs://h/12345/orders\n")
    assert bad_queue.endswith(
        ":4: functions.f.on_success: destination 'sqs://h/12345/orders': 'sqs://h/12345/orders': "
        "account '12345' is not 12 digits; expected sqs://HOST/ACCOUNT/QUEUE (the queue URL "
        "with the sqs:// scheme) or arn:aws:sqs:REGION:ACCOUNT:QUEUE"
    )
    bad_topic = error_of(tmp_path, head + "    dead_letter: sns://audit\n")
    assert ":4: functions.f.dead_letter: destination 'sns://audit' is not an SNS topic" in bad_topic
    queue = "sqs://orders"
    tail = f"    on_failure: {queue}\ndestinations:\n  {queue}:\n"
    bad_endpoint = error_of(tmp_path, head + tail + "    endpoint_url: localhost:9324\n")
    assert f":7: destinations.{queue}.endpoint_url: " in bad_endpoint
    assert "expected http://HOST[:PORT] or https://HOST[:PORT], got 'localhost:9324'" in (
        bad_endpoint
    )
    bad_region = error_of(tmp_path, head + tail + "    region: Ireland\n")
    assert f":7: destinations.{queue}.region: " in bad_region
    assert "expected a region like eu-west-1, got 'Ireland'" in bad_region
    webhook_key = error_of(tmp_path, head + tail + "    signing_secret_env: S\n")
    assert f":7: destinations.{queue}.signing_secret_env: only webhooks" in webhook_key


def test_a_missing_transport_library_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aio_pika", None)
    message = error_of(tmp_path, f"functions:\n  f:\n    handler: m:f\n    on_failure: '{AMQP}'\n")
    assert message.endswith(
        "functions.f.on_failure: amqp destinations need aio_pika: pip install 'eventwire[rabbitmq]'"
    )
    monkeypatch.setitem(sys.modules, "aiobotocore", None)
    message = error_of(tmp_path, "functions:\n  f:\n    handler: m:f\n    dead_letter: sqs://q\n")
    assert message.endswith(
        "functions.f.dead_letter: sqs destinations need aiobotocore: pip install 'eventwire[aws]'"
    )


def test_transport_libraries_are_not_imported_to_load_a_config() -> None:
    code = (
        "import sys\n"
        "from broker.loading import parse_config\n"
        f"parse_config({{'functions': {{'f': {{'handler': 'm:f', 'on_failure': '{AMQP}',"
        " 'on_success': 'kafka://k:9092/t', 'dead_letter': 'redis://r/0?stream=s'},"
        " 'g': {'handler': 'm:g', 'on_success': 'sqs://q', 'on_failure':"
        " 'arn:aws:sns:eu-west-1:123456789012:t'}}})\n"
        "loaded = {'aio_pika', 'aiokafka', 'redis', 'aiohttp', 'aiobotocore', 'botocore'}"
        " & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_each_destination_gets_a_delivery_function_with_its_own_retry_policy() -> None:
    config = parse_config(
        {
            "functions": {
                "f": {"handler": "m:f", "on_success": "https://h/a", "on_failure": AMQP},
                "g": {"handler": "m:g", "dead_letter": AMQP},
            },
            "destinations": {"https://h/a": {"timeout": "2s", "retry": {"max_attempts": 4}}},
        }
    )
    served = served_functions(config)
    webhook, amqp = served[delivery_function("https://h/a")], served[delivery_function(AMQP)]
    assert set(served) == {"f", "g", delivery_function("https://h/a"), delivery_function(AMQP)}
    assert (webhook.invoker, webhook.timeout_s, webhook.retry.max_attempts) == ("deliver", 2, 4)
    assert webhook.retry.backoff.initial_s == 1.0  # the destination default, not Lambda's 1 min
    assert (amqp.timeout_s, amqp.retry.max_attempts, amqp.retry.max_event_age_s) == (
        10,
        30,
        6 * 3600,
    )
    assert amqp.description == (
        "delivers to amqp://guest:***@localhost:5672/%2F?exchange=failures&routing_key=ingest"
    )
    assert list(config.functions) == ["f", "g"]


def test_the_envelope_keeps_the_message_and_its_headers() -> None:
    record = b'{"requestContext":{"requestId":"r1"},"x":[1,2.5,"\\u00e9"]}'
    assert unwrap(wrap(record), "id1") == Message(record, {}, "id1")
    headers = {"RequestID": "r1", "ErrorCode": "200", "ErrorMessage": "boom"}
    assert unwrap(wrap(b"\xff\x00raw", headers)) == Message(b"\xff\x00raw", headers)
    with pytest.raises(ValueError, match="must be"):
        unwrap(b'{"n": 1}')
    # A FIFO target's messages carry their group (the function) through a redrive too.
    assert unwrap(wrap(record, group="ingest"), "id2") == Message(record, {}, "id2", "ingest")


def test_error_messages_are_cut_to_one_kilobyte_between_characters() -> None:
    assert first_kilobyte("short") == "short"
    cut = first_kilobyte("é" * 600)  # 2 bytes each
    assert cut == "é" * 512 and len(cut.encode()) == 1024
    assert len(first_kilobyte("a" + "é" * 600).encode()) == 1023


def test_header_values_are_printable_ascii() -> None:
    assert header_value("plain text: ok") == "plain text: ok"
    assert header_value("line\nbreak é 100%") == "line%0Abreak %C3%A9 100%25"


def test_passwords_are_redacted() -> None:
    assert (
        redacted(AMQP) == "amqp://guest:***@localhost:5672/%2F?exchange=failures&routing_key=ingest"
    )
    assert redacted("https://h/x") == "https://h/x"


def test_signatures_expire_and_bind_the_body() -> None:
    header = sign(b"k", b"{}", 1_700_000_000)
    assert verify_signature(b"k", b"{}", header, now=1_700_000_100)
    assert not verify_signature(b"k", b"{}", header, now=1_700_001_000)
    assert not verify_signature(b"k", b"{ }", header, now=1_700_000_100)
    assert not verify_signature(b"k", b"{}", "v1=abc", now=1_700_000_100)


def test_sqs_and_sns_attributes_are_typed_as_lambda_sets_them_and_never_empty() -> None:
    headers = {"RequestID": "r1", "ErrorCode": "200", "ErrorMessage": ""}
    assert message_attributes(headers) == {
        "RequestID": {"DataType": "String", "StringValue": "r1"},
        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
    }  # an empty value is refused by both APIs: left out
    assert fifo_ids(Message(b"{}", {}, "0192-delivery", "ingest")) == {
        "MessageGroupId": "ingest",
        "MessageDeduplicationId": "0192-delivery",
    }
    fifo = parse_destination("sqs://orders.fifo")
    assert isinstance(fifo, ExternalDestination) and fifo.grouped
    assert not cast(ExternalDestination, parse_destination("sqs://orders")).grouped
