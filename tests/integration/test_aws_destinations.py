"""SQS queues and SNS topics as destinations and dead-letter targets, on moto's server.

A queue receives exactly the invocation record Lambda sends, a topic's subscribers the
same; a dead-letter target the event itself with ``RequestID``, ``ErrorCode`` (a
``Number``) and ``ErrorMessage``; a mapping's on-failure queue Lambda's batch record. A
queue that does not exist (yet) fails each delivery with its name, counted, and the record
arrives once it is created; a server that is down likewise.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.store.engine import create_engine
from broker.store.history import list_dead_letters
from tests import pipeline_handlers as handlers
from tests.integration.test_destinations import invoke_async, settled_and_received
from tests.support.moto import REGION, MotoServer, make_queue, moto_server  # noqa: F401
from tests.support.receivers import sns_receiver, sqs_receiver
from tests.support.redis_streams import RedisStream, redis_stream  # noqa: F401
from tests.support.service import running_service

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
