"""Destinations on real transports: RabbitMQ, Kafka, Redis streams, SQS and SNS (moto's
server) and a local webhook.

Each kind receives exactly Lambda's invocation record for a success, for
retries exhausted and for an event too old to retry (decided by look-ahead),
and a function's ``dead_letter`` target receives the original event with
``RequestID``, ``ErrorCode`` and ``ErrorMessage``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config.models import Limits
from broker.destinations import parse_destination
from broker.destinations.external import (
    DeliveryFailed,
    ExternalDestination,
    Message,
    delivery_function,
)
from broker.destinations.kafka import KafkaSender
from broker.destinations.webhook import SIGNATURE_HEADER, verify_signature
from broker.functions.invoking import submit
from broker.models import Condition, State
from broker.service import Service
from broker.store.deliveries import list_destinations
from broker.store.engine import create_engine
from broker.store.history import list_dead_letters, list_functions, redrive
from broker.store.schema import invocations
from tests import pipeline_handlers as handlers
from tests.support.kafka import create_topic, kafka_bootstrap, unique_topic  # noqa: F401
from tests.support.moto import moto_server  # noqa: F401
from tests.support.rabbitmq import RABBITMQ_URL
from tests.support.receivers import (
    Receiver,
    amqp_receiver,
    declare_exchange,
    kafka_receiver,
    redis_receiver,
    sns_receiver,
    sqs_receiver,
    webhook_receiver,
)
from tests.support.service import running_service
from tests.support.services import REDIS_URL, require
from tests.support.stores import QUEUES, store_for
from tests.support.waiting import eventually

CHANNELS = ("success", "failure", "dead")
FAST_RETRY = {"max_attempts": 2, "backoff": {"initial": "20ms", "jitter": 0}}
LOOK_AHEAD = {"max_attempts": 3, "max_event_age": "60s", "backoff": {"initial": "60s", "jitter": 0}}


@asynccontextmanager
async def own_engine(url: str) -> AsyncIterator[AsyncEngine]:
    value = create_engine(url)
    try:
        yield value
    finally:
        await value.dispose()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    handlers.reset()
    async with own_engine(f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}") as value:
        yield value


@pytest.fixture(params=["amqp", "kafka", "redis", "webhook", "sqs", "sns"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "kafka":  # started here, outside the test's event loop
        request.getfixturevalue("kafka_bootstrap")
    if request.param in ("sqs", "sns"):
        request.getfixturevalue("moto_server")
    return str(request.param)


def receiver_for(kind: str, request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Any]:
    if kind == "amqp":
        require(RABBITMQ_URL, 5672, "RabbitMQ")
        return amqp_receiver(RABBITMQ_URL, CHANNELS)
    if kind == "kafka":
        return kafka_receiver(request.getfixturevalue("kafka_bootstrap"), CHANNELS)
    if kind == "redis":
        return redis_receiver(REDIS_URL)
    if kind == "sqs":  # the success queue by URL, failures by ARN, dead letters by name
        return sqs_receiver(request.getfixturevalue("moto_server"), CHANNELS)
    if kind == "sns":
        return sns_receiver(request.getfixturevalue("moto_server"), CHANNELS)
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
    names = [row.name for row in await list_functions(engine)]
    assert names == sorted(["ok", "ok2", delivery_function(receiver.uri("a"))])


# ---------------------------------------------------------------- a destination that is down

HOOK_RETRY = {"max_attempts": 1000, "backoff": {"initial": "20ms", "max": "100ms", "jitter": 0}}


def hooked(uri: str, **settings: Any) -> dict[str, Any]:
    return {"destinations": {uri: {"retry": HOOK_RETRY, **settings}}}


@pytest.mark.parametrize("backend", QUEUES)
async def test_a_webhook_answering_503_gets_every_record_once_it_is_back(
    backend: str, tmp_path: Path
) -> None:
    async with (
        store_for(backend, tmp_path) as store,
        webhook_receiver() as receiver,
        own_engine(store.database_url) as engine,
    ):
        receiver.answer = lambda _c, n: (503, {"Retry-After": "0"}) if n <= 4 else (200, {})
        uri = receiver.uri("audit")
        functions = {"ok": {"handler": "tests.pipeline_handlers:echo", "on_success": uri}}
        async with running_service(store, functions, config=hooked(uri)) as service:
            ids = [await invoke_async(service, engine, "ok", {"n": n}) for n in range(5)]
            got = await settled_and_received(engine, receiver, {"audit": 5})

            async def figures() -> tuple[str, int, int, int] | None:
                [row] = await list_destinations(engine)  # the history may lag a Redis queue
                found = (row.destination, row.delivered, row.given_up)
                return (*found, row.destination_delivery_failures) if row.delivered == 5 else None

            assert await eventually(figures, 10, "the history") == (uri, 5, 0, 4)
    requests = sorted(body["requestContext"]["requestId"] for body, _ in got["audit"])
    assert requests == sorted(ids)


async def test_a_webhook_started_later_gets_every_record(engine: AsyncEngine) -> None:
    async with webhook_receiver(start=False) as receiver:
        uri = receiver.uri("late")
        functions = {"ok": {"handler": "tests.pipeline_handlers:echo", "on_success": uri}}
        async with running_service(str(engine.url), functions, config=hooked(uri)) as service:
            ids = [await invoke_async(service, engine, "ok", {"n": n}) for n in range(3)]

            async def failing() -> bool:
                [row] = await list_destinations(engine)
                return row.destination_delivery_failures >= 3

            await eventually(failing, 10, "deliveries failing while the webhook is down")
            await receiver.start()
            got = await settled_and_received(engine, receiver, {"late": 3})
    assert sorted(body["requestContext"]["requestId"] for body, _ in got["late"]) == sorted(ids)


async def test_an_amqp_exchange_declared_later_gets_every_record(engine: AsyncEngine) -> None:
    require(RABBITMQ_URL, 5672, "RabbitMQ")
    async with amqp_receiver(RABBITMQ_URL, CHANNELS, declare=False) as receiver:
        uri = receiver.uri("success")
        functions = {"ok": {"handler": "tests.pipeline_handlers:echo", "on_success": uri}}
        async with running_service(str(engine.url), functions, config=hooked(uri)) as service:
            invocation_id = await invoke_async(service, engine, "ok", {"n": 1})

            async def failing() -> bool:
                [row] = await list_destinations(engine)
                return row.destination_delivery_failures >= 2

            await eventually(failing, 10, "deliveries failing while the exchange is missing")
            await declare_exchange(receiver, ("success",))
            got = await settled_and_received(engine, receiver, {"success": 1})
    [(record, _)] = got["success"]
    assert record["requestContext"]["requestId"] == invocation_id


async def test_after_its_own_limit_a_delivery_lands_in_the_dlq_with_the_reason(
    engine: AsyncEngine,
) -> None:
    async with webhook_receiver() as receiver:
        receiver.answer = lambda _c, _n: (500, {})
        uri = receiver.uri("broken")
        retry = {"max_attempts": 2, "backoff": {"initial": "20ms", "jitter": 0}}
        config = {"destinations": {uri: {"retry": retry}}}
        functions = {"ok": {"handler": "tests.pipeline_handlers:echo", "on_success": uri}}
        async with running_service(str(engine.url), functions, config=config) as service:
            invocation_id = await invoke_async(service, engine, "ok", {"n": 1})
            letters = await eventually(
                lambda: list_dead_letters(engine), 10, "the delivery in the DLQ"
            )
            [letter] = letters
            assert letter.function == delivery_function(uri)
            assert letter.condition is Condition.RETRIES_EXHAUSTED
            assert letter.attempts == 2
            assert letter.error_type == "Destination.Http500"
            assert letter.error_message == f"delivery to {uri} failed: HTTP 500: no"
            assert json.loads(letter.payload)["body"]["requestContext"]["requestId"] == (
                invocation_id
            )
            # Once the webhook works again, a redrive delivers the record.
            receiver.answer = lambda _c, _n: (200, {})
            assert service.dispatcher is not None
            await redrive(engine, service.dispatcher.queue, [letter.id], datetime.now(UTC))
            got = await settled_and_received(engine, receiver, {"broken": 1})
        [row] = await list_destinations(engine)
    [(record, _)] = got["broken"]
    assert record["requestContext"]["requestId"] == invocation_id
    assert (row.given_up, row.delivered, row.destination_delivery_failures) == (1, 1, 2)


async def test_webhook_requests_are_signed_when_a_secret_is_configured(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_HOOK_SECRET", "s3cret")
    async with webhook_receiver() as receiver:
        uri = receiver.uri("signed")
        config = {"destinations": {uri: {"signing_secret_env": "AUDIT_HOOK_SECRET"}}}
        functions = {"ok": {"handler": "tests.pipeline_handlers:echo", "on_success": uri}}
        async with running_service(str(engine.url), functions, config=config) as service:
            await invoke_async(service, engine, "ok", {"n": 1})
            await settled_and_received(engine, receiver, {"signed": 1})
    [(body, headers)] = receiver.requests["signed"]
    signature = headers[SIGNATURE_HEADER]
    assert verify_signature(b"s3cret", body, signature)
    assert not verify_signature(b"other", body, signature)
    assert not verify_signature(b"s3cret", body + b" ", signature)
    assert headers["X-Eventwire-Delivery-Id"]


async def test_a_broker_without_producer_ids_is_named_for_what_it_lacks(
    kafka_bootstrap: str,  # noqa: F811
) -> None:
    """Kafka destinations are idempotent producers by default; the test broker (Tansu) gives
    no producer ids, and the failure says so, with the way out."""
    topic = unique_topic("idempotent")
    await create_topic(kafka_bootstrap, topic)
    sender = KafkaSender(kafka(f"kafka://{kafka_bootstrap}/{topic}"), 5)
    try:
        with pytest.raises(DeliveryFailed) as failed:
            await sender.send(Message(b"{}"))
    finally:
        await sender.close()
    assert failed.value.error_type == "Destination.KafkaError"
    assert "?idempotent=false" in str(failed.value)
    plain = KafkaSender(kafka(f"kafka://{kafka_bootstrap}/{topic}?idempotent=false"), 5)
    try:
        assert (await plain.send(Message(b"{}"))).startswith(f"{topic}/0@")
    finally:
        await plain.close()


def kafka(uri: str) -> ExternalDestination:
    target = parse_destination(uri)
    assert isinstance(target, ExternalDestination)
    return target
