"""SQS queues and SNS topics as destinations and dead-letter targets, on moto's server.

A queue receives exactly the invocation record Lambda sends, a topic's subscribers the
same; a dead-letter target the event itself with ``RequestID``, ``ErrorCode`` (a
``Number``) and ``ErrorMessage``; a mapping's on-failure queue Lambda's batch record. A
queue that does not exist (yet) fails each delivery with its name, counted, and the record
arrives once it is created; a server that is down likewise.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config.models import DestinationConfig
from broker.destinations import parse_destination
from broker.destinations.external import (
    DeliveryFailed,
    ExternalDestination,
    Message,
    delivery_function,
)
from broker.destinations.sqs_sns import AwsSender
from broker.store.deliveries import list_destinations
from broker.store.engine import create_engine
from broker.store.history import AttemptRow, get_invocation, list_dead_letters, list_invocations
from tests import mapping_handlers
from tests import pipeline_handlers as handlers
from tests.integration.test_destinations import invoke_async, settled_and_received
from tests.support.mappings import mapping_service
from tests.support.metrics import figure
from tests.support.moto import REGION, MotoServer, make_queue, moto_server  # noqa: F401
from tests.support.receivers import SqsReceiver, receive_all, sns_receiver, sqs_receiver
from tests.support.redis_streams import RedisStream, redis_stream  # noqa: F401
from tests.support.service import running_service
from tests.support.services import free_port
from tests.support.stores import Store
from tests.support.waiting import eventually

FAST_RETRY = {"max_attempts": 2, "backoff": {"initial": "20ms", "jitter": 0}}
QUICK_DELIVERY = {"retry": {"max_attempts": 1000, "backoff": {"initial": "20ms", "max": "50ms"}}}
ARN_PREFIX = "arn:aws:lambda:local:000000000000:function"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    handlers.reset()
    value = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}")
    try:
        yield value
    finally:
        await value.dispose()


async def failed_attempts(engine: AsyncEngine, uri: str) -> list[AttemptRow]:
    """The failed attempts of the deliveries to ``uri``, first first."""
    found = []
    for row in await list_invocations(engine, function=delivery_function(uri)):
        _, attempts = await get_invocation(engine, row.id)
        found += [attempt for attempt in attempts if attempt.error_type]
    return sorted(found, key=lambda attempt: attempt.started_at)


def without_timestamp(record: dict[str, Any]) -> dict[str, Any]:
    assert record["timestamp"].endswith("Z")
    return {k: v for k, v in record.items() if k != "timestamp"}


async def test_a_queue_and_a_topic_get_exactly_lambdas_records(
    moto_server: MotoServer,  # noqa: F811
    engine: AsyncEngine,
) -> None:
    async with (
        sqs_receiver(moto_server, ("success",)) as queue,
        sns_receiver(moto_server, ("failure",)) as topic,
    ):
        functions = {
            "ok": {"handler": "tests.pipeline_handlers:echo", "on_success": queue.uri("success")},
            "flaky": {
                "handler": "tests.pipeline_handlers:fail",
                "retry": FAST_RETRY,
                "on_failure": topic.uri("failure"),
            },
        }
        async with running_service(str(engine.url), functions) as service:
            ok = await invoke_async(service, engine, "ok", {"n": 1})
            flaky = await invoke_async(service, engine, "flaky", {"n": 2})
            [(success, _)] = (await settled_and_received(engine, queue, {"success": 1}))["success"]
            [(failure, headers)] = (await settled_and_received(engine, topic, {"failure": 1}))[
                "failure"
            ]
    assert without_timestamp(success) == {
        "version": "1.0",
        "requestContext": {
            "requestId": ok,
            "functionArn": f"{ARN_PREFIX}:ok:$LATEST",
            "condition": "Success",
            "approximateInvokeCount": 1,
        },
        "requestPayload": {"n": 1},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": {"n": 1},
    }
    trace = failure["responsePayload"].pop("stackTrace")
    assert trace and all(isinstance(line, str) for line in trace)
    assert without_timestamp(failure) == {
        "version": "1.0",
        "requestContext": {
            "requestId": flaky,
            "functionArn": f"{ARN_PREFIX}:flaky:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 2,
        },
        "requestPayload": {"n": 2},
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": {"errorMessage": "boom", "errorType": "ValueError", "requestId": flaky},
    }
    assert headers == {}  # a record carries no attributes, as Lambda's


async def test_dead_letters_carry_the_event_and_lambdas_attributes(
    moto_server: MotoServer,  # noqa: F811
    engine: AsyncEngine,
) -> None:
    long_error = "é" * 2000  # 4000 bytes in UTF-8: cut to the first 1 KB, between characters
    async with (
        sqs_receiver(moto_server, ("dead",)) as queue,
        sns_receiver(moto_server, ("dead",)) as topic,
    ):
        functions = {
            name: {
                "handler": "tests.pipeline_handlers:fail_with",
                "retry": {"max_attempts": 1},
                "dead_letter": target.uri("dead"),  # the queue by its bare name
            }
            for name, target in (("to_queue", queue), ("to_topic", topic))
        }
        async with running_service(str(engine.url), functions) as service:
            queued = await invoke_async(service, engine, "to_queue", {"error": long_error})
            published = await invoke_async(service, engine, "to_topic", {"error": "boom"})
            await settled_and_received(engine, queue, {"dead": 1})
            [(event, attributes)] = (await settled_and_received(engine, topic, {"dead": 1}))["dead"]
            letters = await list_dead_letters(engine)
    [message] = queue.raw["dead"]
    assert json.loads(message["Body"]) == {"error": long_error}
    assert message["MessageAttributes"] == {
        "RequestID": {"DataType": "String", "StringValue": queued},
        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
        "ErrorMessage": {"DataType": "String", "StringValue": "é" * 512},
    }
    assert event == {"error": "boom"}
    assert attributes == {"RequestID": published, "ErrorCode": "200", "ErrorMessage": "boom"}
    [topic_message] = topic.queues.raw["dead"]
    assert topic_message["MessageAttributes"]["ErrorCode"]["DataType"] == "Number"
    # Both are in Eventwire's own DLQ as well, with the whole error.
    assert sorted(letter.request_id for letter in letters) == sorted([queued, published])
    assert {letter.error_message for letter in letters} == {long_error, "boom"}


async def test_a_mappings_batch_given_up_on_sends_lambdas_record_to_a_queue(
    moto_server: MotoServer,  # noqa: F811
    redis_stream: RedisStream,  # noqa: F811
    tmp_path: Path,
) -> None:
    from redis.asyncio import Redis

    name = f"f{uuid.uuid4().hex[:10]}"

    def refuse(event: Any) -> None:
        raise RuntimeError("cannot take this batch")

    mapping_handlers.RULES[name] = refuse
    client = Redis.from_url(redis_stream.url)
    try:
        for n in range(3):
            await client.xadd(redis_stream.key, {"n": str(n)})
    finally:
        await client.aclose()
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}")
    async with sqs_receiver(moto_server, ("failure",)) as queue:
        config = {
            "functions": {name: {"handler": "tests.mapping_handlers:record"}},
            "mappings": [
                {
                    "name": name,
                    "source": redis_stream.source_uri(),
                    "function": name,
                    "starting_position": "trim_horizon",
                    "max_retry_attempts": 1,
                    "on_failure": queue.uri("failure"),
                }
            ],
        }
        async with mapping_service(store, config):
            [(record, attributes)] = await eventually(
                lambda: queue.received("failure"), 30, "the failure record"
            )
    [event, *_] = mapping_handlers.CALLS[name]
    assert len(mapping_handlers.CALLS[name]) == 2  # the batch and its one retry
    info = record.pop("KinesisBatchInfo")
    assert info["batchSize"] == 3
    assert info["startSequenceNumber"] == event["Records"][0]["kinesis"]["sequenceNumber"]
    assert info["endSequenceNumber"] == event["Records"][2]["kinesis"]["sequenceNumber"]
    assert record["requestContext"].pop("requestId")
    assert without_timestamp(record) == {
        "version": "1.0",
        "requestContext": {
            "functionArn": f"{ARN_PREFIX}:{name}",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 2,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
    }
    assert attributes == {}


async def test_a_missing_queue_fails_each_delivery_by_name_until_it_exists(
    moto_server: MotoServer,  # noqa: F811
    engine: AsyncEngine,
) -> None:
    name = f"eventwire-test-later-{uuid.uuid4().hex[:8]}"
    uri = f"sqs://{name}"
    functions = {"ok": {"handler": "tests.pipeline_handlers:echo", "on_success": uri}}
    config = {"destinations": {uri: QUICK_DELIVERY}}
    async with running_service(str(engine.url), functions, config=config) as service:
        invocation_id = await invoke_async(service, engine, "ok", {"n": 1})

        async def failing() -> bool:
            [row] = await list_destinations(engine)
            return row.destination_delivery_failures >= 2

        await eventually(failing, 20, "deliveries failing while the queue is missing")
        counted = "eventwire_destination_delivery_failures_total"
        assert figure(service.metrics, counted, destination=uri) >= 2
        [attempt, *_] = await failed_attempts(engine, uri)
        assert attempt.error_type == "Destination.NotFound"
        assert attempt.error_message == (
            f"delivery to {uri} failed: SQS queue {name!r} does not exist "
            f"(at {moto_server.endpoint})"
        )
        created = await make_queue(moto_server, name)
        got = await eventually(lambda: receive_all(moto_server, created.url), 20, "the record")
    [message] = got
    assert json.loads(message["Body"])["requestContext"]["requestId"] == invocation_id


async def test_a_server_that_is_down_fails_deliveries_and_endpoint_url_overrides_the_chain(
    moto_server: MotoServer,  # noqa: F811
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the destination's own settings say where
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    async with sqs_receiver(moto_server, ("success",)) as queue:
        down, up = f"sqs://{queue.queues['success'].name}", queue.queues["success"].arn
        functions = {
            "ok": {"handler": "tests.pipeline_handlers:echo", "on_success": up},
            "lost": {"handler": "tests.pipeline_handlers:echo", "on_success": down},
        }
        dead_port = free_port()
        config = {
            "destinations": {
                up: {"endpoint_url": moto_server.endpoint},  # the region is the ARN's
                down: {
                    "endpoint_url": f"http://127.0.0.1:{dead_port}",
                    "region": REGION,
                    "timeout": "2s",
                    **QUICK_DELIVERY,
                },
            }
        }
        async with running_service(str(engine.url), functions, config=config) as service:
            delivered = await invoke_async(service, engine, "ok", {"n": 1})
            await invoke_async(service, engine, "lost", {"n": 2})

            [attempt, *_] = await eventually(
                lambda: failed_attempts(engine, down), 30, "a failed delivery"
            )
            [(record, _)] = await eventually(
                lambda: queue.received("success"), 20, "the record sent to moto"
            )
    assert attempt.error_type == "Destination.ConnectionError"
    assert f"127.0.0.1:{dead_port}" in (attempt.error_message or "")
    assert record["requestContext"]["requestId"] == delivered


@pytest.mark.parametrize("kind", ["sqs", "sns"])
async def test_fifo_targets_get_the_function_as_group_and_the_delivery_as_dedup_id(
    kind: str,
    moto_server: MotoServer,  # noqa: F811
    engine: AsyncEngine,
) -> None:
    receiving = sqs_receiver if kind == "sqs" else sns_receiver
    async with receiving(moto_server, ("success",), fifo=True) as target:
        uri = target.uri("success")
        functions = {"ordered": {"handler": "tests.pipeline_handlers:echo", "on_success": uri}}
        async with running_service(str(engine.url), functions) as service:
            ids = [await invoke_async(service, engine, "ordered", {"n": n}) for n in range(3)]
            got = await settled_and_received(engine, target, {"success": 3})
    assert sorted(body["requestContext"]["requestId"] for body, _ in got["success"]) == sorted(ids)
    queue = target if isinstance(target, SqsReceiver) else target.queues
    messages = queue.raw["success"]
    assert {message["Attributes"]["MessageGroupId"] for message in messages} == {"ordered"}
    assert len({message["Attributes"]["MessageDeduplicationId"] for message in messages}) == 3


async def test_no_credentials_is_a_failed_delivery_saying_where_they_are_looked_for(
    moto_server: MotoServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = await make_queue(moto_server)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    destination = parse_destination(queue.arn)
    assert isinstance(destination, ExternalDestination)
    sender = AwsSender(destination, DestinationConfig())
    try:
        with pytest.raises(DeliveryFailed) as failed:
            await sender.send(Message(b"{}", id="d1"))
    finally:
        await sender.close()
    assert failed.value.error_type == "Destination.NoCredentials"
    assert str(failed.value).startswith(f"queue {queue.name}: Unable to locate credentials")
    monkeypatch.undo()  # the test's own credentials back
    assert await receive_all(moto_server, queue.url) == []


async def test_a_dead_letter_to_a_missing_topic_counts_as_a_dead_letter_error(
    moto_server: MotoServer,  # noqa: F811
    engine: AsyncEngine,
) -> None:
    arn = f"arn:aws:sns:{REGION}:123456789012:eventwire-test-none-{uuid.uuid4().hex[:8]}"
    functions = {
        "charge": {
            "handler": "tests.pipeline_handlers:fail",
            "retry": {"max_attempts": 1},
            "dead_letter": arn,
        }
    }
    config = {"destinations": {arn: QUICK_DELIVERY}}
    async with running_service(str(engine.url), functions, config=config) as service:
        await invoke_async(service, engine, "charge", {"n": 1})
        [attempt, *_] = await eventually(
            lambda: failed_attempts(engine, arn), 20, "a failed dead-letter delivery"
        )

        def counted() -> bool:
            dead_letter_errors = "eventwire_dead_letter_errors_total"
            return figure(service.metrics, dead_letter_errors, function="charge") >= 1

        await eventually(counted, 10, "the dead-letter error counted")
        # Lambda's DeadLetterErrors, not DestinationDeliveryFailures (that is for records).
        failures = "eventwire_destination_delivery_failures_total"
        assert figure(service.metrics, failures, destination=arn) == 0
    assert attempt.error_type == "Destination.NotFound"
    assert attempt.error_message == (
        f"delivery to {arn} failed: SNS topic {arn} does not exist (at {moto_server.endpoint})"
    )
