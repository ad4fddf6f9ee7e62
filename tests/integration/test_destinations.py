"""Destinations on real transports: RabbitMQ, Kafka, Redis streams and a local webhook.

Each kind receives exactly Lambda's invocation record for a success, for
retries exhausted and for an event too old to retry (decided by look-ahead),
and a function's ``dead_letter`` target receives the original event with
``RequestID``, ``ErrorCode`` and ``ErrorMessage``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config import Limits
from broker.destinations.external import delivery_function
from broker.invoke import submit
from broker.models import State
from broker.service import Service
from broker.store.engine import create_engine
from broker.store.schema import invocations
from tests import pipeline_handlers as handlers
from tests.support.kafka import kafka_bootstrap  # noqa: F401
from tests.support.rabbitmq import RABBITMQ_URL
from tests.support.receivers import (
    Receiver,
    amqp_receiver,
    kafka_receiver,
    redis_receiver,
    webhook_receiver,
)
from tests.support.service import running_service
from tests.support.services import REDIS_URL, require
from tests.support.waiting import eventually

CHANNELS = ("success", "failure", "dead")
FAST_RETRY = {"max_attempts": 2, "backoff": {"initial": "20ms", "jitter": 0}}
LOOK_AHEAD = {"max_attempts": 3, "max_event_age": "60s", "backoff": {"initial": "60s", "jitter": 0}}


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    handlers.reset()
    value = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}")
    yield value
    await value.dispose()


@pytest.fixture(params=["amqp", "kafka", "redis", "webhook"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "kafka":  # started here, outside the test's event loop
        request.getfixturevalue("kafka_bootstrap")
    return str(request.param)


def receiver_for(kind: str, request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Any]:
    if kind == "amqp":
        require(RABBITMQ_URL, 5672, "RabbitMQ")
        return amqp_receiver(RABBITMQ_URL, CHANNELS)
    if kind == "kafka":
        return kafka_receiver(request.getfixturevalue("kafka_bootstrap"), CHANNELS)
    if kind == "redis":
        return redis_receiver(REDIS_URL)
    return webhook_receiver()


async def invoke_async(service: Service, engine: AsyncEngine, function: str, payload: Any) -> str:
    assert service.dispatcher is not None
    return await submit(
        engine,
        service.dispatcher.queue,
        function,
        json.dumps(payload).encode(),
        sync=False,
        limits=Limits(),
    )


async def unfinished_deliveries(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(invocations.c.state).where(invocations.c.function.startswith("destination:"))
        )
        return sum(1 for (state,) in rows if not State(state).terminal)


async def settled_and_received(
    engine: AsyncEngine, receiver: Receiver, expected: dict[str, int]
) -> dict[str, list[Any]]:
    """Wait until every channel has its expected count and no delivery is unfinished."""

    async def check() -> dict[str, list[Any]] | None:
        got = {channel: await receiver.received(channel) for channel in expected}
        if any(len(got[c]) < n for c, n in expected.items()):
            return None
        return None if await unfinished_deliveries(engine) else got

    found: dict[str, list[Any]] = await eventually(check, 20, "every record delivered")
    return found


async def test_each_kind_receives_exactly_the_records(
    kind: str, engine: AsyncEngine, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with receiver_for(kind, request) as receiver:
        functions = {
            "ok": {
                "handler": "tests.pipeline_handlers:echo",
                "on_success": receiver.uri("success"),
            },
            "flaky": {
                "handler": "tests.pipeline_handlers:fail",
                "retry": FAST_RETRY,
                "on_failure": receiver.uri("failure"),
                "dead_letter": receiver.uri("dead"),
            },
            "late": {
                "handler": "tests.pipeline_handlers:fail",
                "retry": LOOK_AHEAD,
                "on_failure": receiver.uri("failure"),
            },
        }
        async with running_service(str(engine.url), functions) as service:
            ok = await invoke_async(service, engine, "ok", {"n": 1})
            flaky = await invoke_async(service, engine, "flaky", {"n": 2})
            late = await invoke_async(service, engine, "late", {"n": 3})
            got = await settled_and_received(
                engine, receiver, {"success": 1, "failure": 2, "dead": 1}
            )
            # Nothing more arrives once every delivery has finished.
            assert {c: len(await receiver.received(c)) for c in CHANNELS} == {
                "success": 1,
                "failure": 2,
                "dead": 1,
            }

    [(success, _)] = got["success"]
    assert success["requestContext"] == {
        "requestId": ok,
        "functionArn": "arn:aws:lambda:local:000000000000:function:ok:$LATEST",
        "condition": "Success",
        "approximateInvokeCount": 1,
    }
    assert success["requestPayload"] == {"n": 1}
    assert success["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert success["responsePayload"] == {"n": 1}

    failures = {body["requestContext"]["requestId"]: body for body, _ in got["failure"]}
    exhausted, aged = failures[flaky], failures[late]
    assert exhausted["requestContext"]["condition"] == "RetriesExhausted"
    assert exhausted["requestContext"]["approximateInvokeCount"] == 2
    assert exhausted["requestPayload"] == {"n": 2}
    assert exhausted["responseContext"]["functionError"] == "Unhandled"
    assert exhausted["responsePayload"]["errorType"] == "ValueError"
    assert exhausted["responsePayload"]["errorMessage"] == "boom"
    # 60 s maximum age, 60 s first retry: the record is sent after the first attempt.
    assert aged["requestContext"]["condition"] == "EventAgeExceeded"
    assert aged["requestContext"]["approximateInvokeCount"] == 1
    assert aged["requestPayload"] == {"n": 3}

    [(event, headers)] = got["dead"]
    assert event == {"n": 2}
    assert headers["RequestID"] == flaky
    assert headers["ErrorCode"] == "200"
    assert headers["ErrorMessage"] == "boom"


async def test_delivery_functions_are_registered_per_destination(engine: AsyncEngine) -> None:
    async with webhook_receiver() as receiver:
        functions = {
            "ok": {"handler": "tests.pipeline_handlers:echo", "on_success": receiver.uri("a")},
            "ok2": {"handler": "tests.pipeline_handlers:echo", "on_success": receiver.uri("a")},
        }
        async with running_service(str(engine.url), functions):
            pass
    from broker.store.history import list_functions

    names = [row.name for row in await list_functions(engine)]
    assert names == sorted(["ok", "ok2", delivery_function(receiver.uri("a"))])
